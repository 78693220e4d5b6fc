#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: fail fast, with numbers, when a Spark lacks memory to start vLLM."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_memory_preflight
short_description: Compare MemAvailable with gpu_memory_utilization x MemTotal plus a margin
description:
  - Reads meminfo (a parameter, so tests can feed crafted files) and fails with
    both numbers, the node and the fix when the node cannot start vLLM.
options:
  meminfo: {type: path, default: /proc/meminfo, description: meminfo file to read.}
  utilization: {type: float, required: true, description: The profile's gpu_memory_utilization.}
  margin_gib: {type: float, default: 2.0, description: Extra GiB that must stay free.}
  node: {type: str, description: Node name for messages.}
"""

RETURN = r"""
figures:
  description: mem_total_gib, mem_available_gib, needed_gib, page_cache_gib, headroom_gib, node.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_memory import PreflightFailure, check, parse_meminfo


def main():
    module = AnsibleModule(
        argument_spec=dict(
            meminfo=dict(type="path", default="/proc/meminfo"),
            utilization=dict(type="float", required=True),
            margin_gib=dict(type="float", default=2.0),
            node=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        with open(p["meminfo"], encoding="ascii") as handle:
            meminfo = parse_meminfo(handle.read())
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cannot read %s: %s" % (p["meminfo"], exc))
    node = p["node"] or "this node"
    try:
        figures = check(meminfo, p["utilization"], p["margin_gib"], node)
    except PreflightFailure as exc:
        total, available = meminfo["MemTotal"], meminfo["MemAvailable"]
        needed = p["utilization"] * total + p["margin_gib"] * 1024 ** 3
        module.fail_json(msg=str(exc), figures={
            "node": node, "mem_total_gib": round(total / 1024.0 ** 3, 1),
            "mem_available_gib": round(available / 1024.0 ** 3, 1),
            "needed_gib": round(needed / 1024.0 ** 3, 1),
            "headroom_gib": round((available - needed) / 1024.0 ** 3, 1)})
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, figures=figures)


if __name__ == "__main__":
    main()
