# -*- coding: utf-8 -*-
"""Fleet topology: which node is which, derived once from the inventory.

The inventory states two facts per Spark: the pair it belongs to
(``sparkfleet_pair``) and its role in that pair (``sparkfleet_node_role``:
``head`` or ``worker``). Everything else a launch needs -- rank, peer, master
address, number of nodes -- is derived here, so no value is typed twice.

Pure functions, no Ansible imports: used by the filter plugin on the
controller and by the unit tests.
"""

from __future__ import annotations

import ipaddress

NODE_ROLES = ("head", "worker")
RANK_OF_ROLE = {"head": 0, "worker": 1}


class TopologyError(ValueError):
    """The inventory does not describe a valid fleet."""


def _fabric_ip(host, hostvars):
    addr = hostvars.get("sparkfleet_fabric_address")
    if not addr:
        raise TopologyError(
            "host %s has no sparkfleet_fabric_address: each Spark needs the "
            "address of its ConnectX-7 fabric port (the pair talks NCCL over it)" % host
        )
    text = str(addr).split("/", 1)[0]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise TopologyError(
            "host %s: sparkfleet_fabric_address %r is not an IP address" % (host, addr)
        )
    return text


def build_pairs(nodes):
    """Group nodes into pairs and check each pair is one head plus one worker.

    ``nodes`` maps inventory hostname -> that host's variables.
    Returns ``{pair: {"head": host, "worker": host, "master_addr": ip}}``.
    Raises TopologyError naming the hosts involved on any inconsistency.
    """
    if not nodes:
        raise TopologyError(
            "the inventory has no hosts in group sparkfleet_nodes: "
            "describe at least one pair (see inventory/example/)"
        )
    members = {}
    for host in sorted(nodes):
        hv = nodes[host] or {}
        pair = hv.get("sparkfleet_pair")
        role = hv.get("sparkfleet_node_role")
        if pair in (None, ""):
            raise TopologyError("host %s has no sparkfleet_pair (the name of its pair)" % host)
        if role not in NODE_ROLES:
            raise TopologyError(
                "host %s: sparkfleet_node_role is %r; expected one of %s"
                % (host, role, ", ".join(NODE_ROLES))
            )
        members.setdefault(str(pair), {}).setdefault(role, []).append(host)

    pairs = {}
    seen_fabric = {}
    for pair, roles in sorted(members.items()):
        for role in NODE_ROLES:
            hosts = roles.get(role, [])
            if len(hosts) != 1:
                raise TopologyError(
                    "pair %s has %d %s node(s) (%s); a pair is exactly one head "
                    "(rank 0, serves the API) and one worker (rank 1, headless)"
                    % (pair, len(hosts), role, ", ".join(hosts) or "none")
                )
        head, worker = roles["head"][0], roles["worker"][0]
        head_ip = _fabric_ip(head, nodes[head])
        worker_ip = _fabric_ip(worker, nodes[worker])
        for host, ip in ((head, head_ip), (worker, worker_ip)):
            if ip in seen_fabric:
                raise TopologyError(
                    "hosts %s and %s share the fabric address %s" % (seen_fabric[ip], host, ip)
                )
            seen_fabric[ip] = host
        pairs[pair] = {"head": head, "worker": worker, "master_addr": head_ip}
    return pairs


def node_view(pairs, host):
    """What one node needs to know about its place in the fleet."""
    for pair, members in pairs.items():
        for role in NODE_ROLES:
            if members[role] == host:
                peer_role = "worker" if role == "head" else "head"
                return {
                    "pair": pair,
                    "role": role,
                    "rank": RANK_OF_ROLE[role],
                    "nnodes": len(NODE_ROLES),
                    "head": members["head"],
                    "worker": members["worker"],
                    "peer": members[peer_role],
                    "master_addr": members["master_addr"],
                }
    raise TopologyError("host %s is not a member of any pair" % host)
