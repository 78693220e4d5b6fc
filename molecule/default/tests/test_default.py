"""Verify a converged pair: units, containers, rendered launch files, a real answer."""

import json
import re

import pytest

HEAD = "molecule-spark-a1"
WORKER = "molecule-spark-a2"
testinfra_hosts = [HEAD, WORKER]


def role_of(host):
    return "head" if host.backend.get_hostname() == HEAD else "worker"


def launch(host):
    return json.loads(host.file("/etc/sparkfleet/sparkfleet-vllm-%s.json" % role_of(host)).content_string)


def test_unit_enabled_and_active(host):
    unit = host.service("sparkfleet-vllm-%s" % role_of(host))
    assert unit.is_enabled
    assert unit.is_running


def test_container_is_owned_by_systemd_only(host):
    name = "sparkfleet-vllm-%s" % role_of(host)
    out = host.check_output("docker inspect --format '{{.State.Running}} {{.HostConfig.RestartPolicy.Name}} "
                            "{{.HostConfig.AutoRemove}}' %s" % name)
    assert out == "true no true"


def test_argv_matches_role(host):
    argv = launch(host)["argv"]
    serve = argv[argv.index("serve") + 1:]
    rank = serve[serve.index("--node-rank") + 1]
    if role_of(host) == "head":
        assert "--headless" not in serve and rank == "0"
    else:
        assert "--headless" in serve and rank == "1"
    assert serve[serve.index("--master-addr") + 1] == "10.79.1.11"
    # JSON flags reach vLLM as single, valid JSON argv elements.
    assert json.loads(serve[serve.index("--speculative-config") + 1])["method"] == "mtp"


def test_running_container_got_the_rendered_argv(host):
    name = "sparkfleet-vllm-%s" % role_of(host)
    args = json.loads(host.check_output("docker inspect --format '{{json .Args}}' %s" % name))
    assert args == launch(host)["argv"][-len(args):]


def test_env_file_is_private_and_forbids_fork(host):
    env = host.file("/etc/sparkfleet/sparkfleet-vllm-%s.env" % role_of(host))
    assert env.mode == 0o600
    lines = env.content_string.splitlines()
    # docker --env-file reads one VAR=value a line: anything else is one long, wrong variable.
    assert lines and all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^\\]*", line) for line in lines), lines
    assert "VLLM_WORKER_MULTIPROC_METHOD=spawn" in lines


def test_unit_is_verified_and_names_existing_programs(host):
    unit = "/etc/systemd/system/sparkfleet-vllm-%s.service" % role_of(host)
    host.run_expect([0], "/usr/local/libexec/sparkfleet/sparkfleet-verify-unit %s %s"
                    % (unit, unit.rsplit("/", 1)[1]))


@pytest.mark.parametrize("prompt, expected", [("What is 17 + 25? Answer with the number only.", "42")])
def test_head_answers_a_chat_completion(host, prompt, expected):
    if role_of(host) != "head":
        pytest.skip("the worker is headless")
    body = json.dumps({"model": "deepseek-v4-flash", "temperature": 0, "max_tokens": 16,
                       "messages": [{"role": "user", "content": prompt}]})
    # Authentication is on by default: the key is only in the 0600 env file.
    key = [line.split("=", 1)[1] for line in host.file(
        "/etc/sparkfleet/sparkfleet-vllm-head.env").content_string.splitlines() if line.startswith("VLLM_API_KEY=")]
    assert key, "no VLLM_API_KEY in the head's environment file"
    unauthenticated = host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v1/models")
    assert unauthenticated.stdout.strip() == "401"
    out = host.check_output("curl -sf http://127.0.0.1:8000/v1/chat/completions "
                            "-H 'Content-Type: application/json' -H 'Authorization: Bearer %s' -d '%s'"
                            % (key[0], body))
    assert expected in json.loads(out)["choices"][0]["message"]["content"]


def listening(host):
    """{(address, port)} of the node's listening TCP sockets."""
    found = set()
    for line in host.check_output("ss -ltnH").splitlines():
        address, _, port = line.split()[3].rpartition(":")
        found.add((address.strip("[]"), int(port)))
    return found


def test_rendezvous_is_kept_to_the_fabric(host):
    sockets = listening(host)
    rendezvous = {address for address, port in sockets if port == 29501}
    guard = host.service("sparkfleet-port-guard")
    assert guard.is_enabled and guard.is_running
    rules = host.check_output("iptables -S SPARKFLEET-FABRIC-ONLY")
    interface = host.check_output("ip -o -4 addr show | awk '/10\\.79\\.1\\./ {print $2}'")
    assert rules.splitlines()[1:] == [
        "-A SPARKFLEET-FABRIC-ONLY -i lo -p tcp -m tcp --dport 29501 -j RETURN",
        "-A SPARKFLEET-FABRIC-ONLY -i %s -p tcp -m tcp --dport 29501 -j RETURN" % interface,
        "-A SPARKFLEET-FABRIC-ONLY -p tcp -m tcp --dport 29501 -j DROP"], rules
    assert "-A INPUT -j SPARKFLEET-FABRIC-ONLY" in host.check_output("iptables -S INPUT")
    if role_of(host) == "head":
        # torch's TCPStore listens on every address; the guard keeps it to the fabric.
        assert rendezvous and rendezvous <= {"*", "0.0.0.0", "::"}, rendezvous
    else:
        # The worker dials the head over the fabric; it listens on neither the API nor the rendezvous port.
        assert rendezvous == set()
        assert not {port for _, port in sockets} & {8000, 29501}
        host.run_expect([0], "python3 -c 'import socket; socket.create_connection((\"10.79.1.11\", 29501), 3).close()'")
