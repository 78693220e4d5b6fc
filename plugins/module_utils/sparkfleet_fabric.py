# -*- coding: utf-8 -*-
"""The fabric's configuration and checks, as pure functions.

* ``env_lines``: the per-node NCCL/Gloo environment (a ``docker --env-file``),
  derived from that node's own inventory and discovery -- never another node's;
* ``link_files``: the link configuration for the host's network manager
  (netplan YAML on DGX OS, systemd-networkd files elsewhere);
* ``pair_problems`` / ``nccl_problems``: what the fabric check found wrong on a
  pair, as sentences naming the pair, the hosts and the numbers;
* ``nccl_floor``: the all-reduce floor of a pair from the RoCE paths (HCAs)
  its nodes give NCCL.

No Ansible imports: used by plugins/filter/sparkfleet_fabric.py and unit tests.
"""

from __future__ import annotations

import ipaddress
import re

IFACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}$")
HCA_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NCCL_DEBUG_LEVELS = ("VERSION", "WARN", "INFO", "TRACE", "ABORT")
NETPLAN_FILE = "40-sparkfleet-fabric.yaml"
NETWORKD_FILE = "40-sparkfleet-fabric.network"
BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb")
PING_STATS_RE = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
PING_RTT_RE = re.compile(r"= [\d.]+/([\d.]+)/[\d.]+")
# Ethernet MTU minus the IPv4 (20) and ICMP (8) headers.
ICMP_OVERHEAD = 28


class FabricConfigError(ValueError):
    """The inventory's fabric settings cannot be rendered."""


def _host(node):
    return node.get("host") or "this host"


def check_interface_name(host, name, what="sparkfleet_fabric_interface"):
    if not name or not IFACE_RE.match(str(name)):
        raise FabricConfigError("%s: %s %r is not a valid interface name (1-15 of A-Z a-z 0-9 _ . : -)"
                                % (host, what, name))
    return str(name)


def fabric_ip(host, address):
    text = str(address or "").split("/", 1)[0]
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise FabricConfigError("%s: sparkfleet_fabric_address %r is not an IPv4 address" % (host, address)) from None


def fabric_cidr(host, address, prefix):
    ip = fabric_ip(host, address)
    try:
        prefix = int(prefix)
    except (TypeError, ValueError):
        raise FabricConfigError("%s: sparkfleet_fabric_prefix %r is not a number" % (host, prefix)) from None
    if not 8 <= prefix <= 32:
        raise FabricConfigError("%s: sparkfleet_fabric_prefix %d is outside 8..32" % (host, prefix))
    return "%s/%d" % (ip, prefix)


def check_mtu(host, mtu):
    try:
        value = int(mtu)
    except (TypeError, ValueError):
        raise FabricConfigError("%s: spark_fabric_mtu %r is not a number" % (host, mtu)) from None
    if not 1280 <= value <= 9216:
        raise FabricConfigError("%s: spark_fabric_mtu %d is outside 1280..9216" % (host, value))
    return value


def hca_list(host, hca):
    """``rocep1s0f0`` or ``[a, b]`` or ``a,b`` -> ['a', 'b'] (validated)."""
    if hca in (None, "", []):
        return []
    items = hca if isinstance(hca, (list, tuple)) else str(hca).split(",")
    names = [str(i).strip() for i in items if str(i).strip()]
    for name in names:
        if not HCA_RE.match(name):
            raise FabricConfigError("%s: sparkfleet_fabric_hca %r is not a valid RDMA device name" % (host, name))
    return names


def env_pairs(node):
    """[(KEY, value)] of this node's NCCL/Gloo environment.

    ``node``: host, interface, address, hca (str/list/None), gid_index, debug,
    extra (dict). Keys are emitted in a fixed order, extra ones sorted after.
    At debug INFO, ``NCCL_DEBUG_SUBSYS=INIT,NET`` follows ``NCCL_DEBUG``: the
    journal then says which network NCCL picked (``NET/IB : Using ...``,
    ``Using network IB|Socket``) without the per-collective noise of the other
    subsystems; ``extra`` may set NCCL_DEBUG_SUBSYS itself instead.
    """
    host = _host(node)
    iface = check_interface_name(host, node.get("interface"))
    ip = fabric_ip(host, node.get("address"))
    hcas = hca_list(host, node.get("hca"))
    try:
        gid_index = int(node.get("gid_index"))
    except (TypeError, ValueError):
        raise FabricConfigError("%s: NCCL GID index %r is not a number" % (host, node.get("gid_index"))) from None
    if gid_index < 0:
        raise FabricConfigError("%s: NCCL GID index %d is negative" % (host, gid_index))
    debug = str(node.get("debug") or "WARN").upper()
    if debug not in NCCL_DEBUG_LEVELS:
        raise FabricConfigError("%s: spark_fabric_nccl_debug %r is not one of %s"
                                % (host, node.get("debug"), ", ".join(NCCL_DEBUG_LEVELS)))
    pairs = []
    if hcas:
        pairs.append(("NCCL_IB_HCA", ",".join(hcas)))
    pairs += [
        ("NCCL_SOCKET_IFNAME", iface),
        ("GLOO_SOCKET_IFNAME", iface),
        ("NCCL_IB_GID_INDEX", str(gid_index)),
        ("NCCL_IB_DISABLE", "0"),
        ("NCCL_NET", "IB"),
        ("NCCL_CROSS_NIC", "1"),
        ("NCCL_CUMEM_ENABLE", "0"),
        ("NCCL_IGNORE_CPU_AFFINITY", "1"),
        ("NCCL_DEBUG", debug),
        ("VLLM_HOST_IP", ip),
    ]
    extra = dict(node.get("extra") or {})
    if debug == "INFO" and "NCCL_DEBUG_SUBSYS" not in extra:
        pairs.insert(len(pairs) - 1, ("NCCL_DEBUG_SUBSYS", "INIT,NET"))
    fixed = {k for k, _ in pairs}
    for key in sorted(extra):
        if not ENV_KEY_RE.match(str(key)):
            raise FabricConfigError("%s: spark_fabric_env_extra key %r is not a valid variable name" % (host, key))
        if key in fixed:
            raise FabricConfigError("%s: spark_fabric_env_extra sets %s, which the fabric role derives itself; "
                                    "use the role's variable for it" % (host, key))
        value = extra[key]
        value = ("1" if value else "0") if isinstance(value, bool) else str(value)
        if "\n" in value or "\r" in value:
            raise FabricConfigError("%s: spark_fabric_env_extra %s holds a line break" % (host, key))
        pairs.append((str(key), value))
    return pairs


def env_lines(node):
    return ["%s=%s" % pair for pair in env_pairs(node)]


def _bond(host, bond, iface):
    if not bond:
        return None
    if not isinstance(bond, dict):
        raise FabricConfigError("%s: sparkfleet_fabric_bond must be a mapping (name, interfaces, mode)" % host)
    name = check_interface_name(host, bond.get("name") or iface, "sparkfleet_fabric_bond.name")
    if name != iface:
        raise FabricConfigError("%s: sparkfleet_fabric_bond.name %s must equal sparkfleet_fabric_interface %s "
                                "(NCCL and the address use the bond)" % (host, name, iface))
    members = [check_interface_name(host, m, "sparkfleet_fabric_bond.interfaces")
               for m in bond.get("interfaces") or []]
    if len(members) < 2:
        raise FabricConfigError("%s: sparkfleet_fabric_bond.interfaces needs at least two members" % host)
    mode = str(bond.get("mode") or "active-backup")
    if mode not in BOND_MODES:
        raise FabricConfigError("%s: sparkfleet_fabric_bond.mode %r is not one of %s" % (host, mode, ", ".join(BOND_MODES)))
    return {"name": name, "interfaces": members, "mode": mode}


def link_files(node, backend, header="Managed by sparkfleet (spark_fabric); local edits are overwritten."):
    """{file name: content} of the link configuration for ``backend`` (netplan | networkd).

    ``node``: host, interface, address, prefix, mtu, bond (optional), renderer (netplan only, optional).
    """
    host = _host(node)
    iface = check_interface_name(host, node.get("interface"))
    cidr = fabric_cidr(host, node.get("address"), node.get("prefix"))
    mtu = check_mtu(host, node.get("mtu"))
    bond = _bond(host, node.get("bond"), iface)
    if backend == "netplan":
        return {NETPLAN_FILE: _netplan(iface, cidr, mtu, bond, node.get("renderer"), header)}
    if backend == "networkd":
        return _networkd(iface, cidr, mtu, bond, header)
    raise FabricConfigError("%s: link backend %r is neither netplan nor networkd" % (host, backend))


def _netplan(iface, cidr, mtu, bond, renderer, header):
    lines = ["# " + header, "# The ConnectX-7 fabric link (NCCL between the two Sparks of a pair).",
             "network:", "  version: 2", "  ethernets:"]

    def device(name, address):
        out = ["    %s:" % name]
        if renderer:
            out.append("      renderer: %s" % renderer)
        out += ["      dhcp4: false", "      dhcp6: false", "      link-local: []",
                "      accept-ra: false", "      optional: true", "      mtu: %d" % mtu]
        if address:
            out += ["      addresses:", "        - %s" % address]
        return out

    if bond:
        for member in bond["interfaces"]:
            lines += device(member, None)
        lines += ["  bonds:"]
        lines += device(iface, cidr)
        lines += ["      interfaces: [%s]" % ", ".join(bond["interfaces"]),
                  "      parameters:", "        mode: %s" % bond["mode"]]
    else:
        lines += device(iface, cidr)
    return "\n".join(lines) + "\n"


def _networkd(iface, cidr, mtu, bond, header):
    files = {}

    def network(name, address, bond_name=None):
        out = ["# " + header, "[Match]", "Name=%s" % name, "", "[Link]", "MTUBytes=%d" % mtu,
               # A fabric link that is down must not hold up network-online.target.
               "RequiredForOnline=no", "", "[Network]"]
        if bond_name:
            out.append("Bond=%s" % bond_name)
        else:
            out.append("Address=%s" % address)
        out += ["DHCP=no", "LinkLocalAddressing=no", "IPv6AcceptRA=no"]
        return "\n".join(out) + "\n"

    if bond:
        files["40-sparkfleet-fabric.netdev"] = "\n".join([
            "# " + header, "[NetDev]", "Name=%s" % iface, "Kind=bond", "MTUBytes=%d" % mtu, "",
            "[Bond]", "Mode=%s" % bond["mode"]]) + "\n"
        for member in bond["interfaces"]:
            files["40-sparkfleet-fabric-%s.network" % member] = network(member, None, iface)
    files[NETWORKD_FILE] = network(iface, cidr)
    return files


def ping_payload(mtu):
    """ICMP payload that fills an MTU-sized IPv4 packet exactly (9000 -> 8972)."""
    return check_mtu("", mtu) - ICMP_OVERHEAD


def ping_stats(output):
    """{transmitted, received, loss_pct, avg_rtt_ms} from iputils ping output (None where absent)."""
    stats = {"transmitted": None, "received": None, "loss_pct": None, "avg_rtt_ms": None}
    match = PING_STATS_RE.search(output or "")
    if match:
        sent, got = int(match.group(1)), int(match.group(2))
        stats.update(transmitted=sent, received=got, loss_pct=round(100.0 * (sent - got) / sent, 1) if sent else None)
    match = PING_RTT_RE.search(output or "")
    if match:
        stats["avg_rtt_ms"] = float(match.group(1))
    return stats


def _link_ok(link):
    state = str(link.get("operstate") or "").lower()
    return state == "up" or (state == "unknown" and link.get("carrier") is True)


def pair_problems(pair, head, worker, links, expected_mtu, ping=None):
    """Sentences for what is wrong with a pair's fabric link; [] when it is fine.

    ``links``: {host: {name, operstate, carrier, mtu}} as read back from sysfs;
    ``ping``: {rc, output, payload, target} of the head's don't-fragment ping
    of the worker, or None when it did not run.
    """
    problems = []
    expected_mtu = int(expected_mtu)
    for host in (head, worker):
        link = links.get(host) or {}
        name = link.get("name", "?")
        if not _link_ok(link):
            problems.append("pair %s: %s fabric interface %s is %s (carrier %s), expected up"
                            % (pair, host, name, link.get("operstate") or "missing", link.get("carrier")))
        if link.get("mtu") != expected_mtu:
            problems.append("pair %s: %s fabric interface %s has MTU %s, expected %d"
                            % (pair, host, name, link.get("mtu"), expected_mtu))
    head_mtu = (links.get(head) or {}).get("mtu")
    worker_mtu = (links.get(worker) or {}).get("mtu")
    if head_mtu != worker_mtu:
        problems.append("pair %s: MTU differs across the pair: %s has %s, %s has %s"
                        % (pair, head, head_mtu, worker, worker_mtu))
    if ping is not None and int(ping.get("rc", 1)) != 0:
        stats = ping_stats(ping.get("output", ""))
        detail = (ping.get("output") or "").strip().splitlines()
        first_error = next((line for line in detail if "too long" in line.lower() or "unreachable" in line.lower()
                            or "error" in line.lower()), "")
        problems.append(
            "pair %s: jumbo ping failed: %s -> %s (%s) with %d-byte don't-fragment payload: %s/%s replies "
            "(%s%% loss)%s; check the MTU on both ends and on any switch between them"
            % (pair, head, worker, ping.get("target"), int(ping.get("payload", 0)),
               stats["received"], stats["transmitted"], stats["loss_pct"],
               ", %s" % first_error.strip() if first_error else ""))
    return problems


NCCL_CAUSES = (
    "NCCL fell back to sockets (NCCL_NET=IB set, /dev/infiniband passed to the container? "
    "run with NCCL_DEBUG=INFO and look for 'NET/IB' vs 'NET/Socket')",
    "wrong NCCL_IB_GID_INDEX (it must be the RoCE v2 GID holding the fabric IPv4 address; see show_gids)",
    "MTU not 9000 end to end (the RoCE path MTU falls to 1024 or 4096)",
    "memlock not unlimited in the container (--ulimit memlock=-1:-1; else ibv_reg_mr fails or slows)",
    "the wrong HCA or port in NCCL_IB_HCA (the cable is on the other port)",
    "only one of the port's two Socket Direct HCAs in NCCL_IB_HCA (a Spark port is two ~100 Gb/s PCIe paths, "
    "e.g. NCCL_IB_HCA=rocep1s0f1,roceP2p1s0f1; a twin that is down is left out and reported by discovery)",
)

# Never below this without an explicit floor: untuned TCP reaches ~96 Gb/s, so
# a lower floor would pass a sockets fallback. It is also the floor of a
# single path (today's figure), where bandwidth alone cannot tell RoCE
# (tops out near 100 Gb/s) from sockets.
NCCL_FLOOR_MIN_GBPS = 100.0


def nccl_paths(nodes_hcas):
    """RoCE paths (HCAs) NCCL gets on a pair: the largest count among its nodes, at least 1.

    ``nodes_hcas``: one entry per node, each ``a,b`` or [a, b] or empty; a
    plain string is one node's entry. The pair is held to what its
    better-equipped node was given, so a node whose twin went missing fails the
    floor instead of lowering it.
    """
    if nodes_hcas is None or isinstance(nodes_hcas, str):
        nodes_hcas = [nodes_hcas]
    return max([len(hca_list("", entry if entry is not None else "")) for entry in nodes_hcas] + [1])


def nccl_floor(per_path_gbps, nodes_hcas, minimum=NCCL_FLOOR_MIN_GBPS):
    """The pair's all-reduce floor in Gb/s: per-path floor x paths, never below ``minimum``.

    With a Spark port's two Socket Direct paths, 2 x 75 = 150 Gb/s sits above
    what one path (~100) or untuned TCP (~96) reaches, so the check catches a
    pair running on half its link; with one path it stays at ``minimum``.
    """
    try:
        per_path = float(per_path_gbps)
    except (TypeError, ValueError):
        raise FabricConfigError("spark_fabric_nccl_min_busbw_gbps_per_path %r is not a number"
                                % (per_path_gbps,)) from None
    if per_path <= 0:
        raise FabricConfigError("spark_fabric_nccl_min_busbw_gbps_per_path %r must be above 0" % (per_path_gbps,))
    return max(per_path * nccl_paths(nodes_hcas), float(minimum))


def nccl_problems(pair, head, worker, doc, floor_gbps, hcas=None):
    """Sentences for an all-reduce result below the floor (or missing); [] when fine.

    ``hcas``: optional {host: NCCL_IB_HCA of that node}, quoted in the sentence
    so a node running on one of its port's two paths shows at a glance.
    """
    if not doc or not doc.get("results"):
        return ["pair %s: the NCCL all-reduce between %s and %s produced no result" % (pair, head, worker)]
    peak = float(doc.get("peak_busbw_gbps", 0.0))
    if peak >= float(floor_gbps):
        return []
    used = ""
    if hcas:
        used = " (NCCL_IB_HCA %s)" % ", ".join("%s=%s" % (host, ",".join(hca_list(host, hcas.get(host))) or "unset")
                                              for host in (head, worker))
    return ["pair %s: NCCL all-reduce %s <-> %s peaked at %.1f Gb/s bus bandwidth (%.2f GB/s), below the floor "
            "of %.1f Gb/s%s; likely causes: %s" % (pair, head, worker, peak, float(doc.get("peak_busbw_GBps", 0.0)),
                                                   float(floor_gbps), used, "; ".join(NCCL_CAUSES))]


NCCL_JSON_KEY = "sparkfleet_nccl_check"


def nccl_result(output):
    """The result object of sparkfleet-nccl-check's last JSON line; {} when there is none."""
    import json  # pylint: disable=import-outside-toplevel

    for line in reversed((output or "").splitlines()):
        line = line.strip()
        if line.startswith("{") and NCCL_JSON_KEY in line:
            try:
                return json.loads(line)[NCCL_JSON_KEY]
            except (ValueError, KeyError, TypeError):
                return {}
    return {}
