# -*- coding: utf-8 -*-
"""What the fleet's Prometheus scrapes, with which labels, and which metric names sparkfleet reads.

* ``scrape_targets``: the fleet as scrape targets: every head's vLLM ``/metrics``
  (labels ``pair``, ``node``), every Spark's node exporter (``pair``, ``node``,
  ``role``), every endpoint host's HAProxy exporter (``endpoint``) and node
  exporter (``node``, ``role: endpoint``);
* ``prometheus_config``: Prometheus' configuration (a dict for ``to_nice_yaml``);
* ``targets_down``: the active targets Prometheus cannot scrape, one line each;
* ``vllm_metric_names``: the vLLM metric families an expression reads, with
  Prometheus' sample suffixes (``_total``, ``_bucket``...) taken off, so they
  can be compared with a release's fingerprint (which names families).

No Ansible imports: used by plugins/filter/sparkfleet_monitoring.py and unit tests.
"""

from __future__ import annotations

import re

JOB_VLLM = "sparkfleet_vllm"
JOB_NODE = "sparkfleet_node"
JOB_HAPROXY = "sparkfleet_haproxy"

# prometheus_client writes a counter family `x` as `x_total`, a histogram as
# `x_bucket`, `x_sum`, `x_count`; the fingerprint names the family.
SAMPLE_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
VLLM_METRIC_RE = re.compile(r"\bvllm:[a-zA-Z0-9_:]+")


class MonitoringError(ValueError):
    """A node or endpoint host the configuration cannot address."""


def _hostport(address, port):
    address = str(address)
    return "[%s]:%s" % (address, port) if ":" in address else "%s:%s" % (address, port)


def scrape_targets(nodes, endpoints, api_port, exporter_port, haproxy_port):
    """{job: [static_config]} for the fleet.

    ``nodes``: [{name, pair, role, api_address, mgmt_address}] (api_address: where
    the head's API listens; mgmt_address: where its node exporter does);
    ``endpoints``: [{name, metrics_address, mgmt_address}].
    """
    jobs = {JOB_VLLM: [], JOB_NODE: [], JOB_HAPROXY: []}
    for node in sorted(nodes, key=lambda n: (str(n.get("pair")), str(n.get("role")), n["name"])):
        name, pair, role = node["name"], str(node.get("pair", "")), str(node.get("role", ""))
        mgmt = node.get("mgmt_address") or ""
        if not mgmt or mgmt == "0.0.0.0":
            raise MonitoringError(
                "%s has no management address to scrape (set sparkfleet_mgmt_address, or an IP ansible_host)" % name)
        if role == "head":
            api = node.get("api_address") or ""
            api = mgmt if api in ("", "0.0.0.0") else api
            jobs[JOB_VLLM].append({"targets": [_hostport(api, api_port)],
                                   "labels": {"instance": name, "node": name, "pair": pair}})
        jobs[JOB_NODE].append({"targets": [_hostport(mgmt, exporter_port)],
                               "labels": {"instance": name, "node": name, "pair": pair, "role": role}})
    node_names = set(n["name"] for n in nodes)
    for endpoint in sorted(endpoints, key=lambda e: e["name"]):
        address = endpoint.get("metrics_address") or ""
        if not address:
            raise MonitoringError("endpoint host %s has no address for its HAProxy exporter" % endpoint["name"])
        jobs[JOB_HAPROXY].append({"targets": [_hostport(address, haproxy_port)],
                                  "labels": {"instance": endpoint["name"], "endpoint": endpoint["name"]}})
        # Its own node exporter too (memory, disk, whether it holds the virtual IP),
        # unless it is also a Spark, scraped above.
        mgmt = endpoint.get("mgmt_address") or ""
        if endpoint["name"] not in node_names:
            if not mgmt or mgmt == "0.0.0.0":
                raise MonitoringError("endpoint host %s has no management address to scrape (set "
                                      "sparkfleet_mgmt_address, or an IP ansible_host)" % endpoint["name"])
            jobs[JOB_NODE].append({"targets": [_hostport(mgmt, exporter_port)],
                                   "labels": {"instance": endpoint["name"], "node": endpoint["name"],
                                              "role": "endpoint"}})
    return jobs


def target_count(jobs):
    """How many targets Prometheus scrapes: the fleet's, and itself."""
    return 1 + sum(len(configs) for configs in jobs.values())


def prometheus_config(jobs, scrape_interval, evaluation_interval, rule_files, self_address,
                      alertmanagers=()):
    """Prometheus' configuration as a dict, jobs from ``scrape_targets``."""
    config = {
        "global": {"scrape_interval": str(scrape_interval), "evaluation_interval": str(evaluation_interval)},
        "rule_files": list(rule_files),
        "scrape_configs": [{"job_name": "prometheus", "static_configs": [{"targets": [self_address]}]}],
    }
    for job in (JOB_VLLM, JOB_NODE, JOB_HAPROXY):
        if jobs.get(job):
            config["scrape_configs"].append({"job_name": job, "metrics_path": "/metrics",
                                             "static_configs": jobs[job]})
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    return config


def targets_down(active_targets, expected=None):
    """'instance (job) url: error' for every active target whose last scrape failed or has not run,
    and a line when fewer targets than ``expected`` are active (a configuration not loaded yet)."""
    down = []
    if expected is not None and len(active_targets or []) < int(expected):
        down.append("%d of %d targets active (configuration not loaded yet?)" % (len(active_targets or []),
                                                                                 int(expected)))
    for target in active_targets or []:
        if target.get("health") == "up":
            continue
        labels = target.get("labels") or {}
        down.append("%s (%s) %s: %s" % (labels.get("instance", "?"), labels.get("job", "?"),
                                        target.get("scrapeUrl", "?"),
                                        target.get("lastError") or "not scraped yet"))
    return down


def vllm_metric_names(text):
    """The vLLM metric families an expression (or a whole rules/dashboard file) reads."""
    names = set()
    for match in VLLM_METRIC_RE.findall(str(text)):
        for suffix in SAMPLE_SUFFIXES:
            if match.endswith(suffix):
                match = match[: -len(suffix)]
                break
        names.add(match)
    return sorted(names)
