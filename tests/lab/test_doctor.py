"""playbooks/doctor.yml: a bundle per node, secrets redacted, and the held-master-port signature named
after one is staged (a process that is not vLLM holding 29501 when the head starts); a rank killed by
SIGKILL is named from the words the node's own systemd wrote."""

import glob
import os
import re
import subprocess
import tarfile
import time

import pytest

from conftest import API_KEY_FILE, docker_exec, playbook, unit_of, wait_serving

PAIR_A = "localhost,spark-a1,spark-a2"
# SO_REUSEADDR: the stopped head leaves TIME_WAIT connections on the port.
HOLDER = ("import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
          "s.bind(('0.0.0.0', 29501)); s.listen(1); time.sleep(600)")


def test_doctor_names_a_held_master_port_and_keeps_secrets_out(lab, tmp_path):
    head, worker = lab["a"]["head"], lab["a"]["worker"]
    host = head["container"]
    docker_exec(host, "systemctl", "stop", "sparkfleet-vllm-head")
    subprocess.run(["docker", "exec", "--detach", host, "python3", "-c", HOLDER], check=True)
    try:
        # The holder is a fresh python3 in the node: on a busy machine it takes a few seconds to listen.
        deadline = time.monotonic() + 20
        while ":29501 " not in docker_exec(host, "ss", "-ltn").stdout and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ":29501 " in docker_exec(host, "ss", "-ltn").stdout, "the port holder did not start"
        docker_exec(host, "systemctl", "start", "--no-block", "sparkfleet-vllm-head")
        time.sleep(8)  # the unit's ExecStartPre refuses the port held by something that is not vLLM
        started = time.monotonic()
        rc, output = playbook("playbooks/doctor.yml", "--limit", PAIR_A, "-e", "sparkfleet_doctor_dir=%s" % tmp_path,
                              timeout=300)
        took = time.monotonic() - started
    finally:
        docker_exec(host, "pkill", "-f", "s.bind..'0.0.0.0', 29501", check=False)
        # Both ranks failed fast while the port was held: systemd's start limit may have stopped their restarts.
        docker_exec(host, "systemctl", "reset-failed", "sparkfleet-vllm-head", check=False)
        docker_exec(worker["container"], "systemctl", "reset-failed", "sparkfleet-vllm-worker", check=False)
        docker_exec(worker["container"], "systemctl", "restart", "sparkfleet-vllm-worker")
        docker_exec(host, "systemctl", "restart", "sparkfleet-vllm-head")
        wait_serving(head["ansible_host"])
    print("doctor on pair a in %.1f s" % took)
    assert rc == 0, output[-3000:]
    flat = re.sub(r"\n\s+", " ", output)
    assert "spark-a1: master-port-held (the rendezvous (master) port is held" in flat, flat[-3000:]
    assert "port 29501 is held by pid" in flat
    assert re.search(r"spark-a2: (no known failure signature|[a-z-]+ \()", flat)  # the worker is read too
    bundles = sorted(glob.glob(os.path.join(str(tmp_path), "lab-*", "*.tar.gz")))
    assert [os.path.basename(path) for path in bundles] == ["spark-a1.tar.gz", "spark-a2.tar.gz"]
    summary = glob.glob(os.path.join(str(tmp_path), "lab-*", "SUMMARY.txt"))
    assert summary and "master-port-held" in open(summary[0], encoding="utf-8").read()
    with open(API_KEY_FILE, encoding="utf-8") as handle:
        key = handle.read().strip()
    with tarfile.open(bundles[0]) as bundle:
        names = bundle.getnames()
        for wanted in ("journal-sparkfleet-vllm-head.txt", "files_proc_meminfo", "sysctl.txt", "links.txt",
                       "files_etc_sparkfleet_sparkfleet-vllm-head.env", "container-head.json", "kernel.txt"):
            assert wanted in names, names
        for member in bundle.getmembers():
            assert key not in bundle.extractfile(member).read().decode("utf-8", "replace"), member.name
    # Nothing left behind on the nodes.
    assert docker_exec(host, "ls", "/var/tmp/sparkfleet-doctor-spark-a1.tar.gz", check=False).returncode != 0


def restarts(node):
    return int(docker_exec(node["container"], "systemctl", "show", "--property", "NRestarts", "--value",
                           unit_of(node)).stdout.strip() or 0)


@pytest.mark.untimed
def test_doctor_names_a_rank_killed_by_a_signal_after_the_pair_healed(lab, tmp_path):
    head, worker = lab["b"]["head"], lab["b"]["worker"]
    head_before, worker_before = restarts(head), restarts(worker)
    # What the OOM killer or a stray `kill -9` does: the worker's container dies on SIGKILL (exit 137).
    docker_exec(worker["container"], "docker", "kill", "--signal", "KILL", unit_of(worker))
    # The head loses its rank and exits; systemd restarts both and they meet again.
    deadline = time.monotonic() + 120
    while (restarts(head) <= head_before or restarts(worker) <= worker_before) and time.monotonic() < deadline:
        time.sleep(1)
    assert restarts(worker) > worker_before and restarts(head) > head_before, "systemd did not restart pair b"
    wait_serving(head["ansible_host"])
    rc, output = playbook("playbooks/doctor.yml", "--limit", "localhost,%s" % worker["name"],
                          "-e", "sparkfleet_doctor_dir=%s" % tmp_path, timeout=300)
    assert rc == 0, output[-3000:]
    flat = re.sub(r"\n\s+", " ", output)
    assert "%s: rank-killed (a rank was killed by a signal while serving" % worker["name"] in flat, flat[-3000:]
    assert re.search(r"seen in journal-sparkfleet-vllm-worker.txt: .*Main process exited, code=exited, status=137/", flat)
