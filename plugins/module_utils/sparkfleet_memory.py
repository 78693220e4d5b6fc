#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Memory arithmetic for GB10's unified memory, and the start-up preflight.

On a DGX Spark the GPU and the OS share ~119-121 GiB. vLLM refuses to start
("Free memory on device ... less than desired GPU memory utilization") when
MemAvailable is below gpu_memory_utilization x MemTotal, and page cache from
earlier 149 GB loads is the usual culprit. The preflight does that comparison
first, with numbers and the fix, before anything is restarted.

This file is both a module_utils library (pure functions, unit tested) and a
small CLI installed on the hosts, so the unit's ExecStartPre runs the very same
check: ``python3 sparkfleet_memory.py --utilization 0.88 [--meminfo PATH]``.
"""

from __future__ import annotations

import sys

GIB = 1024 ** 3
KIB = 1024


class PreflightFailure(Exception):
    """Not enough memory to start; str() gives both numbers and the fix."""


def parse_meminfo(text):
    """/proc/meminfo text -> {field: bytes}."""
    values = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        try:
            number = int(parts[0])
        except ValueError:
            continue
        unit = parts[1].lower() if len(parts) > 1 else ""
        values[name.strip()] = number * KIB if unit == "kb" else number
    for required in ("MemTotal", "MemAvailable"):
        if required not in values:
            raise ValueError("meminfo has no %s line" % required)
    return values


def min_free_kbytes(mem_total_bytes, ratio=0.025, floor_gib=1.0, ceiling_gib=5.0):
    """vm.min_free_kbytes for a node: ``ratio`` of RAM, kept within [floor, ceiling].

    The kernel keeps this much free for atomic allocations; on unified memory a
    large reserve stops a 76 GB weight load from starving the driver. 2.5% of a
    119.7 GiB Spark is ~3 GiB, what operators settled on for 121 GiB nodes.
    """
    wanted = mem_total_bytes * float(ratio)
    bounded = min(max(wanted, floor_gib * GIB), ceiling_gib * GIB)
    return int(bounded // KIB)


def gib(value):
    return value / float(GIB)


def check(meminfo, utilization, margin_gib=2.0, node="this node"):
    """Raise PreflightFailure unless MemAvailable >= utilization x MemTotal + margin.

    Returns a dict of the figures when the check passes.
    """
    if not 0.0 < float(utilization) <= 1.0:
        raise ValueError("gpu_memory_utilization must be in (0, 1], got %r" % (utilization,))
    total = meminfo["MemTotal"]
    available = meminfo["MemAvailable"]
    cached = meminfo.get("Cached", 0)
    needed = float(utilization) * total + float(margin_gib) * GIB
    figures = {
        "node": node,
        "mem_total_gib": round(gib(total), 1),
        "mem_available_gib": round(gib(available), 1),
        "needed_gib": round(gib(needed), 1),
        "page_cache_gib": round(gib(cached), 1),
        "headroom_gib": round(gib(available - needed), 1),
    }
    if available < needed:
        fix = []
        if cached > GIB:
            fix.append("drop the page cache (%.1f GiB cached): run sparkfleet-cleanup" % gib(cached))
        fix.append("lower gpu_memory_utilization below %.2f" % max(0.0, (available - margin_gib * GIB) / total))
        fix.append("reboot the node if memory is still held by the driver after a stopped container "
                   "(only a reboot frees it)")
        raise PreflightFailure(
            "memory preflight failed on %s: MemAvailable %.1f GiB < needed %.1f GiB "
            "(gpu_memory_utilization %.2f x MemTotal %.1f GiB + %.1f GiB margin). Fix: %s."
            % (node, gib(available), gib(needed), float(utilization), gib(total), float(margin_gib),
               "; or ".join(fix))
        )
    return figures


def tighter_node(results):
    """Of per-node figures, the one with the least headroom (it decides for the pair)."""
    return min(results, key=lambda r: r["headroom_gib"])


def main(argv):
    import argparse
    parser = argparse.ArgumentParser(prog="sparkfleet-preflight",
                                     description="Check unified memory before vLLM starts.")
    parser.add_argument("--utilization", type=float, required=True)
    parser.add_argument("--margin-gib", type=float, default=2.0)
    parser.add_argument("--meminfo", default="/proc/meminfo")
    parser.add_argument("--node", default=None)
    args = parser.parse_args(argv)
    import socket
    node = args.node or socket.gethostname()
    with open(args.meminfo, encoding="ascii") as handle:
        meminfo = parse_meminfo(handle.read())
    try:
        figures = check(meminfo, args.utilization, args.margin_gib, node)
    except PreflightFailure as exc:
        sys.stderr.write("%s\n" % exc)
        return 1
    sys.stdout.write("memory preflight ok on %(node)s: MemAvailable %(mem_available_gib)s GiB >= "
                     "needed %(needed_gib)s GiB (headroom %(headroom_gib)s GiB)\n" % figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
