"""Fleet behaviours on a 4-pair lab (`make test-fleet`; CI's lab has 2 pairs):
a batched rollout under load drops no request and prints each pair's time
split; a canary that fails stops the rollout before the first batch after it;
every pair's two nodes hold one image ID."""

import json
import re
import time

import pytest

from conftest import api_key, docker_exec, main_pid, playbook
from loadgen import LoadGenerator

pytestmark = pytest.mark.fleet

PAIR_REPORT = re.compile(r"pair (\w+) rolled and gated in ([\d.]+) s: engine start and health gate ([\d.]+) s, "
                         r"performance gate ([\d.]+) s, orchestration ([\d.]+) s")


@pytest.fixture(scope="module")
def fleet(lab):
    if len(lab) < 4:
        pytest.fail("the fleet tests need a lab of 4 pairs (make test-fleet), this one has %d" % len(lab))
    return lab


def _unfold(output):
    return re.sub(r"\n\s+", " ", output)


def test_a_batched_rollout_under_load_drops_nothing_and_reports_each_pair(fleet, endpoint):
    load = LoadGenerator("http://%s:8000" % endpoint, workers=4, api_key=api_key()).start()
    started = time.monotonic()
    rc, output = playbook("playbooks/rolling_restart.yml", "-e", json.dumps({"sparkfleet_roll_batch": 2}),
                          timeout=1800)
    took = time.monotonic() - started
    summary = load.stop()
    flat = _unfold(output)
    assert rc == 0, output[-3000:]
    assert "rollout plan: canary: a; batch 1: b, c; batch 2: d" in flat, flat[-3000:]
    reports = {m.group(1): [float(x) for x in m.groups()[1:]] for m in PAIR_REPORT.finditer(flat)}
    assert sorted(reports) == sorted(fleet), flat[-3000:]
    print("\n%d-pair rollout in batches (canary, 2, 1): %.0f s; load: %s" % (len(fleet), took, summary))
    for pair, (total, engine, perf, orchestration) in sorted(reports.items()):
        print("pair %s: %.1f s = engine start and health gate %.1f + performance gate %.1f + orchestration %.1f"
              % (pair, total, engine, perf, orchestration))
    assert summary["failed"] == 0, summary
    assert summary["ok"] > 0, summary


def test_a_failing_canary_stops_the_rollout_before_the_first_batch(fleet):
    later = {pair: {role: main_pid(node) for role, node in fleet[pair].items()} for pair in sorted(fleet)[1:]}
    bad = json.dumps({"sparkfleet_roll_batch": 2, "spark_health_startup_timeout": 60,
                      "spark_service_env_extra": {"VLLM_SIM_START_DELAY": "5", "VLLM_SIM_FAULT": "garbled"}})
    rc, output = playbook("playbooks/rolling_restart.yml", "-e", bad, timeout=1800)
    flat = _unfold(output)
    assert rc != 0
    assert "Rollout stopped at pair a" in flat and "clean-output" in flat, flat[-3000:]
    assert {pair: {role: main_pid(node) for role, node in fleet[pair].items()} for pair in later} == later


def test_every_pair_runs_one_image_on_both_nodes(fleet):
    ids = {}
    for pair, nodes in sorted(fleet.items()):
        launch = {role: json.loads(docker_exec(node["ansible_host"], "cat",
                                               "/etc/sparkfleet/sparkfleet-vllm-%s.json" % role).stdout)
                  for role, node in nodes.items()}
        assert launch["head"]["image_id"] == launch["worker"]["image_id"], (pair, launch)
        ids[pair] = launch["head"]["image_id"]
    print("\nimage IDs served: %s" % {pair: image[7:19] for pair, image in ids.items()})
