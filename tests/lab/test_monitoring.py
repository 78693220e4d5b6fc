"""The fleet's Prometheus in the lab (roles/fleet_monitoring): it scrapes both pairs, the
endpoint and every node with their labels; killing a worker raises SparkfleetRankRestarted
through Prometheus' alerts API within two scrape intervals, and it clears once the pair has
healed; the dashboard draws from it without Grafana."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest
import yaml

from conftest import ROOT, container_of, docker_exec, endpoint_group, unit_of, wait_serving

sys.path.insert(0, os.path.join(ROOT, "scripts", "lib"))

import sparkfleet_dashboard_render as dashboard_render  # noqa: E402

DEFAULTS = os.path.join(ROOT, "roles", "fleet_monitoring", "defaults", "main.yml")
DASHBOARD = os.path.join(ROOT, "roles", "fleet_monitoring", "files", "grafana", "sparkfleet-fleet.json")
SSH_KEY = os.path.join(os.path.expanduser("~"), ".config", "sparkfleet", "lab-ssh", "id_ed25519")


def _seconds(duration):
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


with open(DEFAULTS, encoding="utf-8") as _handle:
    _DEFAULTS = yaml.safe_load(_handle)
SCRAPE_S = _seconds(_DEFAULTS["fleet_monitoring_scrape_interval"])
RESTART_WINDOW_S = _seconds(_DEFAULTS["fleet_monitoring_alert_rank_restart_window"])
NCCL_TEXTFILE_S = _seconds(_DEFAULTS["fleet_monitoring_nccl_textfile_interval"])


@pytest.fixture(scope="module")
def prometheus():
    """GET a Prometheus API path on the monitoring host (the lab's endpoint container), parsed."""
    # The monitoring host: the first endpoint host (no sparkfleet_monitoring group in the lab).
    endpoint = next(iter(endpoint_group()["hosts"]))

    def get(path, **params):
        url = "http://127.0.0.1:9090%s?%s" % (path, urllib.parse.urlencode(params))
        out = docker_exec(container_of(endpoint), "curl", "-sf", url).stdout
        body = json.loads(out)
        assert body["status"] == "success", body
        return body["data"]
    return get


def _rank_restart_alerts(prometheus, node):
    return [a for a in prometheus("/api/v1/alerts")["alerts"]
            if a["labels"].get("alertname") == "SparkfleetRankRestarted" and a["labels"].get("node") == node]


@pytest.mark.untimed
def test_prometheus_scrapes_both_pairs_the_endpoint_and_every_node(lab, prometheus):
    # An earlier test may have just restarted a pair (test_doctor kills a worker): once every
    # head serves, each target is up again within a scrape interval or two.
    for roles in lab.values():
        wait_serving(roles["head"]["ansible_host"])
    deadline = time.monotonic() + 3 * SCRAPE_S + 10
    while True:
        targets = prometheus("/api/v1/targets", state="active")["activeTargets"]
        down = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets if t["health"] != "up"]
        if not down or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert down == [], down
    by_job = {}
    for target in targets:
        by_job.setdefault(target["labels"]["job"], []).append(target["labels"])
    heads = {pair: roles["head"]["name"] for pair, roles in lab.items()}
    assert sorted((t["pair"], t["node"]) for t in by_job["sparkfleet_vllm"]) == sorted(
        (pair, name) for pair, name in heads.items())
    endpoints = sorted(endpoint_group()["hosts"])
    assert sorted(t["node"] for t in by_job["sparkfleet_node"]) == sorted(
        [node["name"] for roles in lab.values() for node in roles.values()] + endpoints)
    assert sorted(t["endpoint"] for t in by_job["sparkfleet_haproxy"]) == endpoints
    # vLLM's own series carry the pair; each endpoint host's exporter sees every head.
    running = prometheus("/api/v1/query", query="vllm:num_requests_running")["result"]
    assert sorted(r["metric"]["pair"] for r in running) == sorted(heads)
    # Each endpoint host's HAProxy marks a restarted head up on its own checks (rise x
    # downinter), and Prometheus sees that a scrape later: measured, the second endpoint host
    # may still count one head right after the first counts two.
    want = [(name, str(len(heads))) for name in endpoints]
    deadline = time.monotonic() + 3 * SCRAPE_S + 10
    while True:
        active = prometheus("/api/v1/query", query='haproxy_backend_active_servers{proxy="vllm_heads"}')["result"]
        seen = sorted((r["metric"]["endpoint"], r["value"][1]) for r in active)
        if seen == want or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert seen == want
    # Exactly one endpoint host holds keepalived's virtual IP.
    vip = prometheus("/api/v1/query", query="sum by (vip) (sparkfleet_endpoint_vip_master)")["result"]
    assert [(r["metric"]["vip"], r["value"][1]) for r in vip] == [(endpoint_group()["vars"]["fleet_endpoint_vip"], "1")]
    # The serving units' restart counts and the NCCL network textfile, from every node.
    restarts = prometheus("/api/v1/query", query="node_systemd_service_restart_total")["result"]
    assert sorted((r["metric"]["node"], r["metric"]["name"]) for r in restarts) == sorted(
        (node["name"], unit_of(node) + ".service") for roles in lab.values() for node in roles.values())
    # A rank restarted by an earlier test reports its network again once it has logged NCCL's
    # choice, the textfile timer has run (every NCCL_TEXTFILE_S) and Prometheus has scraped.
    want = sorted((node["name"], "IB", "0") for roles in lab.values() for node in roles.values())
    deadline = time.monotonic() + NCCL_TEXTFILE_S + 2 * SCRAPE_S + 10
    while True:
        nccl = prometheus("/api/v1/query", query="sparkfleet_nccl_socket_fallback")["result"]
        seen = sorted((r["metric"]["node"], r["metric"]["net"], r["value"][1]) for r in nccl)
        if seen == want or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert seen == want
    # Nothing fires on a healthy fleet but the restart an earlier test made (test_doctor kills
    # pair b's worker), for the alert's window.
    assert [a["labels"]["alertname"] for a in prometheus("/api/v1/alerts")["alerts"]
            if a["state"] == "firing" and a["labels"]["alertname"] != "SparkfleetRankRestarted"] == []


@pytest.mark.untimed
def test_a_killed_worker_raises_the_rank_restart_alert_which_clears_after_the_pair_heals(lab, prometheus):
    head, worker = lab["a"]["head"], lab["a"]["worker"]
    assert _rank_restart_alerts(prometheus, worker["name"]) == []

    def restarts():
        return int(docker_exec(worker["container"], "systemctl", "show", "--property", "NRestarts", "--value",
                               unit_of(worker)).stdout.strip() or 0)
    before = restarts()
    docker_exec(worker["container"], "docker", "kill", "--signal", "KILL", unit_of(worker))
    deadline = time.monotonic() + 120
    while restarts() <= before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert restarts() > before, "systemd did not restart the worker"
    restarted = time.monotonic()
    firing = None
    while time.monotonic() - restarted < 2 * SCRAPE_S + 30:
        alerts = _rank_restart_alerts(prometheus, worker["name"])
        if alerts and alerts[0]["state"] == "firing":
            firing = time.monotonic() - restarted
            break
        time.sleep(1)
    assert firing is not None, "SparkfleetRankRestarted did not fire for %s" % worker["name"]
    alert = _rank_restart_alerts(prometheus, worker["name"])[0]
    print("SparkfleetRankRestarted firing %.1f s after systemd restarted the worker (scrape interval %.0f s)"
          % (firing, SCRAPE_S))
    assert firing <= 2 * SCRAPE_S + 3, "fired %.1f s after the restart, over two scrape intervals" % firing
    assert alert["labels"]["pair"] == "a" and alert["labels"]["name"] == unit_of(worker) + ".service"
    assert "doctor.yml --limit %s" % worker["name"] in alert["annotations"]["runbook"]

    healed = wait_serving(head["ansible_host"])
    cleared = None
    started = time.monotonic()
    while time.monotonic() - started < RESTART_WINDOW_S + 3 * SCRAPE_S + 30:
        if not _rank_restart_alerts(prometheus, worker["name"]):
            cleared = time.monotonic() - restarted
            break
        time.sleep(2)
    assert cleared is not None, "SparkfleetRankRestarted still active %.0f s after the restart" % (
        time.monotonic() - restarted)
    print("pair a serving again (checked %.1f s after the alert fired); the alert cleared %.1f s after the "
          "restart (window %.0f s)" % (healed, cleared, RESTART_WINDOW_S))
    # Nothing else fired for pair a: its head answered /metrics again well within a minute.
    assert [a["labels"]["alertname"] for a in prometheus("/api/v1/alerts")["alerts"]
            if a["state"] == "firing" and a["labels"].get("pair") == "a"] == []


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_dashboard_draws_from_the_labs_prometheus_without_grafana(lab):
    """Through an ssh tunnel, as docs/monitoring.md tells an operator; after the timed tests' load."""
    monitoring_host = next(iter(endpoint_group()["hosts"].values()))["ansible_host"]
    port = _free_port()
    tunnel = subprocess.Popen(["ssh", "-N", "-i", SSH_KEY, "-o", "StrictHostKeyChecking=no", "-o",
                               "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes",
                               "-L", "%d:127.0.0.1:9090" % port, "sparkops@%s" % monitoring_host],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        with open(DASHBOARD, encoding="utf-8") as handle:
            dashboard = json.load(handle)
        out_dir = os.path.join(ROOT, ".cache", "monitoring")
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, "sparkfleet-fleet.png")
        counts = dashboard_render.render(dashboard, "http://127.0.0.1:%d" % port, out, minutes=30)
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)
    for title, count in counts.items():
        print("%-45s %d series" % (title, count))
    print("drawn: %s" % out)
    assert os.path.getsize(out) > 20000
    # Every per-pair panel has both pairs; the endpoint's panels have data.
    for title, count in counts.items():
        assert count >= 1, title
    assert counts["Requests running, per pair"] == len(lab)
