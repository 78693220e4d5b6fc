"""Fixtures for tests that run against the converged local lab.

scripts/test brings the lab up and converges it with site.yml before running
these; they fail (not skip) when the lab is missing.
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
INVENTORY = os.path.join(ROOT, "inventory", "lab", "hosts.yml")
PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")


@pytest.fixture(scope="session")
def lab():
    if not os.path.exists(INVENTORY):
        pytest.fail("the lab is not up: run `lab/sparkfleet-lab up` and `make deploy` first")
    with open(INVENTORY, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    nodes = inventory["all"]["children"]["sparkfleet_nodes"]["hosts"]
    pairs = {}
    for name, hv in nodes.items():
        # ansible_host is the node's management IP, as in inventory/example;
        # the tests reach inside a node through its container.
        pairs.setdefault(hv["sparkfleet_pair"], {})[hv["sparkfleet_node_role"]] = dict(
            hv, name=name, container=container_of(name))
    return pairs


def container_of(host):
    """The lab container of an inventory host (lab/sparkfleet_lab_lib.py container_name)."""
    return "sparkfleet-lab-" + host


def docker_exec(container, *cmd, check=True):
    return subprocess.run(["docker", "exec", container] + list(cmd), capture_output=True, text=True, check=check)


def image_id(node, ref):
    """The image ID a lab node holds for ref, or "" when it holds none."""
    return docker_exec(node["container"], "docker", "image", "inspect", "--format", "{{.Id}}", ref,
                       check=False).stdout.strip()


def copy_image(ref, source, target):
    """docker save on one lab node piped into docker load on another: the same image ID on both."""
    save = subprocess.Popen(["docker", "exec", source["container"], "docker", "save", ref], stdout=subprocess.PIPE)
    subprocess.run(["docker", "exec", "-i", target["container"], "docker", "load", "-q"],
                   stdin=save.stdout, check=True, capture_output=True)
    save.stdout.close()
    assert save.wait() == 0


with open(os.path.join(ROOT, "group_vars", "all", "fleet.yml"), encoding="utf-8") as _handle:
    _FLEET_VARS = yaml.safe_load(_handle)
# The serving units by role, named once (sparkfleet_units); each container is named as its unit.
SERVING_UNITS = _FLEET_VARS["sparkfleet_units"]
# The vLLM release the fleet pins (sparkfleet_vllm_version).
FLEET_RELEASE = str(_FLEET_VARS["sparkfleet_vllm_version"])


with open(os.path.join(ROOT, "group_vars", "all", "host.yml"), encoding="utf-8") as _handle:
    # Where a node keeps sparkfleet's images and state, named once (literal values there).
    HOST_VARS = yaml.safe_load(_handle)


def unit_of(node):
    return SERVING_UNITS[node["sparkfleet_node_role"]]


def main_pid(node):
    out = docker_exec(node["container"], "systemctl", "show", "-p", "MainPID", "--value", unit_of(node)).stdout
    return int(out.strip() or 0)


def playbook(*args, timeout=900):
    """Run an ansible-playbook from the repo root against the lab; return (rc, output)."""
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    result = subprocess.run([PLAYBOOK, "-i", "inventory/lab"] + list(args), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


# Authentication is on in the lab as everywhere: sparkfleet generated this
# key on the controller at the first converge (sparkfleet_fleet_name: lab).
API_KEY_FILE = os.path.join(os.path.expanduser("~"), ".config", "sparkfleet", "lab.api-key")


def api_key():
    with open(API_KEY_FILE, encoding="utf-8") as handle:
        return handle.read().strip()


def auth_headers(key=None):
    return {"Content-Type": "application/json", "Authorization": "Bearer %s" % (key or api_key())}


def chat(address, prompt="What is 17 + 25? Answer with the number only.", timeout=30, port=8000, key=None):
    body = json.dumps({"model": "deepseek-v4-flash", "temperature": 0, "max_tokens": 16,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    request = urllib.request.Request("http://%s:%d/v1/chat/completions" % (address, port), data=body,
                                     headers=auth_headers(key))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)["choices"][0]["message"]["content"]


def wait_serving(address, deadline_s=300, port=8000):
    """Seconds until the head answers a correct completion; fails after deadline_s."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < deadline_s:
        try:
            if "42" in chat(address, timeout=10, port=port):
                return time.monotonic() - start
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(1)
    pytest.fail("%s:%d did not serve within %ds (last error: %s)" % (address, port, deadline_s, last))


def endpoint_group():
    """The lab inventory's sparkfleet_endpoint group: {hosts: {...}, vars: {...}}."""
    with open(INVENTORY, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    group = inventory["all"]["children"].get("sparkfleet_endpoint", {})
    if not group.get("hosts"):
        pytest.fail("the lab has no endpoint host")
    return group


@pytest.fixture(scope="session")
def endpoint():
    """Where clients reach the lab's fleet endpoint: keepalived's virtual IP when the endpoint has
    one (two HAProxy hosts, as inventory/example), else its one host's management address."""
    group = endpoint_group()
    return (group.get("vars") or {}).get("fleet_endpoint_vip") or next(iter(group["hosts"].values()))["ansible_host"]
