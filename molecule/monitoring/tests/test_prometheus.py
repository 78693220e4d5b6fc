"""Verify Prometheus on the endpoint host: on loopback, with sparkfleet's rules loaded and every
target up with its labels."""

import json

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
        ("sparkfleet_node", "molecule-mon-head", "a", "head"),
        ("sparkfleet_node", "molecule-mon-worker", "a", "worker"),
        ("sparkfleet_vllm", "molecule-mon-head", "a", "-"),
    ]
