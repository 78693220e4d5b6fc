"""Progress while a pair starts: phase lines from both ranks' journals during a
long cold start, and a report naming the last phase when a start hangs."""

import json
import re
import time
import uuid

import pytest

from conftest import HOST_VARS, docker_exec, playbook, wait_serving

IMAGES = HOST_VARS["sparkfleet_image_repository"]

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
        # The lines are the watch's (on stderr); the watch ends before the gate starts.
        assert output.index("Watch the pair start") < output.index("Gate the head on real, clean completions")
        assert re.search(r"^\[spark-a1\] pair a \| ", output, re.M), output[-3000:]
    finally:
        rc, output = _roll_pair_a({"VLLM_SIM_START_DELAY": "5"})
        assert rc == 0, output[-3000:]
    # The 5 s restart just now was recorded; the next start of that image and
    # profile shows how long it should take.
    history = json.loads(docker_exec(lab["a"]["head"]["container"], "cat",
                                     HOST_VARS["sparkfleet_start_history_file"]).stdout)
    assert history and all(entry["seconds"] > 0 for entry in history.values()), history


def test_a_start_that_hangs_at_rendezvous_is_reported_with_that_phase(lab):
    head, worker = lab["a"]["head"], lab["a"]["worker"]
    try:
        docker_exec(worker["container"], "systemctl", "stop", "sparkfleet-vllm-worker")
        docker_exec(head["container"], "systemctl", "restart", "sparkfleet-vllm-head")
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
        docker_exec(worker["container"], "systemctl", "start", "sparkfleet-vllm-worker")
        docker_exec(head["container"], "systemctl", "restart", "sparkfleet-vllm-head")
        wait_serving(head["ansible_host"])


def _image_ids(node):
    out = docker_exec(node["container"], "docker", "image", "ls", "--no-trunc", "--format",
                      "{{.Repository}}:{{.Tag}} {{.ID}}", IMAGES).stdout
    return dict(line.split() for line in out.splitlines())


def test_an_image_build_and_the_transfers_print_progress_and_totals(lab):
    """Pair b builds an image from inputs never built before (a build argument no build had,
    so no step comes from the cache) and streams it to its worker, and a shard removed on
    the worker is repaired, each with a total (and progress lines when it outlasts a round).
    The running pair is not touched, and the new image is removed afterwards."""
    head, worker = lab["b"]["head"], lab["b"]["worker"]
    before = {node["name"]: _image_ids(node) for node in (head, worker)}
    shard = "/var/lib/sparkfleet/models/DeepSeek-V4-Flash/model-00001-of-00003.safetensors"
    fresh = {"spark_image_progress_interval": 1,
             "spark_image_build_args": {"TORCH_CUDA_ARCH_LIST": "12.1a", "SPARKFLEET_TEST_NONCE": uuid.uuid4().hex}}
    try:
        docker_exec(worker["container"], "rm", "-f", shard)
        rc, output = playbook("playbooks/image.yml", "--limit", "spark-b1,spark-b2", "-e", json.dumps(fresh),
                              timeout=600)
        flat = re.sub(r"\n\s+", " ", output)
        assert rc == 0, output[-3000:]
        steps = re.findall(r"on spark-b1: (?:step (\d+) of (\d+)|sending the build context), \d+ s", flat)
        # The watch prints each line whole, on its own (plugins/action/sparkfleet_watch_job.py).
        build_total = re.search(r"on spark-b1: done, (\d+) step\(s\)(?: \(\d+ from cache\))? in ([^'\n]+)$", output, re.M)
        image_total = re.search(r"→ spark-b2: done, ([\d.]+ [KMG]iB), ([\d.]+ [KMG]iB)/s in ([^'\n]+)$", output, re.M)
        print("build steps seen:", steps, "| build:", build_total and build_total.group(0),
              "| image stream:", image_total and image_total.group(0))
        assert build_total, flat[-3000:]
        # Lines come once a round (about 2 s of Ansible on the lab); a build done before the
        # first round (the lab's Docker builds this image in 3-5 s) has only its total.
        # Start-up progress lines are proven in the cold-start test above.
        build_s = sum(int(n) * (60 if unit == "min" else 1)
                      for n, unit in re.findall(r"(\d+) (min|s)\b", build_total.group(2)))
        assert steps or build_s <= 5, flat[-3000:]
        assert all(int(of) == int(build_total.group(1)) for _, of in steps if of), steps
        if steps:
            assert re.search(r"on spark-b1: (step|sending)", flat).start() < flat.index("on spark-b1: done")
        assert image_total, flat[-3000:]

        rc, output = playbook("playbooks/model.yml", "--limit", "spark-b1,spark-b2",
                              "-e", "spark_model_progress_interval=1", timeout=600)
        flat = re.sub(r"\n\s+", " ", output)
        assert rc == 0, output[-3000:]
        weights_total = re.search(r"weights spark-b1 → spark-b2: done, 3\.0 MiB of 3\.0 MiB \(100%\), "
                                  r"1 of 1 file\(s\), [\d.]+ [KMG]iB/s in [^'\n]+$", output, re.M)
        print("weight repair:", weights_total and weights_total.group(0))
        assert weights_total, flat[-3000:]
    finally:
        for node in (head, worker):
            for ref in set(_image_ids(node)) - set(before[node["name"]]):
                docker_exec(node["container"], "docker", "image", "rm", ref)
    assert {node["name"]: _image_ids(node) for node in (head, worker)} == before


@pytest.mark.untimed
def test_a_worker_without_room_for_the_image_refuses_the_transfer_with_numbers(lab):
    """Pair b's worker lacks the serving image, and the disk reserve is set beyond its disk:
    the transfer is refused before a byte moves, with the free space, the need and the reserve."""
    worker = lab["b"]["worker"]
    refs = list(_image_ids(worker))
    for ref in refs:
        docker_exec(worker["container"], "docker", "tag", ref, "sparkfleet-test/kept:" + ref.split(":")[1])
        docker_exec(worker["container"], "docker", "image", "rm", ref)
    try:
        rc, output = playbook("playbooks/image.yml", "--limit", "spark-b1,spark-b2",
                              "-e", "sparkfleet_disk_reserve_gib=100000", timeout=600)
        flat = re.sub(r"\n\s+", " ", output)
        print("refusal:", re.search(r"spark-b2: /\S+ has [^.]+\.[^.]+\.", flat).group(0))
        assert rc != 0
        assert re.search(r"spark-b2: /\S+ has [\d.]+ GiB free; receiving " + re.escape(IMAGES) + r":\w+ from spark-b1 "
                         r"needs 0\.1 GiB and 100000\.0 GiB stays free \(sparkfleet_disk_reserve_gib\), so [\d.]+ GiB "
                         r"more is needed\.", flat), flat[-3000:]
        assert "nothing was transferred or built" in flat
        assert _image_ids(worker) == {}  # nothing arrived
        # The head never started serving a worker that was refused (no sender left listening).
        listening = docker_exec(lab["b"]["head"]["container"], "ss", "-ltnH").stdout
        assert ":29610 " not in listening, listening
    finally:
        for ref in refs:
            kept = "sparkfleet-test/kept:" + ref.split(":")[1]
            docker_exec(worker["container"], "docker", "tag", kept, ref)
            docker_exec(worker["container"], "docker", "image", "rm", kept)
