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

Socket Direct twins. A DGX Spark gives a PCIe device at most x4 lanes, so each
ConnectX-7 port is driven by two PCIe functions in two PCI domains, and one
cabled port shows as two RoCE devices and two netdevs, e.g. ``rocep1s0f1 ->
enp1s0f1np1`` and ``roceP2p1s0f1 -> enP2p1s0f1np1``. Each is one ~100 Gb/s path;
NCCL reaches the port's 200 Gb/s only with both in NCCL_IB_HCA, while an IP
address on one netdev is enough. The names follow the kernel's PCI naming,
``roce``/``en`` + optional ``P<domain>`` + ``p<bus>s<slot>f<function>`` (+
``np<port>`` on netdevs): twins are the devices with the same bus, slot,
function and port in another PCI domain. ``check`` returns the effective HCA
list: the inventory's when it names several, else the HCA on the interface
followed by its ACTIVE twins (a twin that is not ACTIVE is reported in
``notes`` and left out).

Hosts without ``class/infiniband`` (the lab's containers) still must have the
interface. Every mismatch raises FabricMismatch naming the host, what the
inventory expects and what the host has. Pure Python, no Ansible imports.
"""

from __future__ import annotations

import ipaddress
import os
import re

DEFAULT_GID_INDEX = 3
IPV4_MAPPED_PREFIX = "0000:0000:0000:0000:0000:ffff:"
ROCE_V2 = "roce v2"
# Kernel/udev PCI-path names: roceP2p1s0f1, rocep1s0f1, enP2p1s0f1np1, enp1s0f1np1.
# The numbers are decimal; the P<domain> part is left out for domain 0.
PCI_NAME_RE = re.compile(r"^(?:roce|en)(?:P(?P<domain>\d+))?p(?P<bus>\d+)s(?P<slot>\d+)"
                         r"(?:f(?P<function>\d+))?(?:np(?P<port>\d+))?$")
# The target of class/infiniband/<hca>/device on a real host: 0002:01:00.1 (hex).
PCI_ADDRESS_RE = re.compile(r"^(?P<domain>[0-9a-fA-F]{4,8}):(?P<bus>[0-9a-fA-F]{2}):(?P<slot>[0-9a-fA-F]{2})"
                            r"\.(?P<function>[0-7])$")


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


def hca_names(hca):
    """``a`` / ``a,b`` / ``[a, b]`` / None -> ['a', 'b'] (stripped, empties dropped, order kept)."""
    if not hca:
        return []
    items = hca if isinstance(hca, (list, tuple)) else str(hca).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def pci_location(name):
    """{domain, bus, slot, function, port} of a PCI-path device name, else None.

    ``rocep1s0f1`` -> domain 0, bus 1, slot 0, function 1, port None;
    ``enP2p1s0f1np1`` -> domain 2, ..., port 1. Names outside the scheme
    (``mlx5_0``, ``eth1``) give None.
    """
    match = PCI_NAME_RE.match(name or "")
    if not match:
        return None
    values = match.groupdict()
    return {"domain": int(values["domain"] or 0), "bus": int(values["bus"]), "slot": int(values["slot"]),
            "function": int(values["function"] or 0),
            "port": int(values["port"]) if values["port"] is not None else None}


def _pci_from_device_link(hca_dir):
    """The PCI location from the ``device`` link's target (real hosts whose HCAs are named mlx5_N)."""
    match = PCI_ADDRESS_RE.match(os.path.basename(os.path.realpath(os.path.join(hca_dir, "device"))))
    if not match:
        return None
    return {key: int(value, 16) for key, value in match.groupdict().items()}


def _device_pci(hca, hca_dir, netdevs):
    """Where an HCA sits: from its name, else its device link; the port from its netdev's ``np<port>``."""
    location = pci_location(hca) or _pci_from_device_link(hca_dir)
    if location is None:
        return None
    location = dict(location, port=None)
    ports = {loc["port"] for loc in (pci_location(n) for n in netdevs) if loc and loc["port"] is not None}
    if len(ports) == 1:
        location["port"] = ports.pop()
    return location


def are_twins(first, second):
    """Whether two scanned devices drive the same physical port from different PCI domains.

    Same bus, slot and function (and port, where both netdevs name one), another
    domain: the Socket Direct pair of a Spark's ConnectX-7 port.
    """
    a, b = first.get("pci"), second.get("pci")
    if not a or not b or first["name"] == second["name"]:
        return False
    if (a["bus"], a["slot"], a["function"]) != (b["bus"], b["slot"], b["function"]) or a["domain"] == b["domain"]:
        return False
    return a["port"] is None or b["port"] is None or a["port"] == b["port"]


def twins_of(device, devices):
    """The other devices that drive ``device``'s physical port, by PCI domain."""
    return sorted((d for d in devices if are_twins(device, d)), key=lambda d: (d["pci"]["domain"], d["name"]))


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
    """Every RDMA device: name, port 1 state, netdevs, PCI location, RoCE v2 IPv4 GIDs, chosen GID index.

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
        netdevs = _listdir(os.path.join(base, "device", "net"))
        devices.append({
            "name": hca,
            "state": port_state(_read(os.path.join(port_dir, "state"))),
            "link_layer": _read(os.path.join(port_dir, "link_layer")),
            "netdevs": netdevs,
            "pci": _device_pci(hca, base, netdevs),
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


def _twin_hint(device, devices, interface):
    """A clause for an HCA named on the wrong netdev that is a twin of the interface's HCA."""
    for other in devices:
        if interface in other["netdevs"] and are_twins(device, other):
            return ("; %s is the Socket Direct twin of %s (on %s): name %s (its twins are added) or list both, "
                    "e.g. sparkfleet_fabric_hca=%s,%s" % (device["name"], other["name"], interface, other["name"],
                                                          other["name"], device["name"]))
    return ""


def _require_active(host, device, interface):
    if device["state"] != "ACTIVE":
        raise FabricMismatch(
            "%s: fabric port not active: inventory expects %s (%s) ACTIVE, found port 1 state %s "
            "(cable, peer powered off, or wrong port?)" % (host, device["name"], interface, device["state"]))


def check(host, interface, hca=None, address=None, sysfs_root="/sys", require_rdma=False,
          default_gid_index=DEFAULT_GID_INDEX):
    """Compare the inventory's fabric interface/HCA(s) with the host; return what was found.

    ``hca``: None/empty (discover the HCA on the interface), one name, or a
    comma list (several: each must exist and be ACTIVE, and one must sit on the
    interface; they are used as given). With none or one, the effective list
    (``hcas``) is the HCA on the interface followed by its ACTIVE Socket Direct
    twins; ``hca`` stays the first of ``hcas`` for older callers.

    Raises FabricMismatch naming the host, the expected and the found values.
    """
    if not interface:
        raise FabricMismatch("%s: sparkfleet_fabric_interface is not set in the inventory" % host)
    names = hca_names(hca)
    wanted = ",".join(names)
    iface = read_interface(sysfs_root, interface)
    devices = scan(sysfs_root, address)
    result = {"interface": iface, "rdma_present": devices is not None, "devices": devices or [],
              "hca": None, "hcas": [], "hcas_source": "none", "addressed_hca": None, "twins": [], "notes": [],
              "gid_index": default_gid_index, "gid_source": "default (no RDMA devices on this host)"}
    if not iface["exists"]:
        raise FabricMismatch(
            "%s: fabric interface mismatch: inventory expects sparkfleet_fabric_interface=%s, "
            "host has interfaces: %s%s" % (
                host, interface, ", ".join(list_interfaces(sysfs_root)) or "none",
                "; RDMA devices: %s" % _describe(devices) if devices is not None else ""))
    if devices is None:
        if names or require_rdma:
            raise FabricMismatch(
                "%s: fabric HCA mismatch: inventory expects sparkfleet_fabric_hca=%s on %s, "
                "found: no %s/class/infiniband (RDMA driver not loaded or no ConnectX here)"
                % (host, wanted or "(any)", interface, sysfs_root.rstrip("/") or ""))
        return result
    by_name = {d["name"]: d for d in devices}
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FabricMismatch("%s: fabric HCA list mismatch: inventory expects sparkfleet_fabric_hca=%s, which names "
                             "%s more than once" % (host, wanted, ", ".join(duplicates)))
    missing = [n for n in names if n not in by_name]
    if missing:
        raise FabricMismatch(
            "%s: fabric HCA mismatch: inventory expects sparkfleet_fabric_hca=%s%s, found: %s"
            % (host, wanted, " (%s missing)" % ", ".join(missing) if len(names) > 1 else "", _describe(devices)))
    if len(names) == 1:
        addressed = by_name[names[0]]
        if interface not in addressed["netdevs"]:
            raise FabricMismatch(
                "%s: fabric HCA/interface mismatch: inventory expects %s on interface %s, found %s on %s "
                "(all: %s)%s" % (host, addressed["name"], interface, addressed["name"],
                                 "+".join(addressed["netdevs"]) or "no netdev", _describe(devices),
                                 _twin_hint(addressed, devices, interface)))
    elif names:
        on_interface = [by_name[n] for n in names if interface in by_name[n]["netdevs"]]
        if not on_interface:
            raise FabricMismatch(
                "%s: fabric HCA/interface mismatch: inventory expects one of sparkfleet_fabric_hca=%s on interface "
                "%s (the one whose netdev carries the fabric address), found: %s"
                % (host, wanted, interface, _describe(devices)))
        addressed = on_interface[0]
        for name in names:
            _require_active(host, by_name[name], "+".join(by_name[name]["netdevs"]) or interface)
    else:
        matching = [d for d in devices if interface in d["netdevs"]]
        if not matching:
            raise FabricMismatch(
                "%s: fabric interface mismatch: inventory expects an HCA on %s, found: %s"
                % (host, interface, _describe(devices)))
        addressed = matching[0]
    _require_active(host, addressed, interface)

    twins = twins_of(addressed, devices)
    if len(names) > 1:
        hcas, source = list(names), "inventory"
    else:
        hcas = [addressed["name"]] + [t["name"] for t in twins if t["state"] == "ACTIVE"]
        source = "inventory + twins" if names else "discovered"
    port_names = {addressed["name"]} | {t["name"] for t in twins}
    paths_used = len([n for n in hcas if n in port_names])
    notes = []
    for twin in twins:
        where = "%s, Socket Direct twin of %s on %s" % ("+".join(twin["netdevs"]) or "no netdev",
                                                       addressed["name"], interface)
        if twin["state"] != "ACTIVE":
            notes.append("%s: %s (%s) is %s, not ACTIVE: left out of NCCL_IB_HCA, so NCCL runs on %d of the "
                         "port's %d paths" % (host, twin["name"], where, twin["state"] or "without port 1",
                                              paths_used, len(port_names)))
        elif twin["name"] not in hcas:
            notes.append("%s: %s (%s) is ACTIVE but not in sparkfleet_fabric_hca=%s: NCCL leaves that path unused"
                         % (host, twin["name"], where, wanted))
        elif twin["gid_source"].startswith("sysfs") and twin["gid_index"] != addressed["gid_index"]:
            notes.append("%s: %s (%s) holds its RoCE v2 IPv4 GID at index %d, NCCL_IB_GID_INDEX comes from %s (%d)"
                         % (host, twin["name"], where, twin["gid_index"], addressed["name"], addressed["gid_index"]))
    # NCCL_IB_GID_INDEX is one value for every HCA in NCCL_IB_HCA, so there is
    # one index to choose, and it is chosen where the fabric address is known
    # to live: its RoCE v2 GID is on the netdev that carries it, the addressed
    # HCA's. A twin's netdev needs no address of its own (one address per port
    # is enough, measured on Spark pairs: spark-facts "The real road"), so its
    # table has no IPv4 entry that could argue for another index; mlx5 fills
    # every function's table in the same order (0/1 the link-local v1/v2 GIDs,
    # then a v1/v2 pair per address), so a twin given the same kind of address
    # lands on the same index, and a note says so when it does not.
    result.update(hca=hcas[0], hcas=hcas, hcas_source=source, addressed_hca=addressed["name"],
                  twins=[{"name": t["name"], "netdevs": t["netdevs"], "state": t["state"], "used": t["name"] in hcas}
                         for t in twins],
                  notes=notes, gid_index=addressed["gid_index"], gid_source=addressed["gid_source"])
    return result
