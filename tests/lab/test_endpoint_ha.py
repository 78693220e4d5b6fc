"""The highly available endpoint in the lab: two HAProxy hosts and keepalived's virtual IP, as
inventory/example. Stopping the host that holds the VIP moves it to the other within 3 s, and
clients using the OpenAI SDK with its default retries see no failed request; rolling both endpoint
hosts (playbooks/rolling_endpoint.yml) under the same load fails none either.

The load is non-streamed completions: a stream in flight on the host that loses the VIP is cut
when the VIP moves (the SDK cannot retry a stream it has started reading); docs/operations.md says so."""

import subprocess
import threading
import time

import openai
import pytest

from conftest import api_key, container_of, docker_exec, endpoint_group, playbook

API_PORT = 8000


def _vip_and_hosts():
    group = endpoint_group()
    vip = (group.get("vars") or {}).get("fleet_endpoint_vip")
    if not vip or len(group["hosts"]) < 2:
        pytest.fail("the lab's endpoint has no virtual IP and second host (lab/sparkfleet-lab up --endpoints 2)")
    return vip, list(group["hosts"])


def _holds(host, vip):
    out = docker_exec(container_of(host), "ip", "-o", "-4", "addr", "show", check=False).stdout
    return (" %s/" % vip) in out


def _holders(hosts, vip):
    return [host for host in hosts if _holds(host, vip)]


class SdkLoad:
    """Threads asking the fleet through the VIP with the OpenAI SDK's default retries (2)."""

    def __init__(self, vip, threads=4):
        # The SDK's defaults (2 retries, 10 min timeout): a client as people run it.
        self.client = openai.OpenAI(base_url="http://%s:%d/v1" % (vip, API_PORT), api_key=api_key())
        self.stop = threading.Event()
        self.ok = 0
        self.failed = []
        # (start, seconds) of every request: a connection left hanging by a host
        # that lost the VIP shows as a request that took the SDK's read timeout.
        self.durations = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                answer = self.client.chat.completions.create(
                    model="deepseek-v4-flash", max_tokens=16, temperature=0,
                    messages=[{"role": "user", "content": "What is 17 + 25? Answer with the number only."}])
                good = "42" in (answer.choices[0].message.content or "")
                with self.lock:
                    if good:
                        self.ok += 1
                    else:
                        self.failed.append("wrong answer: %r" % answer.choices[0].message.content)
            except openai.OpenAIError as exc:
                with self.lock:
                    self.failed.append("%s: %s" % (type(exc).__name__, exc))
            with self.lock:
                self.durations.append((started, time.monotonic() - started))

    def slowest(self, since=0.0):
        with self.lock:
            return max([d for s, d in self.durations if s >= since] or [0.0])

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)


def _wait_back(host, vip, timeout=180):
    """A restarted endpoint host is back: HAProxy answers, keepalived has joined as BACKUP."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = docker_exec(container_of(host), "cat", "/run/sparkfleet/vip-state", check=False).stdout.strip()
        health = docker_exec(container_of(host), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             "http://127.0.0.1:%d/health" % API_PORT, check=False).stdout.strip()
        if state == "BACKUP" and health == "200":
            return
        time.sleep(1)
    pytest.fail("%s did not come back (HAProxy answering, keepalived BACKUP) within %d s" % (host, timeout))


def test_stopping_the_vip_holder_moves_the_vip_and_no_sdk_request_fails():
    vip, hosts = _vip_and_hosts()
    holders = _holders(hosts, vip)
    assert len(holders) == 1, "the VIP %s is held by %s" % (vip, holders or "nobody")
    holder = holders[0]
    other = next(host for host in hosts if host != holder)
    with SdkLoad(vip) as load:
        time.sleep(5)
        before = load.ok
        started = time.monotonic()
        stopper = subprocess.Popen(["docker", "stop", "--time", "30", container_of(holder)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        moved = None
        while time.monotonic() - started < 30:
            if _holds(other, vip):
                moved = time.monotonic() - started
                break
            time.sleep(0.05)
        stopper.wait(timeout=120)
        time.sleep(8)
        after = load.ok - before
    slowest = load.slowest(since=started - 30)
    print("VIP %s moved from %s to %s %.2f s after `docker stop`; %d requests answered (%d after the stop), "
          "%d failed, slowest %.2f s" % (vip, holder, other, moved or -1, load.ok, after, len(load.failed), slowest))
    subprocess.run(["docker", "start", container_of(holder)], check=True, capture_output=True)
    _wait_back(holder, vip)
    assert moved is not None and moved <= 3.0, "the VIP took %s s to move" % moved
    assert load.failed == [], load.failed[:5]
    assert before > 0 and after > 10 * len(load.threads), "the fleet answered %d requests after the stop" % after
    assert slowest < 10, "a request took %.1f s: a connection hung on the stopped host" % slowest
    # nopreempt: the host that came back does not take the VIP back.
    assert _holders(hosts, vip) == [other]


def test_rolling_both_endpoint_hosts_under_load_fails_no_request():
    vip, hosts = _vip_and_hosts()
    with SdkLoad(vip) as load:
        time.sleep(3)
        started = time.monotonic()
        rc, output = playbook("playbooks/rolling_endpoint.yml", timeout=600)
        took = time.monotonic() - started
        time.sleep(3)
    assert rc == 0, output[-4000:]
    slowest = load.slowest()
    print("rolled %d endpoint hosts in %.1f s under load: %d requests answered, %d failed, slowest %.2f s"
          % (len(hosts), took, load.ok, len(load.failed), slowest))
    assert load.failed == [], load.failed[:5]
    assert slowest < 10, "a request took %.1f s: a connection hung on a host that gave the VIP up" % slowest
    assert output.count("back as BACKUP") == len(hosts), output[-3000:]
    assert len(_holders(hosts, vip)) == 1
