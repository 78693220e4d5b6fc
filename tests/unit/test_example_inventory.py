"""inventory/example as shipped: what preflight renders for each of its nodes, on the controller only.

One ansible-playbook run (tests/unit/playbooks/example_inventory_render.yml,
-i inventory/example) renders every node's launch for every profile of
group_vars/all/profiles.yml, with set_fact/assert/debug only and the nodes'
connection local: nothing reaches the inventory's addresses. The expected
values come from inventory/example/hosts.yml itself.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

EXAMPLE = os.path.join(ROOT, "inventory", "example")
PLAYBOOK = os.path.join("tests", "unit", "playbooks", "example_inventory_render.yml")
MOUNT_ROOT = "/models/"


def _load(path):
    with open(path, "r", encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


PROFILES = _load(os.path.join(ROOT, "group_vars", "all", "profiles.yml"))["sparkfleet_profiles"]
NODES = _load(os.path.join(EXAMPLE, "hosts.yml"))["all"]["children"]["sparkfleet_nodes"]["hosts"]
HEADS = sorted(name for name, node in NODES.items() if node["sparkfleet_node_role"] == "head")


def _head_of(name):
    pair = NODES[name]["sparkfleet_pair"]
    return next(head for head in HEADS if NODES[head]["sparkfleet_pair"] == pair)


def _fabric_ip(name):
    return str(NODES[name]["sparkfleet_fabric_address"]).split("/")[0]


def _case_vars(profile):
    """What a pair running ``profile`` sets: the checkpoint the profile needs, in a directory of its own."""
    checkpoint = PROFILES[profile].get("checkpoint")
    if not checkpoint:
        return {}
    return {"sparkfleet_model": checkpoint,
            "sparkfleet_model_dir": "/var/lib/sparkfleet/models/" + checkpoint.rsplit("/", 1)[-1]}


CASES = [{"name": profile, "profile": profile, "vars": _case_vars(profile)} for profile in sorted(PROFILES)]


class Run:
    """The playbook's reports: the controller's; the fleet's preflight per case, with the profile
    only and then with the case's checkpoint settings; each node's launch per case."""

    def __init__(self, rc, stdout, stderr):
        self.rc = rc
        self.controller, self.fleet, self.nodes = None, {}, {}
        failures = []
        try:
            document = json.loads(stdout)
        except ValueError:
            document = {}
            failures.append(stdout[-3000:])
        for play in document.get("plays", []):
            for task in play.get("tasks", []):
                for host, result in task.get("hosts", {}).items():
                    msg = result.get("msg")
                    if result.get("failed"):
                        failures.append("%s: %s" % (host, msg))
                    if not isinstance(msg, dict):
                        continue
                    if "controller" in msg:
                        self.controller = msg["controller"]
                    elif "fleet" in msg:
                        self.fleet[(msg["fleet"]["case"], msg["fleet"]["step"])] = msg["fleet"]["preflight"]
                    elif "node" in msg:
                        self.nodes[(msg["node"]["case"], host)] = msg["node"]
        # What a failing test shows: the failed tasks' messages and ansible-playbook's own errors.
        self.output = "\n".join(failures[:8] + [stderr[-3000:]])

    def launches(self, names=None):
        """(case, host, launch) for every rendered node; failing if one is missing."""
        for case in CASES:
            for host in sorted(NODES) if names is None else names:
                launch = self.nodes.get((case["name"], host))
                assert launch is not None, "no launch rendered for %s in case %s:\n%s" % (host, case["name"], self.output)
                yield case, host, launch


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    env = dict(os.environ, HOME=str(home), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    env.pop("ANSIBLE_CONFIG", None)  # the repository's ansible.cfg (roles, filters), read from the cwd
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    result = subprocess.run([playbook, "-i", EXAMPLE, PLAYBOOK, "-e", json.dumps({"test_cases": CASES})],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    return Run(result.returncode, result.stdout, result.stderr)


def _vllm_args(argv):
    return argv[argv.index("serve") + 1:]


def _value(args, flag):
    assert flag in args, "%s missing from %s" % (flag, args)
    return args[args.index(flag) + 1]


def _env(launch):
    return dict(line.split("=", 1) for line in launch["env"])


def test_every_node_renders_for_every_profile(run):
    assert run.rc == 0, run.output
    assert {case["profile"] for case in CASES} == set(PROFILES)
    assert len(list(run.launches())) == len(CASES) * len(NODES)


def test_the_controller_does_not_become(run):
    """localhost takes group all's vars: connection settings there would send every controller-side task through sudo."""
    assert run.controller is not None, run.output
    assert run.controller["ansible_become"] in (None, False), run.controller


def test_preflight_accepts_the_example_fleet_and_every_profile_with_its_checkpoint(run):
    assert run.controller is not None and run.controller["preflight"] == [], run.output
    for case in CASES:
        assert run.fleet.get((case["name"], "case")) == [], (case, run.fleet.get((case["name"], "case")), run.output)
        if not case["vars"]:
            assert run.fleet.get((case["name"], "profile only")) == [], case


def test_preflight_refuses_a_profile_whose_checkpoint_the_pair_does_not_serve(run):
    checkpoint = PROFILES["long_context_1m"]["checkpoint"]
    assert run.fleet.get(("long_context_1m", "profile only")) == [
        "%s: sparkfleet_model is 'deepseek-ai/DeepSeek-V4-Flash', but profile long_context_1m needs the checkpoint "
        "'%s'; set sparkfleet_model: %s and a sparkfleet_model_dir for it on each pair that runs it (group or host "
        "vars of its head and its worker)" % (", ".join(sorted(NODES)), checkpoint, checkpoint)], run.output


def test_heads_listen_on_their_own_management_address(run):
    for case, host, launch in run.launches(HEADS):
        args = _vllm_args(launch["argv"])
        assert _value(args, "--host") == NODES[host]["ansible_host"], (case["name"], host, args)
        assert "0.0.0.0" not in launch["argv"]


def test_workers_serve_no_api(run):
    for case, host, launch in run.launches(sorted(set(NODES) - set(HEADS))):
        args = _vllm_args(launch["argv"])
        assert "--headless" in args and "--host" not in args and "--port" not in args, (case["name"], host)


def test_the_container_gets_the_gpus_and_the_rdma_devices(run):
    for case, host, launch in run.launches():
        docker = launch["argv"][:launch["argv"].index("serve")]
        assert _value(docker, "--gpus") == "all", (case["name"], host, docker)
        assert _value(docker, "--device") == "/dev/infiniband", (case["name"], host, docker)
        # NCCL over RoCE registers memory: unlimited memlock and a Spark-sized shm (the lab lowers both).
        assert "memlock=-1:-1" in docker and "--shm-size=64g" in docker, (case["name"], host, docker)


def test_rendezvous_and_nccl_use_the_fabric_addresses(run):
    for case, host, launch in run.launches():
        args = _vllm_args(launch["argv"])
        assert _value(args, "--master-addr") == _fabric_ip(_head_of(host)), (case["name"], host)
        assert _env(launch)["VLLM_HOST_IP"] == _fabric_ip(host), (case["name"], host)


def test_every_profile_serves_the_mounted_local_checkpoint_offline(run):
    for case, host, launch in run.launches():
        model = _vllm_args(launch["argv"])[0]
        model_dir = case["vars"].get("sparkfleet_model_dir", launch["model_dir"])
        assert launch["model_dir"] == model_dir
        assert model == MOUNT_ROOT + os.path.basename(model_dir), (case["name"], host, model)
        assert "%s:%s:ro" % (model_dir, model) in launch["argv"], (case["name"], host, launch["argv"])
        assert _env(launch)["HF_HUB_OFFLINE"] == "1", (case["name"], host)
