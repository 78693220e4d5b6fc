#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: the start-up phase of a vLLM rank, read from its unit's journal."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_start_progress
short_description: Report where a starting vLLM rank is (rendezvous, weights, KV cache, CUDA graphs, API)
description:
  - Reads the journal of the unit's current invocation and names the phase from the start-up
    lines of the pinned vLLM release (O(log_lines), from its fingerprint), with the shard count
    while weights load. With O(health_url), C(/health) answering 200 is phase C(api_up).
  - Waits at most O(wait) seconds and returns early when the phase changes, the API comes up or
    the unit stops or fails, so a play that calls it in a loop prints a line at least that often.
  - Changes nothing, except with O(record_seconds), which stores how long this start took in
    O(history_file) (0600) under the image and profile of O(launch_file), for the expected
    remaining time of the next start.
options:
  unit: {type: str, required: true, description: The systemd unit (without .service).}
  role: {type: str, choices: [head, worker], default: head, description: The rank's role, for the phase names.}
  log_lines:
    type: dict
    required: true
    description: Fingerprint log line texts by key (filter sparkfleet_fingerprint_log_lines).
  health_url: {type: str, description: The head's /health URL (it needs no API key).}
  wait: {type: int, default: 20, description: Seconds to wait at most for a change.}
  launch_file: {type: path, description: The rank's launch file (its image_id and profile key the history).}
  history_file: {type: path, description: "Recorded start times (sparkfleet_start_history_file), kept on the head; without it no expected time is given."}
  record_seconds: {type: float, description: Record this start's duration instead of reading the phase.}
"""

RETURN = r"""
phase: {description: Phase key (not_running, restarting, starting, rendezvous, loading, profiling, kv_cache_ready, cuda_graphs, engine_ready, api_starting, api_up, failed)., returned: always, type: str}
detail: {description: Shard count while loading weights., returned: always, type: str}
text: {description: The phase in words., returned: always, type: str}
elapsed_s: {description: Seconds since the unit was started., returned: always, type: float}
active_state: {description: The unit's ActiveState/SubState., returned: always, type: str}
stopped: {description: The unit is not running or has failed (it is not starting any more)., returned: always, type: bool}
last_lines: {description: The last relevant log lines (errors, warnings, start-up markers)., returned: always, type: list}
expected_s: {description: How long the last recorded start of this image and profile took., returned: when recorded, type: float}
"""

import json
import os
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible.module_utils.sparkfleet_progress import history_key, phase_of, phase_text, relevant_lines


def unit_state(unit):
    fields = ("ActiveState", "SubState", "InvocationID", "InactiveExitTimestampMonotonic")
    out = subprocess.run(["systemctl", "show", unit + ".service", "-p", ",".join(fields)],
                         capture_output=True, text=True, check=False).stdout
    state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {field: state.get(field, "") for field in fields}


def journal(invocation):
    if not invocation:
        return ""
    return subprocess.run(["journalctl", "_SYSTEMD_INVOCATION_ID=%s" % invocation, "--no-pager", "--output", "cat"],
                          capture_output=True, text=True, check=False).stdout


def api_up(url):
    try:
        return open_url(url, method="GET", timeout=3, validate_certs=False).getcode() == 200
    except Exception:  # pylint: disable=broad-except  (any refusal means "not up yet")
        return False


def read_history(path):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def launch_key(path):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            launch = json.load(handle)
        return history_key(launch.get("image_id"), launch.get("profile"))
    except (OSError, ValueError, AttributeError):
        return None


def snapshot(p):
    state = unit_state(p["unit"])
    text = journal(state["InvocationID"])
    running = state["ActiveState"] in ("active", "activating", "reloading")
    # auto-restart is systemd bringing a crashed rank back (a worker that lost
    # its head rejoins the new one this way): still starting, not stopped.
    failed = state["ActiveState"] == "failed"
    restarting = state["SubState"] == "auto-restart"
    phase, detail = phase_of(text, p["log_lines"])
    if restarting:
        reached = phase_text(phase, p["role"], detail) if phase != "starting" else ""
        phase, detail = "restarting", ("after: " + reached if reached else "")
    elif failed or not running:
        # Name the phase the rank had reached when it stopped, if any.
        reached = phase_text(phase, p["role"], detail) if phase != "starting" else ""
        phase, detail = ("failed" if failed else "not_running"), ("after: " + reached if reached else "")
    elif p["health_url"] and api_up(p["health_url"]):
        # /health answers only once the engine is up (its lines may have left the journal long ago).
        phase, detail = "api_up", ""
    started = state["InactiveExitTimestampMonotonic"]
    elapsed = max(0.0, time.monotonic() - int(started) / 1e6) if started.isdigit() and int(started) else 0.0
    return {"phase": phase, "detail": detail, "elapsed_s": round(elapsed, 1),
            "active_state": "%s/%s" % (state["ActiveState"], state["SubState"]),
            "stopped": phase in ("failed", "not_running"), "log": text}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            unit=dict(type="str", required=True),
            role=dict(type="str", default="head", choices=["head", "worker"]),
            log_lines=dict(type="dict", required=True),
            health_url=dict(type="str"),
            wait=dict(type="int", default=20),
            launch_file=dict(type="path"),
            history_file=dict(type="path"),
            record_seconds=dict(type="float"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    key = launch_key(p["launch_file"]) if p["launch_file"] else None
    history = read_history(p["history_file"]) if p["history_file"] else {}
    if p["record_seconds"] is not None:
        if not p["history_file"]:
            module.fail_json(msg="record_seconds needs history_file")
        if not key:
            module.exit_json(changed=False, msg="no launch file to key the record by")
        history[key] = {"seconds": round(p["record_seconds"], 1), "at": int(time.time())}
        if not module.check_mode:
            os.makedirs(os.path.dirname(p["history_file"]), exist_ok=True)
            tmp = p["history_file"] + ".tmp"
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
                json.dump(history, handle, indent=1, sort_keys=True)
            os.replace(tmp, p["history_file"])
        module.exit_json(changed=True, key=key, seconds=history[key]["seconds"])

    first = snapshot(p)
    current = first
    deadline = time.monotonic() + max(0, p["wait"])
    while time.monotonic() < deadline and not current["stopped"] and current["phase"] != "api_up":
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
        current = snapshot(p)
        if (current["phase"], current["detail"]) != (first["phase"], first["detail"]):
            break
    result = {k: v for k, v in current.items() if k != "log"}
    result["text"] = phase_text(current["phase"], p["role"], current["detail"])
    result["last_lines"] = relevant_lines(current["log"], p["log_lines"])
    expected = (history.get(key) or {}).get("seconds") if key else None
    if expected:
        result["expected_s"] = expected
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
