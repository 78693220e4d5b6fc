#!/usr/bin/python
# -*- coding: utf-8 -*-
"""The benchmark history on the controller: the gate's reference, new records, pictures and report."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_benchmark_history
short_description: Keep sparkfleet's benchmark history, give the gate its reference, draw the report
description:
  - Runs on the controller. The history is O(directory)/history.jsonl, one JSON record per
    benchmark (keyed by pair, profile, image ID, model revision and time).
  - O(action=reference) returns what a pair must reach under O(profile) at O(shape) (its last
    passing record, else the profile's stated figures O(expected)) and, given O(figures) and
    O(share), the gate's verdict.
  - O(action=record) appends O(records), then redraws one PNG per profile and report.md.
  - O(action=gate) is reference and record in one call, for the rollout's performance gate. The
    verdict on O(figures) is appended to the history with O(record). The pictures are redrawn
    only for a failed verdict or with O(draw); a rollout draws once at its end.
  - With O(provisional), a failed gate verdict is returned but not recorded. The caller
    confirms it with a second benchmark and records that one, so a transient stall does not
    roll back a good configuration.
  - O(action=draw) redraws the pictures of every profile in the history, and report.md, unless
    report.md was written after the last record (nothing new to draw).
options:
  directory: {description: Where the history, the PNGs and report.md live., type: path, required: true}
  action: {description: What to do., type: str, choices: [reference, record, gate, draw], required: true}
  pair: {description: Pair to look up (reference)., type: str}
  profile: {description: Profile to look up (reference)., type: str}
  profile_name: {description: Profile name for messages., type: str}
  shape: {description: The benchmark's input_len, output_len and concurrency (reference)., type: dict}
  expected: {description: The profile's stated figures, used without history., type: dict, default: {}}
  figures: {description: Figures to judge against the reference., type: dict}
  share: {description: Share of the reference each gated figure must reach., type: float, default: 0.9}
  metrics: {description: Figures the gate compares., type: list, elements: str, default: [single_stream_tok_s, aggregate_tok_s]}
  records: {description: Records to append (record)., type: list, elements: dict, default: []}
  record: {description: The benchmark's record, to which the gate adds its verdict (gate)., type: dict}
  draw: {description: Redraw the pictures after a passing gate too (gate)., type: bool, default: false}
  provisional: {description: Return a failed gate verdict without recording it (gate)., type: bool, default: false}
  fleet: {description: Fleet name for the report's title., type: str, default: fleet}
"""

RETURN = r"""
reference: {description: The reference figures and where they come from (or null)., type: dict, returned: action=reference}
passed: {description: Whether O(figures) reach O(share) of the reference., type: bool, returned: "action=reference with figures, action=gate"}
verdict: {description: One line per gated figure, both figures named., type: list, returned: "action=reference with figures, action=gate"}
pictures: {description: PNG paths written., type: list, returned: "action=record, gate or draw"}
recorded: {description: Whether the gate's verdict was appended to the history., type: bool, returned: action=gate}
report: {description: Path of report.md (empty when nothing was drawn)., type: str, returned: "action=record, gate or draw"}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils import sparkfleet_benchmark as bench


def main():
    module = AnsibleModule(
        argument_spec=dict(
            directory=dict(type="path", required=True),
            action=dict(type="str", choices=["reference", "record", "gate", "draw"], required=True),
            pair=dict(type="str"),
            profile=dict(type="str"),
            profile_name=dict(type="str"),
            shape=dict(type="dict"),
            expected=dict(type="dict", default={}),
            figures=dict(type="dict"),
            share=dict(type="float", default=0.9),
            metrics=dict(type="list", elements="str", default=list(bench.GATE_METRICS)),
            records=dict(type="list", elements="dict", default=[]),
            record=dict(type="dict"),
            draw=dict(type="bool", default=False),
            provisional=dict(type="bool", default=False),
            fleet=dict(type="str", default="fleet"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    history_file = os.path.join(p["directory"], "history.jsonl")
    unknown = sorted(set(p["metrics"]) - set(bench.GATE_METRICS))
    if unknown:
        module.fail_json(msg="sparkfleet_benchmark_history: unknown gate metric(s) %s; known: %s"
                         % (", ".join(unknown), ", ".join(bench.GATE_METRICS)))
    if p["action"] in ("reference", "gate"):
        shape = {k: int(v) for k, v in (p["shape"] or {}).items()}
        ref = bench.reference(bench.load_history(history_file), p["pair"], p["profile"], shape,
                              p["expected"], p["profile_name"])
        result = dict(changed=False, reference=ref)
        if p["action"] == "gate" and (p["figures"] is None or p["record"] is None):
            module.fail_json(msg="sparkfleet_benchmark_history: action=gate needs figures and record")
        if p["figures"] is not None:
            if not 0 < p["share"] <= 1:
                module.fail_json(msg="sparkfleet_benchmark_history: share must be in (0, 1], got %s" % p["share"])
            result["passed"], result["verdict"] = bench.gate(p["figures"], ref, p["share"], p["metrics"])
        if p["action"] == "reference":
            module.exit_json(**result)
        if p["provisional"] and not result["passed"]:
            module.exit_json(recorded=False, **result)
        record = dict(p["record"], kind="gate", passed=result["passed"], verdict=result["verdict"], reference=ref)
        result["recorded"] = True
        result.update(keep(module, history_file, [record], draw=p["draw"] or not result["passed"]))
        module.exit_json(**result)
    if p["action"] == "draw":
        history = bench.load_history(history_file)
        profiles = sorted({str(r.get("profile")) for r in history if r.get("profile")})
        report_file = os.path.join(p["directory"], "report.md")
        # Pictures drawn after the last record (a failed gate draws at once) are current.
        current = (os.path.exists(report_file) and os.path.exists(history_file)
                   and os.path.getmtime(report_file) >= os.path.getmtime(history_file))
        if module.check_mode or not profiles or current:
            module.exit_json(changed=False, pictures=[], report=report_file if current else "")
        module.exit_json(changed=True, **draw_pictures(module, history, profiles))
    module.exit_json(**keep(module, history_file, p["records"], draw=True))


def keep(module, history_file, records, draw):
    """Append records; redraw the pictures of their profiles when asked."""
    if not records:
        return dict(changed=False, pictures=[], report="")
    if module.check_mode:
        return dict(changed=True, pictures=[], report="", msg="would append %d record(s)" % len(records))
    os.makedirs(module.params["directory"], mode=0o755, exist_ok=True)
    bench.append_history(history_file, records)
    if not draw:
        return dict(changed=True, pictures=[], report="", history=history_file)
    history = bench.load_history(history_file)
    profiles = sorted({str(r.get("profile")) for r in records if r.get("profile")})
    return dict(changed=True, history=history_file, **draw_pictures(module, history, profiles))


def draw_pictures(module, history, profiles):
    directory = module.params["directory"]
    pictures = []
    try:
        for profile in profiles:
            path = os.path.join(directory, bench.png_name(profile))
            bench.draw_profile(history, profile, path)
            pictures.append(path)
    except ImportError as exc:
        module.fail_json(msg="drawing the benchmark history needs matplotlib on the controller "
                             "(pyproject.toml installs it; scripts/bootstrap): %s" % exc)
    report_file = os.path.join(directory, "report.md")
    with open(report_file + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(bench.report_text(history, module.params["fleet"]))
    os.replace(report_file + ".tmp", report_file)
    return dict(pictures=pictures, report=report_file)


if __name__ == "__main__":
    main()
