#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: one node's serving status, for playbooks/status.yml. Changes nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_node_status
short_description: Read one node's serving status (unit, image, last-known-good, API, metrics, last gate)
description:
  - Reads, and changes nothing. The unit's state and uptime, the image and profile of its launch
    file with the image's provenance labels, the last-known-good record, the last health gate
    record, and on a head C(/health), C(/metrics) (requests running and waiting, speculative
    acceptance) and the KV cache size its current start logged.
  - Every reading has a short timeout; what cannot be read is reported as absent, not fatal.
options:
  unit: {type: str, required: true, description: The serving unit (without .service).}
  launch_file: {type: path, required: true, description: The unit's launch file (image_id, profile).}
  lkg_record: {type: path, description: The last-known-good record (heads).}
  gate_record: {type: path, description: The last health gate record (heads).}
  base_url: {type: str, description: "The head's API root; omit on workers."}
  api_key: {type: str, no_log: true, description: Bearer token for C(/metrics) if the API requires one.}
  timeout: {type: int, default: 3, description: Seconds per HTTP request.}
"""

RETURN = r"""
active_state: {description: ActiveState/SubState of the unit., returned: always, type: str}
uptime_s: {description: Seconds since the unit became active., returned: when active, type: float}
image_id: {description: The image of the launch file., returned: always, type: str}
profile: {description: The launch profile., returned: always, type: str}
labels: {description: The image's io.sparkfleet.* labels., returned: always, type: dict}
lkg: {description: "The last-known-good record, with time as epoch seconds.", returned: when recorded, type: dict}
gate: {description: "The last gate record (ok, check, time).", returned: when recorded, type: dict}
api_up: {description: The head's /health answered 200., returned: always, type: bool}
metrics: {description: Request gauges and KV cache usage from /metrics., returned: when read, type: dict}
spec_acceptance: {description: Accepted tokens per draft step since start., returned: when counted, type: float}
kv_cache_tokens: {description: KV cache size the current start logged., returned: when logged, type: int}
now: {description: The node's clock (epoch seconds)., returned: always, type: float}
"""

import datetime
import json
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible.module_utils.sparkfleet_health import kv_cache_tokens, parse_metrics, spec_acceptance

GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")


def read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError, TypeError):
        return None


def epoch(iso):
    """ISO time (naive means UTC, as Ansible's now(utc=true) writes it) -> epoch seconds."""
    try:
        moment = datetime.datetime.fromisoformat(str(iso))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def unit_state(unit):
    fields = ("ActiveState", "SubState", "InvocationID", "ActiveEnterTimestampMonotonic")
    out = subprocess.run(["systemctl", "show", unit + ".service", "-p", ",".join(fields)],
                         capture_output=True, text=True, check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def monotonic_now():
    with open("/proc/uptime", encoding="ascii") as handle:
        return float(handle.read().split()[0])


def image_labels(image_id):
    if not image_id:
        return {}
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image_id],
                         capture_output=True, text=True, check=False)
    try:
        labels = json.loads(out.stdout) if out.returncode == 0 else {}
    except ValueError:
        labels = {}
    return {key: value for key, value in (labels or {}).items() if key.startswith("io.sparkfleet.")}


def http_get(url, api_key, timeout):
    headers = {"Authorization": "Bearer %s" % api_key} if api_key else {}
    try:
        response = open_url(url, method="GET", headers=headers, timeout=timeout, validate_certs=False)
        return response.getcode(), response.read().decode("utf-8", "replace")
    except Exception:  # pylint: disable=broad-except  # any failure reads as "not answering"
        return None, ""


def main():
    module = AnsibleModule(
        argument_spec=dict(
            unit=dict(type="str", required=True),
            launch_file=dict(type="path", required=True),
            lkg_record=dict(type="path"),
            gate_record=dict(type="path"),
            base_url=dict(type="str"),
            api_key=dict(type="str", no_log=True),
            timeout=dict(type="int", default=3),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False, "now": time.time()}
    state = unit_state(p["unit"])
    result["active_state"] = "%s/%s" % (state.get("ActiveState", "unknown"), state.get("SubState", ""))
    entered = int(state.get("ActiveEnterTimestampMonotonic") or 0)
    if state.get("ActiveState") == "active" and entered:
        result["uptime_s"] = round(monotonic_now() - entered / 1e6, 1)
    launch = read_json(p["launch_file"]) or {}
    result["image_id"] = launch.get("image_id", "")
    result["profile"] = launch.get("profile", "")
    result["labels"] = image_labels(result["image_id"])
    lkg = read_json(p["lkg_record"]) if p["lkg_record"] else None
    if lkg:
        result["lkg"] = dict(lkg, time=epoch(lkg.get("time")))
    gate = read_json(p["gate_record"]) if p["gate_record"] else None
    if gate:
        result["gate"] = gate
    result["api_up"] = False
    if p["base_url"]:
        base = p["base_url"].rstrip("/")
        result["api_up"] = http_get(base + "/health", None, p["timeout"])[0] == 200
        code, text = http_get(base + "/metrics", p["api_key"], p["timeout"]) if result["api_up"] else (None, "")
        if code == 200:
            metrics = parse_metrics(text)
            result["metrics"] = {name: metrics[name] for name in GAUGES if name in metrics}
            acceptance = spec_acceptance(metrics)
            if acceptance is not None:
                result["spec_acceptance"] = round(acceptance, 3)
        if state.get("InvocationID"):
            journal = subprocess.run(["journalctl", "_SYSTEMD_INVOCATION_ID=" + state["InvocationID"], "--no-pager",
                                      "--output", "cat"], capture_output=True, text=True, check=False).stdout
            tokens = kv_cache_tokens(journal)
            if tokens:
                result["kv_cache_tokens"] = tokens
    module.exit_json(**result)


if __name__ == "__main__":
    main()
