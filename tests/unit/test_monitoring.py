"""The fleet's monitoring: scrape targets and labels, the alert rules under
`promtool test rules`, and the vLLM metric names they read against every
pinned release's fingerprint."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

import sparkfleet_monitoring as monitoring
from sparkfleet_preflight import pinned_releases

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ROLE = os.path.join(ROOT, "roles", "fleet_monitoring")
RULES_TEMPLATE = os.path.join(ROLE, "templates", "sparkfleet-alerts.rules.yml.j2")
DASHBOARDS = sorted(glob.glob(os.path.join(ROLE, "files", "grafana", "*.json")))
LAB_NODE_IMAGE = "sparkfleet-lab/node:latest"

NODES = [
    {"name": "spark-01", "pair": "a", "role": "head", "api_address": "192.168.1.101", "mgmt_address": "192.168.1.101"},
    {"name": "spark-02", "pair": "a", "role": "worker", "api_address": "192.168.1.102", "mgmt_address": "192.168.1.102"},
    {"name": "spark-03", "pair": "b", "role": "head", "api_address": "0.0.0.0", "mgmt_address": "192.168.1.103"},
    {"name": "spark-04", "pair": "b", "role": "worker", "api_address": "", "mgmt_address": "fd00::4"},
]


def test_every_head_is_scraped_with_its_pair_and_every_spark_has_a_node_exporter():
    jobs = monitoring.scrape_targets(NODES, [{"name": "fleet-gw", "metrics_address": "127.0.0.1",
                                              "mgmt_address": "192.168.1.100"}], 8000, 9100, 8405)
    assert jobs[monitoring.JOB_VLLM] == [
        {"targets": ["192.168.1.101:8000"], "labels": {"instance": "spark-01", "node": "spark-01", "pair": "a"}},
        # A head listening on every address is scraped at its management address.
        {"targets": ["192.168.1.103:8000"], "labels": {"instance": "spark-03", "node": "spark-03", "pair": "b"}},
    ]
    assert [(c["targets"], c["labels"]["role"]) for c in jobs[monitoring.JOB_NODE]] == [
        (["192.168.1.101:9100"], "head"), (["192.168.1.102:9100"], "worker"),
        (["192.168.1.103:9100"], "head"), (["[fd00::4]:9100"], "worker"),
        # The endpoint host's own node exporter (memory, disk, the virtual IP).
        (["192.168.1.100:9100"], "endpoint")]
    assert jobs[monitoring.JOB_HAPROXY] == [
        {"targets": ["127.0.0.1:8405"], "labels": {"instance": "fleet-gw", "endpoint": "fleet-gw"}}]


def test_a_spark_without_a_management_address_is_named():
    nodes = [dict(NODES[0], mgmt_address="")]
    with pytest.raises(monitoring.MonitoringError, match="spark-01 has no management address"):
        monitoring.scrape_targets(nodes, [], 8000, 9100, 8405)


def test_an_endpoint_host_that_is_also_a_spark_has_one_node_exporter():
    jobs = monitoring.scrape_targets(NODES, [{"name": "spark-01", "metrics_address": "127.0.0.1",
                                              "mgmt_address": "192.168.1.101"}], 8000, 9100, 8405)
    assert [c["labels"]["instance"] for c in jobs[monitoring.JOB_NODE]].count("spark-01") == 1


def test_prometheus_config_lists_the_rules_and_every_job():
    jobs = monitoring.scrape_targets(NODES, [{"name": "gw", "metrics_address": "10.0.0.9", "mgmt_address": "10.0.0.9"}],
                                     8000, 9100, 8405)
    config = monitoring.prometheus_config(jobs, "15s", "15s", ["/etc/prometheus/rules/x.yml"], "127.0.0.1:9090")
    assert config["global"] == {"scrape_interval": "15s", "evaluation_interval": "15s"}
    assert config["rule_files"] == ["/etc/prometheus/rules/x.yml"]
    assert [c["job_name"] for c in config["scrape_configs"]] == [
        "prometheus", monitoring.JOB_VLLM, monitoring.JOB_NODE, monitoring.JOB_HAPROXY]
    assert "alerting" not in config
    with_am = monitoring.prometheus_config(jobs, "15s", "15s", [], "127.0.0.1:9090", ["127.0.0.1:9093"])
    assert with_am["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]


def test_targets_down_names_instance_job_url_and_error():
    active = [
        {"health": "up", "labels": {"instance": "spark-01", "job": "sparkfleet_vllm"}},
        {"health": "down", "labels": {"instance": "spark-02", "job": "sparkfleet_node"},
         "scrapeUrl": "http://192.168.1.102:9100/metrics", "lastError": "connection refused"},
        {"health": "unknown", "labels": {"instance": "fleet-gw", "job": "sparkfleet_haproxy"},
         "scrapeUrl": "http://127.0.0.1:8405/metrics", "lastError": ""},
    ]
    assert monitoring.targets_down(active) == [
        "spark-02 (sparkfleet_node) http://192.168.1.102:9100/metrics: connection refused",
        "fleet-gw (sparkfleet_haproxy) http://127.0.0.1:8405/metrics: not scraped yet"]
    # Right after a reload the new targets are not listed yet: that is not "all up".
    jobs = monitoring.scrape_targets(NODES, [{"name": "gw", "metrics_address": "10.0.0.9", "mgmt_address": "10.0.0.9"}],
                                     8000, 9100, 8405)
    assert monitoring.target_count(jobs) == 1 + 2 + 5 + 1
    assert monitoring.targets_down(active[:1], monitoring.target_count(jobs)) == [
        "1 of 9 targets active (configuration not loaded yet?)"]


def test_metric_family_names_drop_sample_suffixes():
    text = ('rate(vllm:num_preemptions_total[5m]) + vllm:kv_cache_usage_perc '
            'histogram_quantile(0.99, rate(vllm:time_to_first_token_seconds_bucket[5m])) node_load1')
    assert monitoring.vllm_metric_names(text) == [
        "vllm:kv_cache_usage_perc", "vllm:num_preemptions", "vllm:time_to_first_token_seconds"]


@pytest.mark.parametrize("version", pinned_releases(ROOT))
def test_every_vllm_metric_the_rules_and_dashboards_read_is_in_the_release(version):
    """A release that renames a metric fails here and in its release report, not in a silent graph."""
    with open(os.path.join(ROOT, "files", "vllm", "vllm-%s.fingerprint.json" % version), encoding="utf-8") as handle:
        release_metrics = set(json.load(handle)["metrics"])
    assert DASHBOARDS, "no Grafana dashboard in roles/fleet_monitoring/files/grafana"
    for path in [RULES_TEMPLATE] + DASHBOARDS:
        with open(path, encoding="utf-8") as handle:
            used = set(monitoring.vllm_metric_names(handle.read()))
        assert used, path
        assert used <= release_metrics, "%s reads %s, not in vLLM %s" % (
            os.path.relpath(path, ROOT), sorted(used - release_metrics), version)


def _promtool(rules_dir, *args):
    """promtool from the host, else from the lab's node image (Debian's prometheus package)."""
    if shutil.which("promtool"):
        return subprocess.run(["promtool"] + list(args), cwd=rules_dir, capture_output=True, text=True, check=False)
    docker = shutil.which("docker")
    image = docker and subprocess.run([docker, "image", "inspect", LAB_NODE_IMAGE], capture_output=True,
                                      check=False).returncode == 0
    if not image:
        pytest.fail("promtool is needed: install Debian's or Ubuntu's prometheus package, or build the lab's "
                    "images (lab/sparkfleet-lab images), whose node image carries it")
    return subprocess.run([docker, "run", "--rm", "--network=none", "-v", "%s:/rules" % rules_dir, "-w", "/rules",
                           LAB_NODE_IMAGE, "promtool"] + list(args), capture_output=True, text=True, check=False)


def test_alert_rules_pass_promtool_check_and_their_unit_tests(tmp_path):
    rules_dir = str(tmp_path)
    os.chmod(rules_dir, 0o755)
    ansible_playbook = shutil.which("ansible-playbook") or os.path.join(os.path.dirname(sys.executable),
                                                                        "ansible-playbook")
    render = subprocess.run(
        [ansible_playbook, os.path.join(ROOT, "tests", "monitoring", "render-rules.yml"),
         "-e", "rules_dir=%s" % rules_dir],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert render.returncode == 0, render.stdout + render.stderr
    shutil.copy(os.path.join(ROOT, "tests", "monitoring", "alerts.test.yml"), rules_dir)
    check = _promtool(rules_dir, "check", "rules", "sparkfleet-alerts.rules.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 13 rules found" in check.stdout
    tested = _promtool(rules_dir, "test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert the rules define is fired by at least one test case.
    with open(os.path.join(rules_dir, "sparkfleet-alerts.rules.yml"), encoding="utf-8") as handle:
        defined = {line.split(":", 1)[1].strip() for line in handle if line.strip().startswith("- alert:")}
    with open(os.path.join(rules_dir, "alerts.test.yml"), encoding="utf-8") as handle:
        tests = handle.read()
    assert defined and all("alertname: %s\n" % name in tests for name in defined), defined


def test_a_spark_known_by_name_is_scraped_at_that_name():
    """Without a management IP (ansible_host a DNS name) the node exporter listens on every
    address (warned by the role) and Prometheus reaches it by the name."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location("sparkfleet_monitoring_filters",
                                                  os.path.join(ROOT, "plugins", "filter", "sparkfleet_monitoring.py"))
    monitoring_filters = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(monitoring_filters)

    hostvars = {
        "spark-01": {"sparkfleet_pair": "a", "sparkfleet_node_role": "head", "sparkfleet_mgmt_ip": "",
                     "ansible_host": "spark-01.lan", "sparkfleet_api_bind_address": "0.0.0.0"},
        "spark-02": {"sparkfleet_pair": "a", "sparkfleet_node_role": "worker", "sparkfleet_mgmt_ip": "10.0.0.2",
                     "ansible_host": "10.0.0.2"},
        "gw": {"sparkfleet_mgmt_ip": "", "fleet_endpoint_metrics_address": "127.0.0.1"},
    }
    jobs = monitoring_filters.sparkfleet_scrape_targets(hostvars, ["spark-01", "spark-02"], ["gw"], 8000, 9100, 8405)
    assert jobs[monitoring.JOB_VLLM][0]["targets"] == ["spark-01.lan:8000"]
    assert [c["targets"][0] for c in jobs[monitoring.JOB_NODE]] == ["spark-01.lan:9100", "10.0.0.2:9100", "gw:9100"]
