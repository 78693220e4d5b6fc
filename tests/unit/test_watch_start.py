"""The start watch (plugins/action/sparkfleet_watch_start.py): a line a round on stderr until the
head's API is up, each round reading the worker over a connection built from the worker's own
inventory variables; a rank that stops ends the watch with both ranks' last phase."""

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Stand-ins for systemctl and journalctl: a unit's state comes from
# $FAKE_UNITS/<host>-<unit>.json, the host from the interpreter wrapper that ran the module.
FAKE_SYSTEMCTL = r'''#!%(python)s
import json, os, sys
unit = sys.argv[2].rsplit(".service", 1)[0]
path = os.path.join(os.environ["FAKE_UNITS"], "%%s-%%s.json" %% (os.environ["FAKE_HOST"], unit))
if not os.path.exists(path):
    sys.exit("no such unit for this host: " + path)
state = json.load(open(path))
started = int(state.pop("started_monotonic") * 1e6)  # CLOCK_MONOTONIC: one clock for every process
state.update(InvocationID="inv-" + unit, InactiveExitTimestampMonotonic=str(started))
print("\n".join("%%s=%%s" %% item for item in state.items()))
'''
FAKE_JOURNALCTL = "#!/bin/sh\necho 'INFO starting'\n"
INTERPRETER = "#!/bin/sh\nFAKE_HOST=%(host)s exec %(python)s \"$@\"\n"


def _executable(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


class _Health(http.server.BaseHTTPRequestHandler):
    # Up from this many /health requests on (counted, not timed: a loaded machine starts
    # ansible-playbook slowly); None: never.
    up_after = None
    calls = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        _Health.calls += 1
        up = _Health.up_after is not None and _Health.calls > _Health.up_after
        self.send_response(200 if up else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(name="health")
def _health_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _pinned_fingerprint():
    with open(os.path.join(ROOT, "group_vars", "all", "fleet.yml"), encoding="utf-8") as handle:
        version = re.search(r"^sparkfleet_vllm_version: \"?([^\"\s]+)", handle.read(), re.M).group(1)
    return os.path.join(ROOT, "files", "vllm", "vllm-%s.fingerprint.json" % version)


def _watch(tmp_path, health, worker_state):
    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    bin_dir.mkdir()
    units.mkdir()
    python = sys.executable
    _executable(bin_dir / "systemctl", FAKE_SYSTEMCTL % {"python": python})
    _executable(bin_dir / "journalctl", FAKE_JOURNALCTL)
    running = {"ActiveState": "active", "SubState": "running", "started_monotonic": time.monotonic() - 5}
    (units / "head-test-head.json").write_text(json.dumps(running))
    (units / "worker-test-worker.json").write_text(json.dumps(dict(running, **worker_state)))
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("".join(
        "%s ansible_connection=local ansible_python_interpreter=%s\n"
        % (host, _executable(tmp_path / ("%s-python" % host), INTERPRETER % {"host": host, "python": python}))
        for host in ("head", "worker")))
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), FAKE_UNITS=str(units),
               FINGERPRINT=_pinned_fingerprint(), HEALTH_URL="http://127.0.0.1:%d/health" % health.server_port,
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    result = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", str(inventory),
                             "tests/unit/playbooks/watch_start.yml"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = re.findall(r"^\[head\] (pair t \| .*)$", result.stderr, re.M)
    return result, lines


def test_the_watch_reads_both_ranks_each_round_until_the_api_is_up(tmp_path, health):
    # Each round asks /health once or twice: up in the fourth round or later.
    _Health.up_after, _Health.calls = 6, 0
    result, lines = _watch(tmp_path, health, {})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert len(lines) >= 3, lines
    # The worker's reading was taken as the worker (its own interpreter wrapper): its unit file exists
    # only for that host.
    assert all(line.endswith("| worker: starting (before vLLM's first start-up line)") for line in lines), lines
    elapsed = [int(re.match(r"pair t \| (\d+) s \|", line).group(1)) for line in lines]
    assert elapsed == sorted(elapsed) and elapsed[-1] > elapsed[0] >= 5, lines
    assert "| head: API up, gate checks running |" in lines[-1], lines
    assert "registered: watched_start=True head=api_up worker=starting" in result.stdout, result.stdout[-3000:]


def test_a_stopped_worker_ends_the_watch_with_both_ranks_last_phase(tmp_path, health):
    _Health.up_after, _Health.calls = None, 0
    result, lines = _watch(tmp_path, health, {"ActiveState": "inactive", "SubState": "dead"})
    assert result.returncode != 0
    assert "pair t did not come up: the worker's unit is inactive/dead." in result.stdout, result.stdout[-3000:]
    assert "Last phase reached: head starting (before vLLM's first start-up line); worker not running." in result.stdout, result.stdout[-3000:]
    assert "registered:" not in result.stdout and "invocation" not in result.stdout
    assert len(lines) == 1, lines
