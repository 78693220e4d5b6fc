"""Rollouts of the 2-pair lab that must not go through: failing ones roll back
by themselves, a movable tag is refused before anything. (The rollout under
load, with long answers across every drain, is tests/lab/test_drain.py.)"""

import json
import subprocess

import pytest

from conftest import chat, copy_image, docker_exec, image_id, main_pid, playbook

# Rollbacks judged by what serves afterwards, without load: nothing here is timed.
pytestmark = pytest.mark.untimed

def _rolled_back(lab, output, failed_check):
    head_a = lab["a"]["head"]
    assert "Rollout stopped at pair a" in output, output[-3000:]
    assert failed_check in output, output[-3000:]
    assert "42" in chat(head_a["ansible_host"])


def test_garbled_output_is_rolled_back(lab, endpoint):
    untouched = {role: main_pid(node) for role, node in lab["b"].items()}
    bad = json.dumps({"spark_health_startup_timeout": 60,
                      "spark_service_env_extra": {"VLLM_SIM_START_DELAY": "5", "VLLM_SIM_FAULT": "garbled"}})
    rc, output = playbook("playbooks/rolling_restart.yml", "-e", bad)
    assert rc != 0
    _rolled_back(lab, output, "clean-output")
    env = docker_exec(lab["a"]["head"]["container"], "cat", "/etc/sparkfleet/sparkfleet-vllm-head.env").stdout
    assert "VLLM_SIM_FAULT" not in env
    assert {role: main_pid(node) for role, node in lab["b"].items()} == untouched


def _ensure_sim_base(node):
    # Workers receive only the built serving image, so the simulator base may be missing there.
    subprocess.run(["docker", "exec", node["container"], "sh", "-c",
                    "docker image inspect sparkfleet/vllm-sim:latest >/dev/null 2>&1"
                    " || docker load -q -i /opt/sparkfleet-lab/images/vllm-sim.tar"],
                   check=True, capture_output=True)


def _build_on(node, tag, dockerfile):
    _ensure_sim_base(node)
    subprocess.run(["docker", "exec", "-i", node["container"], "docker", "build", "-q", "-t", tag, "-"],
                   input=dockerfile, text=True, check=True, capture_output=True)


def _prebuilt_rollout(ref, timeout_s):
    return playbook("playbooks/rolling_restart.yml", "-e",
                    json.dumps({"spark_health_startup_timeout": timeout_s, "sparkfleet_image_build": False,
                                "sparkfleet_image_ref": ref}))


def test_prebuilt_tag_that_can_hold_different_bits_is_refused_before_anything(lab, endpoint):
    """The stale-tag failure: a tag that names different images on the two nodes.
    A prebuilt image must be pinned by digest or image ID, so preflight refuses
    the tag on the controller, naming it, before any pair is drained or stopped."""
    before = {pair: {role: main_pid(node) for role, node in nodes.items()} for pair, nodes in lab.items()}
    ref = "sparkfleet/vllm-sim:stale-tag"
    for role, node in lab["a"].items():
        _build_on(node, ref, "FROM sparkfleet/vllm-sim:latest\nLABEL sparkfleet.test.built-on=%s\n" % role)
    head_id, worker_id = image_id(lab["a"]["head"], ref), image_id(lab["a"]["worker"], ref)
    assert head_id and worker_id and head_id != worker_id
    rc, output = _prebuilt_rollout(ref, 45)
    assert rc != 0
    assert ("sparkfleet_image_ref is '%s'; a tag can name different bits on the two nodes of a pair" % ref
            in output), output[-3000:]
    assert "no host was touched" in output
    assert {pair: {role: main_pid(node) for role, node in nodes.items()} for pair, nodes in lab.items()} == before
    assert "42" in chat(lab["a"]["head"]["ansible_host"])


def test_new_image_that_fails_to_start_is_rolled_back(lab, endpoint):
    untouched = {role: main_pid(node) for role, node in lab["b"].items()}
    # A "new image" whose vLLM dies during start-up, the same ID on every node: the rollout
    # brings every pair its image before the first batch, so all four nodes must hold it.
    ref = "sparkfleet/vllm-sim:broken"
    _build_on(lab["a"]["head"], ref, "FROM sparkfleet/vllm-sim:latest\nENV VLLM_SIM_FAULT=fail_start\n")
    nodes = [lab["a"]["worker"], lab["b"]["head"], lab["b"]["worker"]]
    for node in nodes:
        copy_image(ref, lab["a"]["head"], node)
    broken_id = image_id(lab["a"]["head"], ref)
    assert broken_id and all(image_id(node, ref) == broken_id for node in nodes)
    # Pinned by image ID: the same bits wherever that ID is found.
    rc, output = _prebuilt_rollout(broken_id, 45)
    assert rc != 0
    _rolled_back(lab, output, "health")
    launch = json.loads(docker_exec(lab["a"]["head"]["container"], "cat",
                                    "/etc/sparkfleet/sparkfleet-vllm-head.json").stdout)
    assert launch["image_id"] != broken_id
    assert {role: main_pid(node) for role, node in lab["b"].items()} == untouched
