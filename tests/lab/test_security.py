"""Secure defaults on the converged lab: the API needs the key at the endpoint
and at every head, sockets listen only where they must, and the key never
appears in Ansible's output or in a world-readable file."""

import json
import re
import urllib.error
import urllib.request

import pytest

import yaml

from conftest import API_KEY_FILE, INVENTORY, api_key, container_of, docker_exec, playbook

MASTER_PORT = 29501
API_PORT = 8000


def status_of(url, key=None, body=None):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = "Bearer %s" % key
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def endpoint_containers():
    with open(INVENTORY, encoding="utf-8") as handle:
        hosts = yaml.safe_load(handle)["all"]["children"]["sparkfleet_endpoint"]["hosts"]
    return [container_of(name) for name in hosts]


def heads(lab):
    return [pair["head"] for pair in lab.values()]


@pytest.mark.untimed
def test_key_file_is_private():
    import os
    import stat

    mode = stat.S_IMODE(os.stat(API_KEY_FILE).st_mode)
    assert mode == 0o600, oct(mode)
    assert len(api_key()) >= 32


@pytest.mark.untimed
@pytest.mark.parametrize("where", ["endpoint", "head"])
def test_requests_without_the_key_are_refused(lab, endpoint, where):
    address = endpoint if where == "endpoint" else heads(lab)[0]["ansible_host"]
    url = "http://%s:%d/v1/models" % (address, API_PORT)
    assert status_of(url) == 401
    assert status_of(url, key="not-the-key-" + "x" * 20) == 401
    assert status_of(url, key=api_key()) == 200


@pytest.mark.untimed
def test_openai_sdk_with_the_key_gets_a_completion(endpoint):
    import openai

    client = openai.OpenAI(base_url="http://%s:%d/v1" % (endpoint, API_PORT), api_key=api_key(), max_retries=0)
    answer = client.chat.completions.create(
        model="deepseek-v4-flash", temperature=0, max_tokens=16,
        messages=[{"role": "user", "content": "What is 17 + 25? Answer with the number only."}])
    assert "42" in answer.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url="http://%s:%d/v1" % (endpoint, API_PORT), api_key="wrong-key-" + "y" * 20,
                      max_retries=0).models.list()


@pytest.mark.untimed
def test_oversized_request_bodies_stop_at_the_endpoint(endpoint):
    """A body announced larger than the bound is answered 413 from its headers
    alone: the endpoint never reads it and no head sees it."""
    import socket

    request = ("POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
               % (endpoint, api_key(), 9 * 1024 * 1024)).encode()
    with socket.create_connection((endpoint, API_PORT), timeout=30) as conn:
        conn.sendall(request + b'{"model": "deepseek-v4-flash", "messages": [')
        status_line = conn.makefile("rb").readline().decode()
    assert status_line.split()[1] == "413", status_line


def listening(container):
    """{(address, port)} of every listening TCP socket in a node container."""
    out = docker_exec(container, "ss", "-ltnH").stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[3].rpartition(":")
        found.add((address.strip("[]"), int(port)))
    return found


def can_connect(container, address, port, timeout=3):
    """Whether a TCP connection from inside a lab container to address:port is accepted."""
    probe = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), %d).close()\n"
             "except OSError:\n sys.exit(1)\n" % timeout)
    return docker_exec(container, "python3", "-c", probe, address, str(port), check=False).returncode == 0


@pytest.mark.untimed
def test_sockets_listen_only_where_needed(lab):
    endpoint = endpoint_containers()[0]
    for pair in lab.values():
        head, worker = pair["head"], pair["worker"]
        sockets = listening(head["container"])
        mgmt, fabric = head["ansible_host"], head["sparkfleet_fabric_address"]
        api = {address for address, port in sockets if port == API_PORT}
        assert api == {mgmt}, "head %s: API listens on %s, expected only %s" % (head["name"], api, mgmt)
        # torch's TCPStore listens on every address, as on a real Spark...
        rendezvous = {address for address, port in sockets if port == MASTER_PORT}
        assert rendezvous and rendezvous <= {"*", "0.0.0.0", "::"}, rendezvous
        assert {port for address, port in sockets if address == fabric} == set()
        # ...so the kernel keeps it to the fabric: the worker reaches it over the
        # fabric; nobody reaches it over the management network.
        assert can_connect(worker["container"], fabric, MASTER_PORT)
        assert not can_connect(endpoint, mgmt, MASTER_PORT), "%s:%d open to the management network" % (mgmt, MASTER_PORT)
        assert not can_connect(worker["container"], mgmt, MASTER_PORT)
        guard = docker_exec(head["container"], "iptables", "-S", "SPARKFLEET-FABRIC-ONLY").stdout
        assert "--dport %d -j DROP" % MASTER_PORT in guard, guard
        wildcard = {port for address, port in sockets if address in ("0.0.0.0", "*", "::")}
        assert API_PORT not in wildcard, wildcard
        worker_sockets = listening(worker["container"])
        worker_fabric = {port for address, port in worker_sockets if address == worker["sparkfleet_fabric_address"]}
        assert worker_fabric == set(), "worker %s: fabric address serves %s" % (worker["name"], worker_fabric)
        assert not {port for _, port in worker_sockets} & {API_PORT, MASTER_PORT}
        # The node exporter answers on the management address only.
        for node in (head, worker):
            exporter = {address for address, port in listening(node["container"]) if port == NODE_EXPORTER_PORT}
            assert exporter == {node["ansible_host"]}, "%s: node exporter on %s" % (node["name"], exporter)


@pytest.mark.untimed
def test_monitoring_sockets_listen_only_where_needed():
    """Prometheus on the monitoring host's loopback; HAProxy's exporter on loopback beside it, else
    on the endpoint host's management address; keepalived holds no TCP socket."""
    with open(INVENTORY, encoding="utf-8") as handle:
        hosts = yaml.safe_load(handle)["all"]["children"]["sparkfleet_endpoint"]["hosts"]
    for index, (name, hv) in enumerate(hosts.items()):
        sockets = listening(container_of(name))
        prometheus = {address for address, port in sockets if port == PROMETHEUS_PORT}
        haproxy_exporter = {address for address, port in sockets if port == HAPROXY_EXPORTER_PORT}
        exporter = {address for address, port in sockets if port == NODE_EXPORTER_PORT}
        # The first endpoint host runs Prometheus (no sparkfleet_monitoring group in the lab).
        assert prometheus == ({"127.0.0.1"} if index == 0 else set()), (name, prometheus)
        assert haproxy_exporter == ({"127.0.0.1"} if index == 0 else {hv["ansible_host"]}), (name, haproxy_exporter)
        assert exporter == {hv["ansible_host"]}, (name, exporter)


NODE_EXPORTER_PORT = 9100
PROMETHEUS_PORT = 9090
HAPROXY_EXPORTER_PORT = 8405

SECRET_PATHS = ["/etc", "/var/lib/sparkfleet", "/usr/local/libexec/sparkfleet", "/run", "/root", "/var/log"]


def world_readable_files_holding(container, secret):
    """Files under SECRET_PATHS that an unprivileged user can read and whose content holds `secret`.

    Searched as `nobody`, so a 0644 file inside a 0700 directory (Docker's
    OCI bundle config.json, which holds a container's environment) counts as
    private, as it is.
    """
    script = ("find %s -xdev -type f -readable -size -20M 2>/dev/null | xargs -r grep -lF -- \"$1\" 2>/dev/null"
              % " ".join(SECRET_PATHS))
    result = docker_exec(container, "runuser", "-u", "nobody", "--", "sh", "-c", script, "sh", secret, check=False)
    return [line for line in result.stdout.splitlines() if line]


HUB_TOKEN = "hf_sparkfleetleaktest" + "Q" * 20


def assert_no_secret_in_files(lab, secrets_by_label):
    containers = [node["container"] for pair in lab.values() for node in pair.values()]
    containers += endpoint_containers()
    leaks = {}
    for container in containers:
        for label, secret in secrets_by_label.items():
            files = world_readable_files_holding(container, secret)
            if files:
                leaks["%s (%s)" % (container, label)] = files
    assert leaks == {}, leaks


@pytest.mark.untimed
def test_no_secret_in_world_readable_files_or_process_lists(lab, endpoint):
    """What the converge left: no key in a file others can read or on a command line.
    (What a run prints, with --diff -vv, is checked by the key rotation below, whose
    rollouts carry the old key, the new one and a hub token.)"""
    key = api_key()
    assert_no_secret_in_files(lab, {"API key": key})
    # The key does reach the places that need it, privately.
    head = heads(lab)[0]["container"]
    env = docker_exec(head, "stat", "-c", "%a %U", "/etc/sparkfleet/sparkfleet-vllm-head.env").stdout.split()
    assert env == ["600", "root"]
    ps = docker_exec(head, "ps", "-eo", "args").stdout
    assert key not in ps and not re.search(r"--api-key", ps)


def test_key_rotation_refuses_no_request(lab, endpoint, record_property):
    """Rotate the API key under load: clients on the old key, then on the new one,
    never see a refused or failed request (README "Security", key rotation). The
    rollouts run with --diff -vv and a hub token set: no key or token may show in
    their output, nor afterwards in a file others can read."""
    import secrets
    import time

    from loadgen import LoadGenerator

    old = api_key()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    new = "".join(secrets.choice(alphabet) for _ in range(48))
    url = "http://%s:%d" % (endpoint, API_PORT)
    window = json.dumps({"sparkfleet_api_key": new, "sparkfleet_api_key_previous": old})
    done = json.dumps({"sparkfleet_api_key": new})
    old_load = LoadGenerator(url, workers=2, max_seconds=900, api_key=old).start()
    new_load = None
    try:
        # 1. Every head learns the new key beside the old one, pair by pair.
        rc, output = playbook("playbooks/rolling_restart.yml", "--diff", "-vv", "-e", window,
                              "-e", "spark_model_hf_token=%s" % HUB_TOKEN, timeout=1500)
        assert rc == 0, output[-3000:]
        printed = [output]
        # 2. The endpoint accepts both; clients move to the new key.
        rc, output = playbook("playbooks/endpoint.yml", "--diff", "-vv", "-e", window)
        assert rc == 0, output[-3000:]
        printed.append(output)
        new_load = LoadGenerator(url, workers=2, max_seconds=900, api_key=new).start()
        time.sleep(3)
    finally:
        old_summary = old_load.stop()
    try:
        # 3. The old key is retired on the heads, then at the endpoint.
        rc, output = playbook("playbooks/rolling_restart.yml", "--diff", "-vv", "-e", done,
                              "-e", "spark_model_hf_token=%s" % HUB_TOKEN, timeout=1500)
        assert rc == 0, output[-3000:]
        printed.append(output)
        rc, output = playbook("playbooks/endpoint.yml", "--diff", "-vv", "-e", done)
        printed.append(output)
        assert rc == 0, output[-3000:]
        time.sleep(2)
    finally:
        new_summary = new_load.stop() if new_load else {"sent": 0, "failed": 0, "failures": []}
        # The lab keeps serving on the new key: store it where sparkfleet reads it.
        with open(API_KEY_FILE, "w", encoding="utf-8") as handle:
            handle.write(new + "\n")
    print("key rotation: old-key clients %s, new-key clients %s" % (
        json.dumps({k: old_summary[k] for k in ("sent", "failed")}),
        json.dumps({k: new_summary[k] for k in ("sent", "failed")})))
    record_property("rotation_old_key_sent", old_summary["sent"])
    record_property("rotation_new_key_sent", new_summary["sent"])
    assert old_summary["failed"] == 0, old_summary["failures"][:5]
    assert new_summary["failed"] == 0, new_summary["failures"][:5]
    assert old_summary["sent"] > 10 and new_summary["sent"] > 10
    head = heads(lab)[0]["ansible_host"]
    for address in (endpoint, head):
        assert status_of("http://%s:%d/v1/models" % (address, API_PORT), key=old) == 401
        assert status_of("http://%s:%d/v1/models" % (address, API_PORT), key=new) == 200
    keys_file = docker_exec(heads(lab)[0]["container"], "ls", "/etc/sparkfleet/", check=False).stdout
    assert "api-keys.yaml" not in keys_file
    for output in printed:
        for label, secret in (("old API key", old), ("new API key", new), ("hub token", HUB_TOKEN)):
            assert secret not in output, "a rollout or endpoint run printed the %s" % label
    assert_no_secret_in_files(lab, {"old API key": old, "new API key": new, "hub token": HUB_TOKEN})
