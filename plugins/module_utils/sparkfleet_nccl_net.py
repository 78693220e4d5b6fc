# -*- coding: utf-8 -*-
"""Which network NCCL runs over on a rank, read from the rank's log, and what is wrong with it.

With ``NCCL_DEBUG=INFO`` (the fabric role's default, subsystems ``INIT,NET``)
NCCL logs the network each communicator uses when it is created:
``<host>:<pid>:<tid> [<dev>] NCCL INFO Using network IB`` (src/init.cc).
``IB`` is RDMA (RoCE on a Spark); ``Socket`` is NCCL's TCP fallback, which a
TP=2 decode pays for with most of its speed. A node that has RDMA devices
(``/dev/infiniband``) but whose NCCL uses sockets is misconfigured.

* ``nccl_net``: the network of the last ``Using network`` line, or None;
* ``pair_net``: a pair's network from its ranks' (IB, Socket or unknown);
* ``nccl_net_problems``: sentences for ranks on sockets although RDMA is there;
* ``add_column``: the status table with one more column.

No Ansible imports: used by plugins/filter/sparkfleet_nccl_net.py and unit tests.
"""

from __future__ import annotations

import re

USING_NETWORK_RE = re.compile(r"NCCL INFO Using network (\S[^\r\n]*?)\s*$", re.M)

NCCL_NET_CAUSES = (
    "NCCL_NET unset (the fabric role's env file sets NCCL_NET=IB; is it the container's --env-file?)",
    "/dev/infiniband not passed to the container (--device /dev/infiniband; the service role adds it "
    "when the node had the directory at deploy time)",
    "no verbs device (/dev/infiniband/uverbs*) on the node or none on NCCL_IB_HCA's RDMA device "
    "(driver not loaded, or the wrong HCA named)",
)


def nccl_net(text):
    """The network NCCL last reported in ``text`` (a rank's log): 'IB', 'Socket' (or another plugin's name);
    None when no ``Using network`` line is there (NCCL_DEBUG below INFO, or NCCL never got that far)."""
    found = USING_NETWORK_RE.findall(str(text or ""))
    return found[-1] if found else None


def pair_net(head_net, worker_net):
    """One word for a pair: Socket when either rank uses sockets, IB when both use IB, else unknown."""
    nets = (head_net, worker_net)
    if "Socket" in nets:
        return "Socket"
    if head_net and head_net == worker_net:
        return head_net
    return "unknown"


def nccl_net_problems(pair, ranks):
    """Sentences for ranks whose NCCL runs over sockets although their node has RDMA devices; [] when fine.

    ``ranks``: [{host, net (or log), rdma}] -- ``rdma`` true when the node has /dev/infiniband.
    """
    problems = []
    for rank in ranks:
        net = rank["net"] if "net" in rank else nccl_net(rank.get("log"))
        if net == "Socket" and rank.get("rdma"):
            problems.append(
                "pair %s: %s NCCL runs over sockets (Using network Socket) although the node has RDMA devices; "
                "a TP=2 decode loses most of its speed that way; likely causes: %s"
                % (pair, rank.get("host", "?"), "; ".join(NCCL_NET_CAUSES)))
    return problems


def add_column(lines, values, title):
    """Append a column to fixed-width table lines (a heading line, then one line per value)."""
    lines = [str(line) for line in lines]
    if not lines:
        return lines
    width = max(len(line) for line in lines)
    cells = [title] + [str(value) for value in values]
    cells += [""] * (len(lines) - len(cells))
    return [("%s  %s" % (line.ljust(width), cell)).rstrip() for line, cell in zip(lines, cells)]
