"""playbooks/benchmark.yml keeps a history with pictures, and a rollout that
answers correctly but slower is rolled back by the performance gate."""

import json
import os
import re
import time

import pytest

from conftest import ROOT, chat, docker_exec, main_pid, playbook

HISTORY_DIR = os.path.join(ROOT, ".cache", "benchmarks", "lab")
HISTORY = os.path.join(HISTORY_DIR, "history.jsonl")
ENV_FILE = "/etc/sparkfleet/sparkfleet-vllm-head.env"


def _history():
    with open(HISTORY, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def baseline(lab, endpoint):
    """benchmark.yml over the whole lab: every pair's last-known-good figures."""
    before = len(_history()) if os.path.exists(HISTORY) else 0
    started = time.monotonic()
    rc, output = playbook("playbooks/benchmark.yml")
    took = time.monotonic() - started
    assert rc == 0, output[-3000:]
    return {"output": output, "new": _history()[before:], "took": took}


def test_benchmark_playbook_writes_the_history_a_png_and_a_report(baseline):
    new = baseline["new"]
    assert sorted(r["pair"] for r in new) == ["a", "b", "endpoint"]
    for record in new:
        for key in ("time", "profile", "image_id", "model_revision", "shape", "tool", "figures"):
            assert key in record, record
        figures = record["figures"]
        assert figures["failed"] == 0 and figures["single_stream_tok_s"] > 0, record
        # The load on a pair ends within its bound.
        assert record["elapsed_s"] <= record["bound_s"], record
    pairs = {r["pair"]: r for r in new}
    # The simulator decodes 100 tok/s a stream; the endpoint spreads twice the load over two pairs.
    assert 70 <= pairs["a"]["figures"]["single_stream_tok_s"] <= 110
    assert pairs["endpoint"]["figures"]["aggregate_tok_s"] > pairs["a"]["figures"]["aggregate_tok_s"]
    assert "sparkfleet client (the serving image has no `vllm bench serve`)" in pairs["a"]["tool"]
    with open(os.path.join(HISTORY_DIR, "balanced.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(HISTORY_DIR, "report.md"), encoding="utf-8") as handle:
        assert "![balanced](balanced.png)" in handle.read()
    output = baseline["output"]
    assert re.search(r"target +profile +single tok/s +aggregate tok/s", output), output[-3000:]
    assert "benchmark of pair a: done" in output
    print("\nbenchmark.yml on the lab: %.1f s in all; load per target: %s" % (
        baseline["took"], ", ".join("%s %.1f s of %d s" % (r["pair"], r["elapsed_s"], r["bound_s"]) for r in new)))


def test_a_rollout_that_slows_pair_b_is_rolled_back_and_pair_a_keeps_it(lab, endpoint, baseline):
    head_a, head_b = lab["a"]["head"], lab["b"]["head"]
    pid_a = main_pid(head_a)
    # One configuration for the whole fleet; on pair b it decodes 1.67x slower (40% fewer tok/s).
    # Pair a only stalls once, during its first gate run's concurrent round (3 s at a third of
    # its speed): a transient that the confirming run no longer sees.
    slower_on_b = json.dumps({"spark_service_env_extra": {
        "VLLM_SIM_START_DELAY": "5", "VLLM_SIM_SPEC_ACCEPT": "0.74",
        "VLLM_SIM_FAULT": "{{ 'slow_decode=1.67' if sparkfleet_node.pair == 'b' else 'stall_once=3' }}"}})
    before = len(_history())
    rc, output = playbook("playbooks/rolling_restart.yml", "-e", slower_on_b)
    assert rc != 0, output[-3000:]
    assert "Rollout stopped at pair b" in output, output[-4000:]
    assert "TOO SLOW" in output, output[-4000:]
    gates = [r for r in _history()[before:] if r["kind"] == "gate"]
    assert [(r["pair"], r["passed"]) for r in gates] == [("a", True), ("b", False)]
    # Each pair's first run fell short and was confirmed by a second before any verdict; the
    # record keeps the first run beside the verdict. Pair a's stall was transient: its second run
    # passed and it kept the new configuration. Pair b was slow both times and was rolled back.
    for pair, gate in zip("ab", gates):
        assert "pair %s performance, first run: single-stream decode" % pair in output, output[-4000:]
        assert "TOO SLOW" in " ".join(gate["unconfirmed_first_run"]["verdict"]), gate
    reference_a = gates[0]["reference"]["figures"]["aggregate_tok_s"]
    assert gates[0]["unconfirmed_first_run"]["figures"]["aggregate_tok_s"] < 0.9 * reference_a
    assert gates[0]["figures"]["aggregate_tok_s"] >= 0.9 * reference_a
    reference_b = gates[1]["reference"]["figures"]["single_stream_tok_s"]
    assert gates[1]["unconfirmed_first_run"]["figures"]["single_stream_tok_s"] < 0.8 * reference_b
    # Both figures named: what pair b reached and its last known good.
    verdict = re.match(r"single-stream decode ([0-9.]+) tok/s is (\d+)% of ([0-9.]+) tok/s from "
                       r"pair b's last known good", gates[1]["verdict"][0])
    assert verdict, gates[1]["verdict"]
    slow, share, good = float(verdict.group(1)), int(verdict.group(2)), float(verdict.group(3))
    assert 50 <= share <= 70 and slow < good
    # Pair a passed its gate (its confirming run at the speed of its last known good) and serves
    # the new configuration; pair b is back on its last known good. (Pair a keeps this setting,
    # its one stall spent, until the next site.yml; restoring it here would cost another rollout.)
    assert main_pid(head_a) != pid_a
    assert "VLLM_SIM_SPEC_ACCEPT=0.74" in docker_exec(head_a["container"], "cat", ENV_FILE).stdout
    env_b = docker_exec(head_b["container"], "cat", ENV_FILE).stdout
    assert "slow_decode" not in env_b and "VLLM_SIM_SPEC_ACCEPT" not in env_b
    assert "42" in chat(head_b["ansible_host"])
    with open(os.path.join(HISTORY_DIR, "report.md"), encoding="utf-8") as handle:
        assert "pair b, image" in handle.read()
    print("\nperformance gate: pair a's stalled first run at %.1f aggregate tok/s, confirmed at %.1f "
          "(last known good %.1f): kept; pair b at %.1f tok/s, %d%% of its last known good %.1f tok/s: "
          "rolled back" % (gates[0]["unconfirmed_first_run"]["figures"]["aggregate_tok_s"],
                           gates[0]["figures"]["aggregate_tok_s"], reference_a, slow, share, good))

