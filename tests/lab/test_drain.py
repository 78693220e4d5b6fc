"""Long answers across a rolling restart: the drain waits for every answer that
started before its head was drained, up to the drain bound; a bound shorter
than the answers cuts them at the endpoint and the rollout says how many."""

import json
import re
import subprocess
import threading
import time

from conftest import ROOT, PLAYBOOK, api_key
from loadgen import LoadGenerator, LongStreams

TOKENS_PER_S = 100  # the lab simulator's VLLM_SIM_TOKEN_DELAY of 0.01 s
DRAIN = re.compile(r"pair (\w+) rolled and gated in ([\d.]+) s: engine start and health gate [\d.]+ s, "
                   r"performance gate [\d.]+ s, orchestration [\d.]+ s; drain waited ([\d.]+) s for (\d+) "
                   r"request\(s\) in flight \(bound (\d+) s\), cut (\d+)")
CUT_WARNING = re.compile(r"the drain bound \((\d+) s, sparkfleet_roll_drain_timeout\) was reached with (\d+) request")


def _rollout(*extra):
    """Start rolling_restart.yml in the background; returns (process, output list)."""
    process = subprocess.Popen([PLAYBOOK, "-i", "inventory/lab", "playbooks/rolling_restart.yml",
                                "-e", json.dumps({"spark_health_startup_timeout": 60})] + list(extra),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    return process, output, reader


def _unfold(output):
    return re.sub(r"\n\s+", " ", output)  # the YAML callback folds long messages


def _drains(output):
    output = _unfold(output)
    return {m.group(1): {"rolled_s": float(m.group(2)), "waited_s": float(m.group(3)), "in_flight": int(m.group(4)),
                         "bound_s": int(m.group(5)), "cut": int(m.group(6))} for m in DRAIN.finditer(output)}


def test_rollout_under_load_with_long_answers_drops_nothing(lab, endpoint, record_property):
    """The rolling restart under load: short requests from 2 clients all the
    way through, and long answers (30-120 s, streamed and not) started before
    and during each pair's drain; none fails, none is cut."""
    url = "http://%s:8000" % endpoint
    key = api_key()
    streams = LongStreams(url, key, TOKENS_PER_S)
    short = LoadGenerator(url, workers=2, max_requests=100000, max_seconds=1200, api_key=key).start()
    # Before the rollout: answers of 30 to 120 s on both heads (leastconn
    # spreads them), streamed and not.
    for seconds, stream in ((120, True), (90, False), (45, True), (30, False)):
        streams.start(seconds, stream)
    time.sleep(2)
    process, output, reader = _rollout()
    # During the rollout, a new long answer every 10 s: some start while pair
    # a drains or restarts (they go to pair b, which pair b's drain then waits
    # for), some while pair b does (they go to pair a, already rolled).
    lengths = (30, 40, 60)
    started_during = 0
    rollout_started = time.monotonic()
    while process.poll() is None:
        time.sleep(10)
        if process.poll() is None:
            streams.start(lengths[started_during % len(lengths)], started_during % 2 == 0)
            started_during += 1
    rollout_s = time.monotonic() - rollout_started
    reader.join(30)
    text = "".join(output)
    results = streams.wait(timeout=300)
    summary = short.stop()
    drains = _drains(text)
    whole = [r for r in results if r["whole"]]
    broken = [r for r in results if not r["whole"]]
    figures = {"long_answers_started": len(results), "started_during_rollout": started_during,
               "completed_whole": len(whole), "cut_or_broken": len(broken),
               "longest_answer_s": max(r["seconds"] for r in results),
               "drains": drains, "longest_drain_wait_s": max((d["waited_s"] for d in drains.values()), default=None),
               "short_requests": {k: summary[k] for k in ("sent", "failed", "p50_s", "p99_s")},
               "rollout_s": round(rollout_s, 1)}
    print("rollout under load with long answers:", json.dumps(figures))
    for key in ("sent", "failed", "p50_s", "p99_s"):
        record_property(key, summary[key])
    record_property("rollout_s", figures["rollout_s"])
    record_property("long_answers_whole", "%d/%d" % (len(whole), len(results)))
    assert process.returncode == 0, text[-3000:]
    assert set(drains) == set(lab), text[-3000:]
    assert not broken, broken
    assert summary["failed"] == 0, summary["failures"]
    assert started_during >= 4
    # Each pair's drain waited for the answers it had in flight, none was cut.
    assert all(d["cut"] == 0 for d in drains.values()), drains
    assert max(d["waited_s"] for d in drains.values()) >= 20, drains
    assert sum(d["in_flight"] for d in drains.values()) >= 2, drains


def test_a_drain_bound_shorter_than_the_answers_cuts_them_and_says_how_many(lab, endpoint):
    """Pair a alone, drain bound 5 s, 60 s answers streaming on both pairs: the
    ones on pair a are cut at the bound and counted in the rollout's output;
    the ones on pair b (not rolled) arrive whole."""
    url = "http://%s:8000" % endpoint
    streams = LongStreams(url, api_key(), TOKENS_PER_S)
    for _ in range(4):
        streams.start(60, True)
    time.sleep(3)
    process, output, reader = _rollout("--limit", "localhost,lab-endpoint,spark-a1,spark-a2",
                                       "-e", "sparkfleet_roll_drain_timeout=5")
    process.wait(timeout=900)
    reader.join(30)
    text = "".join(output)
    results = streams.wait(timeout=200)
    drains = _drains(text)
    warnings = [(int(m.group(1)), int(m.group(2))) for m in CUT_WARNING.finditer(_unfold(text))]
    broken = [r for r in results if not r["whole"]]
    print("drain bound 5 s against 60 s answers:", json.dumps(
        {"answers": len(results), "cut_for_their_clients": len(broken), "drains": drains, "warnings": warnings,
         "results": results}))
    assert process.returncode == 0, text[-3000:]
    assert set(drains) == {"a"}, text[-3000:]
    assert drains["a"]["bound_s"] == 5 and drains["a"]["waited_s"] >= 5, drains
    # Every answer on pair a was cut, and the rollout said how many; none silently.
    assert drains["a"]["cut"] == drains["a"]["in_flight"] == len(broken) >= 1, (drains, results)
    assert warnings == [(5, len(broken))], warnings
    assert all(r["error"] and r["received"] < r["tokens"] for r in broken), broken
    assert len(results) - len(broken) >= 1, results  # pair b's arrived whole
