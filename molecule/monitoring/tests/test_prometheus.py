"""Verify Prometheus on the endpoint host: on loopback, with sparkfleet's rules loaded and every
target up with its labels."""

import json
import time

GATEWAY = "molecule-mon-gw"
testinfra_hosts = [GATEWAY]


def api(host, path):
    body = json.loads(host.check_output("curl -sf 'http://127.0.0.1:9090%s'" % path))
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_listens_on_loopback_only(host):
    service = host.service("prometheus")
    assert service.is_running and service.is_enabled
    assert host.socket("tcp://127.0.0.1:9090").is_listening
    assert not host.socket("tcp://0.0.0.0:9090").is_listening
    assert host.socket("tcp://127.0.0.1:8405").is_listening  # HAProxy's exporter, Prometheus beside it


def test_prometheus_loaded_every_sparkfleet_rule(host):
    groups = api(host, "/api/v1/rules")["groups"]
    names = sorted(rule["name"] for group in groups for rule in group["rules"])
    assert len(names) == 13 and "SparkfleetRankRestarted" in names and "SparkfleetPairNotServing" in names
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])


def test_every_target_is_up_with_its_labels(host):
    targets = api(host, "/api/v1/targets?state=active")["activeTargets"]
    assert all(t["health"] == "up" for t in targets), [(t["scrapeUrl"], t["lastError"]) for t in targets]
    labels = sorted((t["labels"]["job"], t["labels"]["instance"], t["labels"].get("pair", "-"),
                     t["labels"].get("role", "-")) for t in targets)
    assert labels == [
        ("prometheus", "127.0.0.1:9090", "-", "-"),
        ("sparkfleet_haproxy", GATEWAY, "-", "-"),
        ("sparkfleet_node", GATEWAY, "-", "endpoint"),
        ("sparkfleet_node", "molecule-mon-head", "a", "head"),
        ("sparkfleet_node", "molecule-mon-worker", "a", "worker"),
        ("sparkfleet_vllm", "molecule-mon-head", "a", "-"),
    ]


def test_alertmanager_on_loopback_routes_alerts_to_the_webhook(host):
    service = host.service("prometheus-alertmanager")
    assert service.is_running and service.is_enabled
    assert host.socket("tcp://127.0.0.1:9093").is_listening
    assert not host.socket("tcp://0.0.0.0:9093").is_listening
    config = host.file("/etc/prometheus/alertmanager.yml")
    assert config.mode == 0o640 and config.group == "prometheus"
    # Prometheus sends its alerts there.
    managers = api(host, "/api/v1/alertmanagers")["activeAlertmanagers"]
    assert [m["url"] for m in managers] == ["http://127.0.0.1:9093/api/v2/alerts"]
    # An alert posted to Alertmanager reaches the webhook, with its pair.
    host.check_output("curl -sf -XPOST -H 'Content-Type: application/json' http://127.0.0.1:9093/api/v2/alerts "
                      "-d '[{\"labels\": {\"alertname\": \"SparkfleetMoleculeProbe\", \"pair\": \"a\"}}]'")
    deadline = time.monotonic() + 60
    received = ""
    while time.monotonic() < deadline and "SparkfleetMoleculeProbe" not in received:
        time.sleep(1)
        received = host.run("cat /var/log/webhook-receiver.jsonl").stdout
    posts = [json.loads(line) for line in received.splitlines() if "SparkfleetMoleculeProbe" in line]
    assert posts, received
    assert posts[0]["receiver"] == "sparkfleet-webhook"
    assert posts[0]["alerts"][0]["labels"] == {"alertname": "SparkfleetMoleculeProbe", "pair": "a"}
