"""--check --diff shows a hand edit without changing anything; a normal run
restores it and restarts only the pair that drifted."""

import pytest

from conftest import docker_exec, main_pid, playbook, wait_serving

# A check run and a restoring run, judged by their output: nothing here is timed.
pytestmark = pytest.mark.untimed

UNIT = "/etc/systemd/system/sparkfleet-vllm-head.service"


def test_check_diff_shows_drift_and_a_run_restores_only_that_pair(lab):
    head = lab["a"]["head"]
    container = head["container"]
    other_pair = {role: main_pid(node) for role, node in lab["b"].items()}
    docker_exec(container, "sed", "-i", "s/^RestartSec=15/RestartSec=1/", UNIT)
    edited = docker_exec(container, "cat", UNIT).stdout
    pid = main_pid(head)

    # The check runs on the drifted pair only (a full check of the fleet costs minutes in CI);
    # the real run below covers every pair and proves the other one is left alone.
    rc, output = playbook("site.yml", "--check", "--diff", "--limit", "spark-a1,spark-a2,localhost")
    assert rc == 0, output[-3000:]
    assert "-RestartSec=1\n+RestartSec=15" in output
    assert docker_exec(container, "cat", UNIT).stdout == edited
    assert main_pid(head) == pid

    rc, output = playbook("site.yml", "--limit", "sparkfleet_nodes:localhost")
    assert rc == 0, output[-3000:]
    assert "RestartSec=15" in docker_exec(container, "cat", UNIT).stdout
    assert main_pid(head) != pid
    assert {role: main_pid(node) for role, node in lab["b"].items()} == other_pair
    wait_serving(head["ansible_host"])
