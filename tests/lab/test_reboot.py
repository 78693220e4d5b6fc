"""Reboot safety: restarting lab node containers brings the pair back to a
healthy endpoint without running Ansible."""

import json
import re
import subprocess
import time

from conftest import api_key, playbook, wait_serving
from loadgen import LoadGenerator


def restart(*containers):
    subprocess.run(["docker", "restart", "--time", "20"] + list(containers), check=True, capture_output=True)


def test_both_nodes_reboot(lab, record_property):
    head, worker = lab["a"]["head"], lab["a"]["worker"]
    started = time.monotonic()
    restart(head["container"], worker["container"])
    wait_serving(head["ansible_host"], deadline_s=300)
    total = time.monotonic() - started
    record_property("pair_a_both_rebooted_seconds_to_healthy", round(total, 1))
    print("pair a, both nodes rebooted: healthy after %.1f s" % total)


def test_head_only_reboot_waits_for_its_worker(lab, record_property):
    head = lab["b"]["head"]
    started = time.monotonic()
    restart(head["container"])
    wait_serving(head["ansible_host"], deadline_s=300)
    total = time.monotonic() - started
    record_property("pair_b_head_rebooted_seconds_to_healthy", round(total, 1))
    print("pair b, head rebooted: healthy after %.1f s" % total)


def _started_at(container):
    return subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", container],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_rolling_reboot_under_load_drops_no_request(lab, endpoint, record_property):
    """playbooks/rolling_reboot.yml reboots every node, one pair at a time, while
    clients keep sending through the endpoint: none of their requests fails."""
    nodes = [node["container"] for pair in lab.values() for node in pair.values()]
    before = {n: _started_at(n) for n in nodes}
    load = LoadGenerator("http://%s:8000" % endpoint, workers=2, max_requests=100000, max_seconds=900,
                         api_key=api_key()).start()
    started = time.monotonic()
    rc, output = playbook("playbooks/rolling_reboot.yml", "-e", json.dumps({"spark_health_startup_timeout": 120}))
    total = time.monotonic() - started
    summary = load.stop()
    assert rc == 0, output[-4000:]
    pairs = dict(re.findall(r"pair (\w+) rebooted and gated in ([\d.]+) s", re.sub(r"\n\s+", " ", output)))
    assert sorted(pairs) == sorted(lab), output[-3000:]
    assert all(_started_at(n) != before[n] for n in nodes), "a node was not rebooted"
    figures = {"rolling_reboot_s": round(total, 1), "per_pair_s": pairs,
               "requests": {k: summary[k] for k in ("sent", "failed", "p50_s", "p99_s")}}
    record_property("rolling_reboot", json.dumps(figures))
    print("rolling reboot under load: %s" % json.dumps(figures))
    assert summary["sent"] > 0 and summary["failed"] == 0, summary["failures"][:5]
