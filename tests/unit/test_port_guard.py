"""sparkfleet-port-guard: the rendezvous port only on the fabric and loopback, idempotent, for IPv4 and IPv6."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

TOOL = os.path.join(ROOT, "roles", "spark_fabric", "files", "sparkfleet-port-guard")

# A stand-in for iptables/ip6tables that keeps its chains in a JSON file and
# answers the way iptables does (exit 1 on a missing chain or rule).
FAKE = r'''#!/usr/bin/env python3
import json, os, sys
path = os.environ["FAKE_TABLES"] + "." + os.path.basename(sys.argv[0])
state = json.load(open(path)) if os.path.exists(path) else {"INPUT": ["-j DOCKER-USER-LIKE"]}
args = sys.argv[1:]
if args[:1] == ["-w"]:
    args = args[2:]
op, chain, rest = args[0], args[1], " ".join(args[2:])
def save():
    json.dump(state, open(path, "w"))
if op == "-S":
    if chain not in state: sys.exit(1)
    print("-N %s" % chain if chain != "INPUT" else "-P INPUT ACCEPT")
    for rule in state[chain]: print("-A %s %s" % (chain, rule))
elif op == "-N":
    if chain in state: sys.exit(1)
    state[chain] = []; save()
elif op == "-F": state[chain] = []; save()
elif op == "-X": del state[chain]; save()
elif op == "-A": state[chain].append(rest); save()
elif op == "-I":
    state[chain].insert(int(args[2]) - 1, " ".join(args[3:])); save()
elif op == "-C": sys.exit(0 if rest in state.get(chain, []) else 1)
elif op == "-D": state[chain].remove(rest); save()
'''


@pytest.fixture
def tables(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("iptables", "ip6tables"):
        (bindir / name).write_text(FAKE)
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    monkeypatch.setenv("FAKE_TABLES", str(tmp_path / "tables"))

    def state(tool="iptables"):
        return json.loads((tmp_path / ("tables." + tool)).read_text())
    state.bindir = bindir
    return state


def guard(*args):
    return subprocess.run([sys.executable, TOOL] + list(args), capture_output=True, text=True)


def test_apply_keeps_the_port_to_the_fabric_and_loopback_and_is_idempotent(tables):
    for _ in range(2):
        result = guard("apply", "--interface", "enp1s0f0np0", "--port", "29501")
        assert result.returncode == 0, result.stderr
    for tool in ("iptables", "ip6tables"):
        state = tables(tool)
        assert state["SPARKFLEET-FABRIC-ONLY"] == [
            "-p tcp --dport 29501 -i lo -j RETURN",
            "-p tcp --dport 29501 -i enp1s0f0np0 -j RETURN",
            "-p tcp --dport 29501 -j DROP"]
        assert state["INPUT"] == ["-j SPARKFLEET-FABRIC-ONLY", "-j DOCKER-USER-LIKE"]
    assert "TCP 29501 reachable only on enp1s0f0np0 and lo" in result.stdout


def test_a_new_port_replaces_the_old_rules(tables):
    guard("apply", "--interface", "eth1", "--port", "29501")
    guard("apply", "--interface", "eth1", "--port", "29600")
    assert all("29501" not in rule for rule in tables()["SPARKFLEET-FABRIC-ONLY"])


def test_remove_leaves_only_what_was_there(tables):
    guard("apply", "--interface", "eth1", "--port", "29501")
    assert guard("remove").returncode == 0
    assert tables() == {"INPUT": ["-j DOCKER-USER-LIKE"]}


def test_without_iptables_it_fails_saying_what_to_do(tables, tmp_path, monkeypatch):
    os.unlink(tables.bindir / "iptables")
    os.unlink(tables.bindir / "ip6tables")
    monkeypatch.setenv("PATH", str(tables.bindir))
    result = subprocess.run([sys.executable, TOOL, "apply", "--interface", "eth1", "--port", "29501"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "iptables is not installed" in result.stderr and "spark_fabric_port_guard: false" in result.stderr


@pytest.mark.parametrize("argv", [["apply", "--port", "29501"], ["apply", "--interface", "eth1"],
                                  ["apply", "--interface", "eth1", "--port", "70000"]])
def test_bad_arguments_exit_2(argv, tables):
    assert guard(*argv).returncode == 2
