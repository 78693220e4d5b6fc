# -*- coding: utf-8 -*-
"""RDMA (RoCE) discovery from sysfs, and the check of the inventory against it.

Reads a sysfs tree whose root is a parameter (``/sys`` on a host, a fake tree
in the unit tests):

* ``class/infiniband/<hca>/ports/<n>/state`` -- e.g. ``4: ACTIVE``;
* ``class/infiniband/<hca>/device/net/<netdev>`` -- the Ethernet interface the
  HCA sits on (RoCE);
* ``class/infiniband/<hca>/ports/1/gid_attrs/types/<i>`` (``RoCE v2`` or
  ``IB/RoCE v1``) and ``ports/1/gids/<i>`` -- the GID table. NCCL needs the
  index of the RoCE v2 GID that carries the interface's IPv4 address (an
  IPv4-mapped IPv6 GID ``0000:0000:0000:0000:0000:ffff:xxxx:xxxx``);
  3 is the usual value on a ConnectX-7 with one IPv4 address and is the
  fallback when the table says nothing;
* ``class/net/<iface>/{mtu,operstate}`` -- the interface itself.

Hosts without ``class/infiniband`` (the lab's containers) still must have the
interface. Every mismatch raises FabricMismatch naming the host, what the
inventory expects and what the host has. Pure Python, no Ansible imports.
"""

from __future__ import annotations

import ipaddress
import os

DEFAULT_GID_INDEX = 3
IPV4_MAPPED_PREFIX = "0000:0000:0000:0000:0000:ffff:"
ROCE_V2 = "roce v2"


class FabricMismatch(ValueError):
    """The host's fabric hardware is not what the inventory says."""


def _read(path):
    """Stripped content of a sysfs attribute, None when absent or unreadable.

    Reading an unused GID type entry fails with EINVAL on real hosts; that is
    "no value", not an error.
    """
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _index_key(name):
    return (0, int(name)) if name.isdigit() else (1, name)


def port_state(text):
    """``4: ACTIVE`` -> ``ACTIVE``; None stays None."""
    if text is None:
        return None
    return text.split(":", 1)[-1].strip().upper()


def gid_ipv4(gid):
    """The IPv4 address of an IPv4-mapped GID, else None."""
    if not gid or not gid.lower().startswith(IPV4_MAPPED_PREFIX):
        return None
    tail = gid.lower()[len(IPV4_MAPPED_PREFIX):].replace(":", "")
    if len(tail) != 8:
        return None
    try:
        return str(ipaddress.IPv4Address(int(tail, 16)))
    except ValueError:
        return None


def roce_v2_ipv4_gids(port_dir):
    """[(index, ipv4)] of the RoCE v2 IPv4-mapped GIDs of one port, by index."""
    found = []
    types_dir = os.path.join(port_dir, "gid_attrs", "types")
    for name in sorted(_listdir(types_dir), key=_index_key):
        kind = _read(os.path.join(types_dir, name))
        if not kind or kind.lower() != ROCE_V2:
            continue
        ipv4 = gid_ipv4(_read(os.path.join(port_dir, "gids", name)))
        if ipv4 and name.isdigit():
            found.append((int(name), ipv4))
    return found


def choose_gid_index(gids, address=None, default=DEFAULT_GID_INDEX):
    """(index, source): the GID carrying ``address``, else the first RoCE v2 IPv4 GID, else ``default``."""
    if address:
        for index, ipv4 in gids:
            if ipv4 == address:
                return index, "sysfs (RoCE v2 GID of %s)" % address
    if gids:
        return gids[0][0], "sysfs (first RoCE v2 IPv4 GID)"
    return default, "default (no RoCE v2 IPv4 GID in sysfs)"


def read_interface(sysfs_root, name):
    """{name, exists, mtu, operstate} of class/net/<name>."""
    base = os.path.join(sysfs_root, "class", "net", name)
    mtu = _read(os.path.join(base, "mtu"))
    carrier = _read(os.path.join(base, "carrier"))
    return {
        "name": name,
        "exists": os.path.isdir(base) or os.path.islink(base),
        "mtu": int(mtu) if mtu and mtu.isdigit() else None,
        "operstate": _read(os.path.join(base, "operstate")),
        "carrier": carrier == "1" if carrier is not None else None,
    }


def list_interfaces(sysfs_root):
    return [n for n in _listdir(os.path.join(sysfs_root, "class", "net")) if n != "lo"]


def scan(sysfs_root="/sys", address=None):
    """Every RDMA device: name, port 1 state, netdevs, RoCE v2 IPv4 GIDs, chosen GID index.

    Returns None when the host has no class/infiniband at all.
    """
    ib_dir = os.path.join(sysfs_root, "class", "infiniband")
    if not os.path.isdir(ib_dir):
        return None
    devices = []
    for hca in _listdir(ib_dir):
        base = os.path.join(ib_dir, hca)
        port_dir = os.path.join(base, "ports", "1")
        gids = roce_v2_ipv4_gids(port_dir)
        index, source = choose_gid_index(gids, address)
        devices.append({
            "name": hca,
            "state": port_state(_read(os.path.join(port_dir, "state"))),
            "link_layer": _read(os.path.join(port_dir, "link_layer")),
            "netdevs": _listdir(os.path.join(base, "device", "net")),
            "roce_v2_ipv4_gids": [{"index": i, "ipv4": ip} for i, ip in gids],
            "gid_index": index,
            "gid_source": source,
        })
    return devices


def _describe(devices):
    if not devices:
        return "no RDMA devices"
    return ", ".join("%s -> %s (%s)" % (d["name"], "+".join(d["netdevs"]) or "no netdev", d["state"] or "no port 1")
                     for d in devices)


def check(host, interface, hca=None, address=None, sysfs_root="/sys", require_rdma=False,
          default_gid_index=DEFAULT_GID_INDEX):
    """Compare the inventory's fabric interface/HCA with the host; return what was found.

    Raises FabricMismatch naming the host, the expected and the found values.
    """
    if not interface:
        raise FabricMismatch("%s: sparkfleet_fabric_interface is not set in the inventory" % host)
    iface = read_interface(sysfs_root, interface)
    devices = scan(sysfs_root, address)
    result = {"interface": iface, "rdma_present": devices is not None, "devices": devices or [],
              "hca": None, "gid_index": default_gid_index,
              "gid_source": "default (no RDMA devices on this host)"}
    if not iface["exists"]:
        raise FabricMismatch(
            "%s: fabric interface mismatch: inventory expects sparkfleet_fabric_interface=%s, "
            "host has interfaces: %s%s" % (
                host, interface, ", ".join(list_interfaces(sysfs_root)) or "none",
                "; RDMA devices: %s" % _describe(devices) if devices is not None else ""))
    if devices is None:
        if hca or require_rdma:
            raise FabricMismatch(
                "%s: fabric HCA mismatch: inventory expects sparkfleet_fabric_hca=%s on %s, "
                "found: no %s/class/infiniband (RDMA driver not loaded or no ConnectX here)"
                % (host, hca or "(any)", interface, sysfs_root.rstrip("/") or ""))
        return result
    by_name = {d["name"]: d for d in devices}
    if hca:
        device = by_name.get(hca)
        if device is None:
            raise FabricMismatch(
                "%s: fabric HCA mismatch: inventory expects sparkfleet_fabric_hca=%s, found: %s"
                % (host, hca, _describe(devices)))
        if interface not in device["netdevs"]:
            raise FabricMismatch(
                "%s: fabric HCA/interface mismatch: inventory expects %s on interface %s, found %s on %s "
                "(all: %s)" % (host, hca, interface, hca, "+".join(device["netdevs"]) or "no netdev",
                               _describe(devices)))
    else:
        matching = [d for d in devices if interface in d["netdevs"]]
        if not matching:
            raise FabricMismatch(
                "%s: fabric interface mismatch: inventory expects an HCA on %s, found: %s"
                % (host, interface, _describe(devices)))
        device = matching[0]
    if device["state"] != "ACTIVE":
        raise FabricMismatch(
            "%s: fabric port not active: inventory expects %s (%s) ACTIVE, found port 1 state %s "
            "(cable, peer powered off, or wrong port?)" % (host, device["name"], interface, device["state"]))
    result.update(hca=device["name"], gid_index=device["gid_index"], gid_source=device["gid_source"])
    return result
