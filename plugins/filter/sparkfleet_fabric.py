# -*- coding: utf-8 -*-
"""Jinja filters for the fabric role and check (logic in module_utils/sparkfleet_fabric.py)."""

from __future__ import annotations

import os
import sys

from ansible.errors import AnsibleFilterError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))

import sparkfleet_fabric as fabric  # noqa: E402  pylint: disable=wrong-import-position


def _wrap(func, *args):
    try:
        return func(*args)
    except fabric.FabricConfigError as exc:
        raise AnsibleFilterError("sparkfleet fabric: %s" % exc) from exc


def sparkfleet_fabric_env_lines(node):
    """`KEY=value` lines of this node's NCCL/Gloo env file."""
    return _wrap(fabric.env_lines, dict(node))


def sparkfleet_fabric_link_files(node, backend):
    """{file name: content} of the link configuration (netplan or networkd)."""
    return _wrap(fabric.link_files, dict(node), str(backend))


def sparkfleet_fabric_ping_payload(mtu):
    """Don't-fragment ICMP payload for an MTU (9000 -> 8972)."""
    return _wrap(fabric.ping_payload, mtu)


def sparkfleet_fabric_ping_stats(output):
    """{transmitted, received, loss_pct, avg_rtt_ms} of a ping's output."""
    return fabric.ping_stats(str(output or ""))


def sparkfleet_fabric_pair_problems(links, pair, head, worker, expected_mtu, ping=None):
    """Problems of one pair's link (state, MTU, jumbo ping); [] when fine."""
    return fabric.pair_problems(str(pair), str(head), str(worker), dict(links), expected_mtu,
                                dict(ping) if ping else None)


def sparkfleet_fabric_nccl_problems(doc, pair, head, worker, floor_gbps, hcas=None):
    """Problems of one pair's NCCL all-reduce result; [] when above the floor."""
    return _wrap(fabric.nccl_problems, str(pair), str(head), str(worker), dict(doc or {}), floor_gbps,
                 dict(hcas) if hcas else None)


def sparkfleet_fabric_nccl_floor(per_path_gbps, nodes_hcas):
    """The pair's all-reduce floor, Gb/s: per-path floor x the most HCAs a node of the pair gives NCCL (min 100)."""
    return _wrap(fabric.nccl_floor, per_path_gbps, nodes_hcas)


def sparkfleet_fabric_nccl_result(output):
    """The JSON result of sparkfleet-nccl-check from its output; {} when absent."""
    return fabric.nccl_result(str(output or ""))


class FilterModule:
    """sparkfleet fabric filters."""

    def filters(self):
        return {
            "sparkfleet_fabric_env_lines": sparkfleet_fabric_env_lines,
            "sparkfleet_fabric_link_files": sparkfleet_fabric_link_files,
            "sparkfleet_fabric_ping_payload": sparkfleet_fabric_ping_payload,
            "sparkfleet_fabric_ping_stats": sparkfleet_fabric_ping_stats,
            "sparkfleet_fabric_pair_problems": sparkfleet_fabric_pair_problems,
            "sparkfleet_fabric_nccl_problems": sparkfleet_fabric_nccl_problems,
            "sparkfleet_fabric_nccl_floor": sparkfleet_fabric_nccl_floor,
            "sparkfleet_fabric_nccl_result": sparkfleet_fabric_nccl_result,
        }
