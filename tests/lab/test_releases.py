"""A fleet moving to a new vLLM release: pair a is rolled to another pinned release
(host variables, as an operator sets them for one pair), under load, while pair b
stays on the fleet's; the endpoint serves both, status.yml shows both releases,
the performance gate compares pair a with its own last known good on the old
release. Then pair a is rolled back to the fleet's release."""

import json
import os
import re
import subprocess
import threading
import time

import yaml

from conftest import FLEET_RELEASE, PLAYBOOK, ROOT, api_key, playbook
from loadgen import LoadGenerator

PAIR_A = "localhost,lab-endpoint,spark-a1,spark-a2"


def _releases():
    default = FLEET_RELEASE
    with open(os.path.join(ROOT, "files", "vllm", "releases.yml"), encoding="utf-8") as handle:
        pinned = sorted(yaml.safe_load(handle)["releases"])
    return default, next(v for v in pinned if v != default)


def _status(tmp_path):
    report = tmp_path / "status.json"
    rc, output = playbook("playbooks/status.yml", "-e", "sparkfleet_status_json=%s" % report, timeout=120)
    assert rc == 0, output[-3000:]
    return {row["pair"]: row for row in json.loads(report.read_text())["pairs"]}


def _roll(*extra):
    process = subprocess.Popen([PLAYBOOK, "-i", "inventory/lab"] + list(extra)
                               + ["playbooks/rolling_restart.yml", "--limit", PAIR_A,
                                  "-e", json.dumps({"spark_health_startup_timeout": 120})],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    return process, output, reader


HISTORY = os.path.join(ROOT, ".cache", "benchmarks", "lab", "history.jsonl")


def _known_good_a():
    """Pair a's passing gate records (what its performance gate compares with)."""
    if not os.path.exists(HISTORY):
        return []
    with open(HISTORY, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return [r for r in records if r.get("pair") == "a" and r.get("passed") and r.get("profile") == "balanced"]


def test_one_pair_on_another_release_under_load_then_back(lab, endpoint, tmp_path, record_property):
    default, other = _releases()
    if not _known_good_a():
        # A lab with no history yet: give pair a its last known good on the fleet's release first.
        first, first_output, first_reader = _roll()
        first.wait(timeout=900)
        first_reader.join(30)
        assert first.returncode == 0, "".join(first_output)[-4000:]
    known_good = _known_good_a()[-1]
    # What an operator writes for the canary pair (host_vars or a group of its two nodes).
    canary = tmp_path / "canary.yml"
    canary.write_text(yaml.safe_dump({"all": {"hosts": {
        lab["a"]["head"]["name"]: {"sparkfleet_vllm_version": other},
        lab["a"]["worker"]["name"]: {"sparkfleet_vllm_version": other}}}}))
    url = "http://%s:8000" % endpoint
    load = LoadGenerator(url, workers=2, max_requests=100000, max_seconds=900, api_key=api_key()).start()
    started = time.monotonic()
    process, output, reader = _roll("-i", str(canary))
    try:
        process.wait(timeout=900)
    finally:
        reader.join(30)
        summary = load.stop()
    rolled_s = time.monotonic() - started
    text = "".join(output)
    try:
        rows = _status(tmp_path)
        figures = {"release_a": rows["a"]["provenance"], "release_b": rows["b"]["provenance"],
                   "rollout_s": round(rolled_s, 1),
                   "requests": {k: summary[k] for k in ("sent", "failed", "p50_s", "p99_s")}}
        print("pair a on vLLM %s, pair b on %s, under load:" % (other, default), json.dumps(figures))
        record_property("rollout_s", figures["rollout_s"])
        record_property("failed", summary["failed"])
        assert process.returncode == 0, text[-4000:]
        assert summary["failed"] == 0 and summary["sent"] >= 50, summary["failures"]
        # Pair a's image was built for its release by its own head, pair b's left alone.
        assert rows["a"]["provenance"].startswith("vLLM %s, built " % other), rows["a"]
        assert rows["b"]["provenance"].startswith("vLLM %s, built " % default), rows["b"]
        for pair in ("a", "b"):
            assert rows[pair]["serving"] == "yes" and rows[pair]["endpoint"] == "ready", rows[pair]
            assert rows[pair]["images_agree"], rows[pair]
        # The gate measured the new release against the pair's figures on the old one.
        unfolded = re.sub(r"\n\s+", " ", text)
        old_image = known_good["image_id"].replace("sha256:", "")[:12]
        # (the YAML callback doubles the quote inside its single-quoted message)
        assert re.search(r"from pair a'{1,2}s last known good \([^)]*image %s\)" % old_image, unfolded), \
            unfolded[-4000:]
        assert _known_good_a()[-1]["image_id"] != known_good["image_id"]
    finally:
        # Back to the fleet's release, so the lab is as the other tests expect it.
        back, back_output, back_reader = _roll()
        back.wait(timeout=900)
        back_reader.join(30)
        assert back.returncode == 0, "".join(back_output)[-4000:]
    rows = _status(tmp_path)
    assert rows["a"]["provenance"].startswith("vLLM %s, built " % default), rows["a"]
