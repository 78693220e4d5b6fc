"""playbooks/prune.yml: the running and last-known-good images stay, then the newest others;
older images and their build contexts go; check mode removes nothing; a second run is a no-op."""

import re
import subprocess
import time

import pytest

from conftest import HOST_VARS, docker_exec, playbook

# Judged by which images remain: nothing here is timed.
pytestmark = pytest.mark.untimed

# Pair a: its head is the fleet's build host, so it holds the base image and the build contexts.
PAIR_A = "spark-a1,spark-a2"
CONTEXTS = HOST_VARS["sparkfleet_image_build_dir"]
REPOSITORY = HOST_VARS["sparkfleet_image_repository"]


def _refs(node):
    out = docker_exec(node["container"], "docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                      REPOSITORY).stdout
    return set(out.split())


def _running_ref(node):
    import json
    launch = json.loads(docker_exec(node["container"], "cat", "/etc/sparkfleet/sparkfleet-vllm-head.json").stdout)
    for ref in _refs(node):
        if docker_exec(node["container"], "docker", "image", "inspect", "--format", "{{.Id}}",
                       ref).stdout.strip() == launch["image_id"]:
            return ref
    raise AssertionError("no tag of the running image %s" % launch["image_id"])


def test_prune_keeps_what_can_serve_and_removes_the_rest(lab):
    head = lab["a"]["head"]
    host = head["container"]
    serving = _refs(head)
    old = ["%s:prunetest%d" % (REPOSITORY, n) for n in (1, 2, 3)]
    for n, ref in enumerate(old, 1):
        subprocess.run(["docker", "exec", "-i", host, "docker", "build", "-q", "-t", ref, "-"],
                       input="FROM sparkfleet/vllm-sim:latest\nLABEL sparkfleet.test.prune=%d\n" % n,
                       text=True, check=True, capture_output=True)
        docker_exec(host, "mkdir", "-p", "%s/prunetest%d" % (CONTEXTS, n))
        time.sleep(1.1)  # distinct creation times: the newest is the one kept
    try:
        rc, output = playbook("playbooks/prune.yml", "--limit", PAIR_A, "--check", "-e", "sparkfleet_prune_keep_others=1")
        flat = re.sub(r"\n\s+", " ", output)
        assert rc == 0, output[-3000:]
        would = re.search(r"spark-a1: kept \d+ image\(s\), would remove ([^;]+);", flat)
        assert would and {old[0], old[1]} <= set(would.group(1).split(", ")) and old[2] not in would.group(1), flat[-2000:]
        assert _refs(head) == serving | set(old)  # check mode removed nothing

        rc, output = playbook("playbooks/prune.yml", "--limit", PAIR_A, "-e", "sparkfleet_prune_keep_others=1")
        flat = re.sub(r"\n\s+", " ", output)
        print(re.search(r"spark-a1: kept[^']+", flat).group(0))
        assert rc == 0, output[-3000:]
        left = _refs(head)
        assert old[2] in left and not {old[0], old[1]} & left, left
        running = _running_ref(head)
        assert running in left, "the image the unit runs must stay"
        contexts = set(docker_exec(host, "ls", CONTEXTS).stdout.split())
        assert "prunetest3" in contexts and not {"prunetest1", "prunetest2"} & contexts
        assert running.split(":")[1] in contexts

        rc, output = playbook("playbooks/prune.yml", "--limit", PAIR_A, "-e", "sparkfleet_prune_keep_others=1")
        assert rc == 0 and re.search(r"spark-a1\s+: ok=\d+\s+changed=0", output), output[-1500:]
    finally:
        for ref in old:
            docker_exec(host, "docker", "image", "rm", ref, check=False)
        docker_exec(host, "rm", "-rf", *["%s/prunetest%d" % (CONTEXTS, n) for n in (1, 2, 3)])
