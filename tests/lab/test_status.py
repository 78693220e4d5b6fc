"""playbooks/status.yml: one row per pair, read-only, quick; a drained pair reads as drained,
and a head the endpoint hosts disagree on reads as split."""

import json
import os
import re
import subprocess
import time

from conftest import FLEET_RELEASE, ROOT, endpoint_group, playbook


def _endpoint_state(server, state, hosts="sparkfleet_endpoint"):
    """Set a head's state on the endpoint hosts (every one by default)."""
    result = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible"), "-i", "inventory/lab", hosts,
                             "-m", "sparkfleet_haproxy", "-a",
                             "socket=/run/haproxy/admin.sock backend=vllm_heads server=%s state=%s" % (server, state)],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_status_shows_a_drained_pair_and_changes_nothing(lab, tmp_path):
    report = tmp_path / "status.json"
    _endpoint_state("spark-a1", "drain")
    try:
        started = time.monotonic()
        rc, output = playbook("playbooks/status.yml", "-e", "sparkfleet_status_json=%s" % report, timeout=120)
        took = time.monotonic() - started
    finally:
        _endpoint_state("spark-a1", "ready")
    print("status of the lab (2 pairs + endpoint) in %.1f s" % took)
    assert rc == 0, output[-3000:]
    assert re.findall(r"changed=(\d+)", output) and set(re.findall(r"changed=(\d+)", output)) == {"0"}
    rows = {row["pair"]: row for row in json.loads(report.read_text())["pairs"]}
    assert rows["a"]["endpoint"] == "drain" and rows["a"]["serving"] == "NO (endpoint drain)", rows["a"]
    b = rows["b"]
    assert b["serving"] == "yes" and b["endpoint"] == "ready" and b["images_agree"], b
    assert b["profile"] == "balanced" and b["last_gate"].startswith("passed"), b
    assert re.fullmatch(r"[\d,]+", b["kv_cache_tokens"]) and re.fullmatch(r"\d+/\d+", b["requests"]), b
    assert b["provenance"].startswith("vLLM %s, built " % FLEET_RELEASE), b
    table = output[output.index("Fleet status"):]
    assert re.search(r"\n\s+a\s+NO \(endpoint drain\)\s+drain\s+balanced", table), table[:1500]
    assert took < 10, "status took %.1f s (the lab's bound is 10 s)" % took


def test_status_shows_a_head_the_endpoint_hosts_disagree_on(lab, tmp_path):
    report = tmp_path / "status.json"
    hosts = sorted(endpoint_group()["hosts"])
    _endpoint_state("spark-b1", "drain", hosts=hosts[-1])
    try:
        rc, output = playbook("playbooks/status.yml", "-e", "sparkfleet_status_json=%s" % report, timeout=120)
    finally:
        _endpoint_state("spark-b1", "ready")
    assert rc == 0, output[-3000:]
    rows = {row["pair"]: row for row in json.loads(report.read_text())["pairs"]}
    split = "split (%s)" % ", ".join("%s %s" % (host, "drain" if host == hosts[-1] else "ready") for host in hosts)
    assert rows["b"]["endpoint"] == split and rows["b"]["serving"] == "NO (endpoint %s)" % split, rows["b"]
    assert rows["a"]["endpoint"] == "ready" and rows["a"]["serving"] == "yes", rows["a"]
