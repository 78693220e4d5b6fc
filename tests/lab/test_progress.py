"""Progress while a pair starts: phase lines from both ranks' journals during a
long cold start, and a report naming the last phase when a start hangs."""

import json
import re
import time

from conftest import docker_exec, playbook, wait_serving

PAIR_A = "localhost,lab-endpoint,spark-a1,spark-a2"
PROGRESS = re.compile(r"pair a \| ([\d]+(?: min \d+)? s) \| head: ([^|']+?)\s*\|\s*worker: ([^|']+?)\s*(?:\||'|$)",
                      re.MULTILINE)


def _progress_lines(output):
    flat = re.sub(r"\n\s+", " ", output)  # the YAML callback folds long messages
    return [(m.group(1), m.group(2).strip(), m.group(3).strip()) for m in PROGRESS.finditer(flat)]


def _roll_pair_a(env):
    return playbook("playbooks/rolling_restart.yml", "--limit", PAIR_A, "-e",
                    json.dumps({"spark_health_startup_timeout": 240, "spark_health_progress_interval": 15,
                                "spark_service_env_extra": env}), timeout=900)


def test_a_long_cold_start_prints_its_phases_before_the_gate(lab):
    try:
        rc, output = _roll_pair_a({"VLLM_SIM_START_DELAY": "90"})
        lines = _progress_lines(output)
        heads = [head for _, head, _ in lines]
        phases = {re.sub(r" \(.*", "", head) for head in heads}
        print("progress lines of a 90 s start:", json.dumps(lines))
        assert rc == 0, output[-3000:]
        assert len(phases - {"API up, gate checks running"}) >= 3, lines
        assert any(re.search(r"loading weights \(\d+/46 shards, \d+%\)", head) for head in heads), lines
        assert heads[-1] == "API up, gate checks running", lines
        gate = output.index("Gate the head on real, clean completions")
        assert output.index("pair a |") < gate
    finally:
        rc, output = _roll_pair_a({"VLLM_SIM_START_DELAY": "5"})
        assert rc == 0, output[-3000:]
    # The 5 s restart just now was recorded; the next start of that image and
    # profile shows how long it should take.
    history = json.loads(docker_exec(lab["a"]["head"]["ansible_host"], "cat",
                                     "/var/lib/sparkfleet/start-times.json").stdout)
    assert history and all(entry["seconds"] > 0 for entry in history.values()), history


def test_a_start_that_hangs_at_rendezvous_is_reported_with_that_phase(lab):
    head, worker = lab["a"]["head"], lab["a"]["worker"]
    try:
        docker_exec(worker["ansible_host"], "systemctl", "stop", "sparkfleet-vllm-worker")
        docker_exec(head["ansible_host"], "systemctl", "restart", "sparkfleet-vllm-head")
        time.sleep(3)
        started = time.monotonic()
        rc, output = playbook("playbooks/health.yml", "--limit", PAIR_A, "-e", "spark_health_startup_timeout=60")
        took = time.monotonic() - started
        print("hang at rendezvous reported in %.1f s" % took)
        assert rc != 0
        assert "pair a did not come up: the worker's unit is inactive/dead." in output, output[-3000:]
        assert "Last phase reached: head waiting for the worker at rendezvous; worker not running" in output
        assert "Last relevant log lines of the head:" in output and "DP group leader" in output
    finally:
        docker_exec(worker["ansible_host"], "systemctl", "start", "sparkfleet-vllm-worker")
        docker_exec(head["ansible_host"], "systemctl", "restart", "sparkfleet-vllm-head")
        wait_serving(head["sparkfleet_mgmt_address"])
