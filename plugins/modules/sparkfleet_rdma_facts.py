#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: discover the RoCE HCA(s), netdev and GID index; stop on an inventory mismatch."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_rdma_facts
short_description: Read the fabric port from sysfs and check it against the inventory
description:
  - Walks C(class/infiniband/*) under I(sysfs_root) for HCAs, their port 1 state,
    their netdev (C(device/net/*)) and the RoCE v2 IPv4 GID index (C(ports/1/gid_attrs/types/*)
    with an IPv4-mapped C(ports/1/gids/*)); falls back to index 3.
  - Finds the Socket Direct twins of the HCA on the interface (a DGX Spark drives each
    ConnectX-7 port from two PCIe functions in two PCI domains, e.g. C(rocep1s0f1) and
    C(roceP2p1s0f1)); twins have the same bus, slot, function and port and another PCI domain. With no HCA or
    one HCA named, I(hcas) is that HCA followed by its ACTIVE twins; a twin that is not
    ACTIVE is left out and reported (I(notes), and a warning). With several named, each
    must exist and be ACTIVE, one must sit on the interface, and they are used as given.
  - Fails naming the host, the expected and the found values when the inventory's
    interface or HCA is not what the host has, or the port is not ACTIVE.
  - On hosts without C(class/infiniband) (containers, the lab) only checks that the
    interface exists, unless an HCA is expected or I(require_rdma) is set.
  - Read-only; supports check mode.
options:
  interface: {type: str, required: true, description: Expected fabric interface (sparkfleet_fabric_interface).}
  hca:
    type: str
    description:
      - Expected RDMA device(s) (sparkfleet_fabric_hca), one name or a comma list;
        found from the interface when omitted.
  address: {type: str, description: The node's fabric IPv4 address; prefers the GID carrying it.}
  sysfs_root: {type: path, default: /sys, description: Root of the sysfs tree to read (tests use fake trees).}
  require_rdma: {type: bool, default: false, description: Fail when the host has no RDMA devices at all.}
  default_gid_index: {type: int, default: 3, description: GID index when sysfs shows no RoCE v2 IPv4 GID.}
  node: {type: str, description: Host name for messages.}
"""

EXAMPLES = r"""
- name: Check the fabric port
  sparkfleet_rdma_facts:
    interface: enp1s0f1np1
    hca: rocep1s0f1,roceP2p1s0f1
    address: 10.0.0.1
    node: "{{ inventory_hostname }}"
  register: spark_fabric_rdma
"""

RETURN = r"""
interface: {description: "name, exists, mtu, operstate, carrier of the fabric interface.", returned: success, type: dict}
hca: {description: "The first of I(hcas), kept for older callers (null without RDMA).", returned: success, type: str}
hcas:
  description:
    - The HCAs NCCL uses (NCCL_IB_HCA), in order; empty without RDMA.
    - The inventory's list when it names several, else the HCA on the interface then its ACTIVE twins.
  returned: success
  type: list
  elements: str
hcas_source: {description: "inventory, inventory + twins, discovered, or none.", returned: success, type: str}
addressed_hca: {description: The HCA whose netdev is the fabric interface (gid_index is read there)., returned: success,
                type: str}
twins: {description: "Socket Direct twins of addressed_hca: name, netdevs, state, used.", returned: success,
        type: list, elements: dict}
notes: {description: "Sentences about twins left out or unused (also sent as warnings).", returned: success,
        type: list, elements: str}
gid_index: {description: RoCE v2 IPv4 GID index, or the default., returned: success, type: int}
gid_source: {description: Where gid_index came from., returned: success, type: str}
rdma_present: {description: Whether class/infiniband exists., returned: success, type: bool}
devices: {description: Every RDMA device with state, netdevs and GIDs., returned: success, type: list}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_rdma import FabricMismatch, check


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", required=True),
            hca=dict(type="str"),
            address=dict(type="str"),
            sysfs_root=dict(type="path", default="/sys"),
            require_rdma=dict(type="bool", default=False),
            default_gid_index=dict(type="int", default=3),
            node=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        found = check(p["node"] or "this host", p["interface"], hca=p["hca"] or None, address=p["address"] or None,
                      sysfs_root=p["sysfs_root"], require_rdma=p["require_rdma"],
                      default_gid_index=p["default_gid_index"])
    except FabricMismatch as exc:
        module.fail_json(msg=str(exc))
    for note in found["notes"]:
        module.warn(note)
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()
