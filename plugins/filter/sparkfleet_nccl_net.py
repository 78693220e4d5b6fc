# -*- coding: utf-8 -*-
"""Jinja filters: which network NCCL uses on a rank (logic in module_utils/sparkfleet_nccl_net.py)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))

import sparkfleet_nccl_net as nccl_net  # noqa: E402  pylint: disable=wrong-import-position


def sparkfleet_nccl_net(text):
    """'IB', 'Socket' (or another plugin's name) from a rank's log; None without a `Using network` line."""
    return nccl_net.nccl_net(str(text or ""))


def sparkfleet_nccl_net_problems(ranks, pair):
    """Sentences for ranks on sockets although their node has RDMA devices; [] when fine.

    ``ranks``: [{host, net or log, rdma}].
    """
    return nccl_net.nccl_net_problems(str(pair), [dict(rank) for rank in ranks or []])


def sparkfleet_nccl_pair_net(head_net, worker_net):
    """IB, Socket or unknown for a pair from its two ranks' networks."""
    return nccl_net.pair_net(head_net or None, worker_net or None)


def sparkfleet_nccl_status_rows(rows, hostvars, fact="spark_health_status_nccl_net"):
    """The status rows with `nccl` (IB, Socket or unknown) from each pair's head and worker readings."""
    out = []
    for row in rows or []:
        row = dict(row)
        nets = [hostvars[row[role]].get(fact) if row.get(role) in hostvars else None for role in ("head", "worker")]
        row["nccl"] = nccl_net.pair_net(nets[0] or None, nets[1] or None)
        out.append(row)
    return out


def sparkfleet_nccl_status_table(lines, rows):
    """The status table's lines with an `nccl` column (rows in the table's order)."""
    return nccl_net.add_column(list(lines or []), [row.get("nccl", "unknown") for row in rows or []], "nccl")


class FilterModule:
    """sparkfleet NCCL network filters."""

    def filters(self):
        return {
            "sparkfleet_nccl_net": sparkfleet_nccl_net,
            "sparkfleet_nccl_net_problems": sparkfleet_nccl_net_problems,
            "sparkfleet_nccl_pair_net": sparkfleet_nccl_pair_net,
            "sparkfleet_nccl_status_rows": sparkfleet_nccl_status_rows,
            "sparkfleet_nccl_status_table": sparkfleet_nccl_status_table,
        }
