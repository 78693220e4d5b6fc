# -*- coding: utf-8 -*-
"""Jinja filters: the fleet's Prometheus configuration (logic in module_utils/sparkfleet_monitoring.py)."""

from __future__ import annotations

import os
import sys

from ansible.errors import AnsibleFilterError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))

import sparkfleet_monitoring as monitoring  # noqa: E402  pylint: disable=wrong-import-position


def _scrape_address(hv, name):
    """Where Prometheus reaches a host's exporters: its management IP, else its ansible_host (a
    name), else its inventory name."""
    return hv.get("sparkfleet_mgmt_ip", "") or str(hv.get("ansible_host", "") or name)


def sparkfleet_scrape_targets(hostvars, nodes, endpoints, api_port, exporter_port, haproxy_port):
    """{job: [static_config]}: heads' vLLM, every Spark's node exporter, every endpoint's HAProxy."""
    node_list = []
    for name in nodes or []:
        hv = hostvars[name]
        node_list.append({
            "name": name,
            "pair": hv.get("sparkfleet_pair", ""),
            "role": hv.get("sparkfleet_node_role", ""),
            "api_address": hv.get("sparkfleet_api_bind_address", ""),
            "mgmt_address": _scrape_address(hv, name),
        })
    endpoint_list = [{"name": name, "metrics_address": hostvars[name].get("fleet_endpoint_metrics_address", ""),
                      "mgmt_address": _scrape_address(hostvars[name], name)}
                     for name in endpoints or []]
    try:
        return monitoring.scrape_targets(node_list, endpoint_list, api_port, exporter_port, haproxy_port)
    except monitoring.MonitoringError as exc:
        raise AnsibleFilterError(str(exc)) from None


def sparkfleet_prometheus_config(jobs, scrape_interval, evaluation_interval, rule_files, self_address,
                                 alertmanagers=()):
    """Prometheus' configuration (a dict; render it with to_nice_yaml)."""
    return monitoring.prometheus_config(jobs, scrape_interval, evaluation_interval, rule_files, self_address,
                                        alertmanagers)


def sparkfleet_targets_down(active_targets, jobs=None):
    """One line per active scrape target that is not up (from /api/v1/targets), and one when fewer
    than the configuration's ``jobs`` (plus Prometheus itself) are active."""
    return monitoring.targets_down(list(active_targets or []),
                                   monitoring.target_count(jobs) if jobs is not None else None)


class FilterModule:
    """sparkfleet monitoring filters."""

    def filters(self):
        return {
            "sparkfleet_scrape_targets": sparkfleet_scrape_targets,
            "sparkfleet_prometheus_config": sparkfleet_prometheus_config,
            "sparkfleet_targets_down": sparkfleet_targets_down,
        }
