"""The lab walks the road a real Spark fleet walks (issue: inventory shape, ssh + become,
the RDMA device, --gpus, NCCL on IB).

Each check here reads the running lab as an operator would on a Spark: what the
serving container was given, which network NCCL picked, who Ansible logged in as.
"""

import json
import os
import subprocess
import time

import pytest
import yaml

from conftest import HOST_VARS, INVENTORY, ROOT, docker_exec, endpoint_group, main_pid, playbook, unit_of

EXAMPLE = os.path.join(ROOT, "inventory", "example", "hosts.yml")


def host_config(node):
    out = docker_exec(node["container"], "docker", "inspect", "--format", "{{json .HostConfig}}",
                      unit_of(node)).stdout
    return json.loads(out)


@pytest.mark.untimed
def test_every_serving_container_has_the_rdma_devices_and_the_gpus(lab):
    for pair in lab.values():
        for node in pair.values():
            config = host_config(node)
            devices = {d["PathOnHost"] for d in config.get("Devices") or []}
            assert "/dev/infiniband" in devices, "%s: serving container devices %s" % (node["name"], devices)
            requests = config.get("DeviceRequests") or []
            assert any(r.get("Count") == -1 and ["gpu"] in (r.get("Capabilities") or []) for r in requests), (
                "%s: no --gpus all in %s" % (node["name"], requests))
            inside = docker_exec(node["container"], "docker", "exec", unit_of(node), "ls", "/dev/infiniband").stdout
            assert "uverbs0" in inside.split() and "rdma_cm" in inside.split(), inside
            # dockerd ran the (stand-in) NVIDIA prestart hook for it, as it runs the real one on a Spark.
            hook_log = docker_exec(node["container"], "cat", "/var/log/sparkfleet-lab-gpu-hook.log").stdout
            assert "prestart" in hook_log


@pytest.mark.untimed
def test_nccl_runs_over_ib_on_both_twins_of_the_cabled_port(lab):
    for pair in lab.values():
        for node in pair.values():
            env = docker_exec(node["container"], "cat", "/etc/sparkfleet/fabric.env").stdout
            assert "NCCL_IB_HCA=rocep1s0f1,roceP2p1s0f1" in env.splitlines(), env
            assert "NCCL_NET=IB" in env.splitlines(), env
            journal = docker_exec(node["container"], "journalctl", "-u", unit_of(node), "-o", "cat",
                                  "--no-pager").stdout
            picked = [line for line in journal.splitlines() if "Using network" in line]
            assert picked and picked[-1].rstrip().endswith("Using network IB"), (
                "%s: NCCL picked %s" % (node["name"], picked[-1:] or "nothing"))


@pytest.mark.untimed
def test_ansible_reaches_the_lab_over_ssh_as_a_user_who_becomes_root(lab):
    out = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible"), "-i", "inventory/lab", "all:!localhost",
                          "-o", "-m", "ansible.builtin.command", "-a", "id -un",
                          "-e", "ansible_become=false"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if "|" in line]
    assert len(lines) == sum(len(pair) for pair in lab.values()) + len(endpoint_group()["hosts"]), out
    assert all(line.rstrip().endswith("sparkops") for line in lines), out
    # And the sshd of a node refuses root, as an operator's Spark would.
    node = lab["a"]["head"]
    refused = subprocess.run(["ssh", "-i", os.path.expanduser("~/.config/sparkfleet/lab-ssh/id_ed25519"),
                              "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=/dev/null",
                              "-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR",
                              "root@%s" % node["ansible_host"], "true"], capture_output=True, text=True)
    assert refused.returncode != 0


def _host_keys(hosts_yml):
    with open(hosts_yml, encoding="utf-8") as handle:
        children = yaml.safe_load(handle)["all"]["children"]
    return {group: ({key for hv in body["hosts"].values() for key in hv}, set(body.get("vars") or {}))
            for group, body in children.items()}


@pytest.mark.untimed
def test_the_lab_inventory_has_the_example_inventorys_shape(lab):
    assert _host_keys(INVENTORY) == _host_keys(EXAMPLE)



OPERATOR = "sparkfleet-operator"


@pytest.fixture(scope="module")
def operator_home():
    """A controller user who is not root and has no sudo, holding the lab's ssh key and API key.

    As an operator's laptop or an AWX execution environment: Ansible runs as
    this user, and any step that becomes root on the controller fails.
    """
    import pwd
    import shutil

    try:
        pwd.getpwnam(OPERATOR)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", OPERATOR], check=True)
    home = pwd.getpwnam(OPERATOR).pw_dir
    config = os.path.join(home, ".config", "sparkfleet")
    os.makedirs(os.path.join(config, "lab-ssh"), exist_ok=True)
    own = os.path.expanduser("~/.config/sparkfleet")
    for name in ("lab-ssh/id_ed25519", "lab.api-key"):
        shutil.copy(os.path.join(own, name), os.path.join(config, name))
    subprocess.run(["chown", "-R", "%s:" % OPERATOR, os.path.join(home, ".config")], check=True)
    return home


def run_as_operator(home, *args):
    """ansible-playbook as the operator. The venv's interpreter lives under root's home, which
    the operator cannot enter: the system's CPython 3.11 runs the venv's packages instead."""
    site = os.path.join(ROOT, ".venv", "lib", "python3.11", "site-packages")
    env = ["HOME=%s" % home, "PATH=/usr/bin:/bin", "PYTHONPATH=%s" % site, "ANSIBLE_FORCE_COLOR=0",
           "PY_COLORS=0", "LANG=C.UTF-8"]
    return subprocess.run(["runuser", "-u", OPERATOR, "--", "env", "-i"] + env
                          + ["/usr/bin/python3", os.path.join(ROOT, ".venv", "bin", "ansible-playbook"),
                             "-i", "inventory/lab"] + list(args),
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.untimed
def test_controller_steps_run_as_a_user_without_sudo(lab, operator_home, tmp_path):
    """status.yml, with a module run on the controller, as a non-root operator who has no sudo."""
    # Writing the JSON runs a module on the controller (set_fact and debug never connect).
    status_json = os.path.join(operator_home, "status.json")
    result = run_as_operator(operator_home, "playbooks/status.yml", "-e", "sparkfleet_status_json=%s" % status_json)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    with open(status_json, encoding="utf-8") as handle:
        assert sorted(row["pair"] for row in json.load(handle)["pairs"]) == sorted(lab)


def _lab_lib():
    import sys

    sys.path.insert(0, os.path.join(ROOT, "lab"))
    import sparkfleet_lab_lib  # noqa: E402  (the lab's own constants)

    return sparkfleet_lab_lib


LAB_REGISTRY = _lab_lib().LAB_REGISTRY  # on the endpoint host


@pytest.mark.untimed
def test_a_prebuilt_image_pinned_by_registry_digest_is_pulled(lab):
    """inventory/example's image road: sparkfleet_image_build false and sparkfleet_image_ref
    pinned by digest in a registry. Pair a's running image is pushed to the lab's registry, then
    pair a converges with that reference: the worker, which holds the bits under another name
    only, pulls it by digest; the image ID is the one already serving, so nothing restarts."""
    head, worker = lab["a"]["head"], lab["a"]["worker"]
    docker_exec("sparkfleet-lab-lab-endpoint", "systemctl", "start", "docker-registry")
    launch = json.loads(docker_exec(head["container"], "cat", "/etc/sparkfleet/sparkfleet-vllm-head.json").stdout)
    image_id = launch["image_id"]
    repository = "%s/%s" % (LAB_REGISTRY, HOST_VARS["sparkfleet_image_repository"])
    docker_exec(head["container"], "docker", "tag", image_id, repository + ":road")
    for _ in range(30):
        pushed = docker_exec(head["container"], "docker", "push", "-q", repository + ":road", check=False)
        if pushed.returncode == 0:
            break
        time.sleep(1)
    assert pushed.returncode == 0, pushed.stderr
    digest_ref = docker_exec(head["container"], "docker", "image", "inspect", "--format",
                             "{{index .RepoDigests 0}}", image_id).stdout.strip()
    assert digest_ref.startswith(repository + "@sha256:"), digest_ref
    docker_exec(head["container"], "docker", "image", "rm", repository + ":road")
    # A lab brought up again without `down` keeps each node's /var/lib/docker volume, and with it
    # the reference an earlier run of this test pulled: untag it (the image stays, tagged otherwise).
    docker_exec(worker["container"], "docker", "image", "rm", digest_ref, check=False)
    assert docker_exec(worker["container"], "docker", "image", "inspect", digest_ref, check=False).returncode != 0
    pids = {node["name"]: main_pid(node) for node in (head, worker)}

    rc, output = playbook("site.yml", "--limit", "localhost,%s,%s" % (head["name"], worker["name"]),
                          "-e", "sparkfleet_image_build=false", "-e", "sparkfleet_image_ref=%s" % digest_ref,
                          "-e", "spark_image_archive=")
    assert rc == 0, output[-4000:]
    assert "TASK [spark_image : Pull the serving image]" in output
    assert docker_exec(worker["container"], "docker", "image", "inspect", "--format", "{{.Id}}",
                       digest_ref).stdout.strip() == image_id
    assert {node["name"]: main_pid(node) for node in (head, worker)} == pids, "the pair restarted"
