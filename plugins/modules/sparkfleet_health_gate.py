#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: decide whether a vLLM head is healthy the way a user would."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_health_gate
short_description: Gate a vLLM endpoint on real, clean completions
description:
  - Runs on the head, so it works when the API binds 127.0.0.1.
  - Waits for C(/health) within a deadline sized for a cold start, checks
    C(/v1/models), a deterministic completion at temperature 0, clean output
    (no CJK drift, repetition loops or leaked tool markup) over concurrent
    requests, the KV-cache size from the start-up log, and optionally the
    speculative-decoding acceptance from C(/metrics).
  - Every failure names the check, the host and what was seen.
options:
  base_url: {type: str, default: "http://127.0.0.1:8000", description: API root on the head.}
  served_model_name: {type: str, required: true, description: Name clients use.}
  max_model_len: {type: int, description: Context the profile sets; checked in /v1/models.}
  api_key: {type: str, no_log: true, description: Bearer token if the API requires one.}
  startup_timeout: {type: int, default: 1200, description: Seconds to wait for /health.}
  request_timeout: {type: int, default: 120, description: Seconds per request.}
  probes:
    type: list
    elements: dict
    description: Prompts with an expected substring (name, prompt, expect, max_tokens).
  concurrency: {type: int, default: 4, description: Concurrent clean-output completions.}
  log_unit: {type: str, description: systemd unit whose journal holds the KV-cache line.}
  min_kv_cache_tokens: {type: int, description: Floor for the KV-cache size.}
  min_spec_acceptance: {type: float, description: Floor for accepted tokens per draft step.}
  node_name: {type: str, description: Host name used in messages.}
  record_file:
    type: path
    description: >-
      Write the outcome here (ok, the failed check, what was seen, time) for playbooks/status.yml.
      A record of the run, not a configuration change: it never makes the task changed.
"""

RETURN = r"""
passed: {description: Checks that passed, in order., returned: always, type: list}
kv_cache_tokens: {description: KV-cache size from the log., returned: when checked, type: int}
spec_acceptance: {description: Accepted tokens per draft step., returned: when checked, type: float}
seconds_to_healthy: {description: Time /health took to answer 200., returned: success, type: float}
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.sparkfleet_health import DEFAULT_PROBES, GateFailure, HealthGate


def make_transport(base_url, api_key):
    def transport(method, path, body, timeout):
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = "Bearer %s" % api_key
        data = json.dumps(body) if body is not None else None
        try:
            resp = open_url(base_url.rstrip("/") + path, method=method, data=data, headers=headers,
                            timeout=timeout, validate_certs=False)
            return resp.getcode(), resp.read().decode("utf-8", "replace")
        except HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace") if exc.fp else ""
        except URLError as exc:
            raise OSError(str(exc.reason))
        except (OSError, ValueError) as exc:
            raise OSError(str(exc))
    return transport


def record(path, **outcome):
    """Keep the gate's outcome for the status table; a failure to write must not fail the gate."""
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(dict(outcome, time=time.time()), handle, sort_keys=True)
        os.chmod(path + ".tmp", 0o644)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


def main():
    module = AnsibleModule(
        argument_spec=dict(
            base_url=dict(type="str", default="http://127.0.0.1:8000"),
            served_model_name=dict(type="str", required=True),
            max_model_len=dict(type="int"),
            api_key=dict(type="str", no_log=True),
            startup_timeout=dict(type="int", default=1200),
            request_timeout=dict(type="int", default=120),
            probes=dict(type="list", elements="dict"),
            concurrency=dict(type="int", default=4),
            log_unit=dict(type="str"),
            min_kv_cache_tokens=dict(type="int"),
            min_spec_acceptance=dict(type="float"),
            node_name=dict(type="str"),
            record_file=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    node = p["node_name"] or "this head"
    if module.check_mode:
        module.exit_json(changed=False, skipped=True, msg="health gate does not run in check mode", passed=[])
    gate = HealthGate(make_transport(p["base_url"], p["api_key"]), p["served_model_name"],
                      clock=time.monotonic, sleep=time.sleep, max_model_len=p["max_model_len"],
                      probes=p["probes"] or list(DEFAULT_PROBES), concurrency=p["concurrency"],
                      request_timeout=p["request_timeout"])
    result = {"changed": False}
    try:
        result["seconds_to_healthy"] = round(gate.wait_healthy(p["startup_timeout"]), 1)
        gate.check_models()
        gate.check_probes()
        gate.check_clean()
        if p["min_kv_cache_tokens"] is not None and p["log_unit"]:
            rc, out, err = module.run_command(
                ["journalctl", "--unit", p["log_unit"], "--boot", "--no-pager", "--output", "cat"])
            if rc != 0:
                raise GateFailure("kv-cache", "could not read the journal of %s: %s" % (p["log_unit"], err.strip()))
            # The last KV-cache line in this boot's journal is the current run's.
            result["kv_cache_tokens"] = gate.check_kv_cache(out, p["min_kv_cache_tokens"])
        if p["min_spec_acceptance"] is not None:
            result["spec_acceptance"] = round(gate.check_spec_acceptance(p["min_spec_acceptance"]), 3)
    except GateFailure as exc:
        record(p["record_file"], ok=False, check=exc.check, seen=str(exc.seen)[:500], passed=gate.passed)
        module.fail_json(msg="health gate failed on %s: %s" % (node, exc), check=exc.check,
                         seen=exc.seen, passed=gate.passed, **result)
    result["passed"] = gate.passed
    record(p["record_file"], ok=True, check=None, passed=gate.passed,
           **{key: result[key] for key in ("kv_cache_tokens", "spec_acceptance", "seconds_to_healthy") if key in result})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
