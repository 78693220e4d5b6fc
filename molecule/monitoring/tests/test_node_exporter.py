"""Verify the node exporters: on their management address only, with the systemd collector, the
textfile collector and the NCCL textfile timer."""

import os

import yaml

NODES = {"molecule-mon-head": "10.79.5.11", "molecule-mon-worker": "10.79.5.21"}
testinfra_hosts = list(NODES)

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
with open(os.path.join(PROJECT, "roles", "fleet_monitoring", "defaults", "main.yml"), encoding="utf-8") as _f:
    DEFAULTS = yaml.safe_load(_f)
with open(os.path.join(PROJECT, "group_vars", "all", "fleet.yml"), encoding="utf-8") as _f:
    TEXTFILE_DIR = yaml.safe_load(_f)["sparkfleet_textfile_dir"]


def test_node_exporter_listens_on_the_management_address_only(host):
    name = host.backend.get_hostname()
    port = DEFAULTS["fleet_monitoring_node_exporter_port"]
    assert host.service("prometheus-node-exporter").is_running
    assert host.socket("tcp://%s:%d" % (NODES[name], port)).is_listening
    assert not host.socket("tcp://0.0.0.0:%d" % port).is_listening
    metrics = host.check_output("curl -sf http://%s:%d/metrics" % (NODES[name], port))
    assert 'node_scrape_collector_success{collector="systemd"} 1' in metrics
    assert 'node_scrape_collector_success{collector="textfile"} 1' in metrics
    assert host.service("sparkfleet-nccl-textfile.timer").is_enabled
    # The textfile is written even with no serving unit (only its HELP and TYPE lines then).
    assert host.run("%s" % DEFAULTS["fleet_monitoring_nccl_textfile_script"]).rc == 0
    assert "# TYPE sparkfleet_nccl_socket_fallback gauge" in host.file(
        os.path.join(TEXTFILE_DIR, "sparkfleet_nccl.prom")).content_string
