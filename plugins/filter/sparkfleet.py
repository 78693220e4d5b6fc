# -*- coding: utf-8 -*-
"""Jinja filters exposing sparkfleet's topology and launch-argument logic.

The logic lives in plugins/module_utils (pure Python, unit tested); these
filters only translate its errors into AnsibleFilterError so a bad inventory
or profile stops the play on the controller, before any host is touched.
"""

from __future__ import annotations

import os
import sys

from ansible.errors import AnsibleFilterError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))

import sparkfleet_distribution as distribution  # noqa: E402  pylint: disable=wrong-import-position
import sparkfleet_doctor as doctor  # noqa: E402  pylint: disable=wrong-import-position
import sparkfleet_memory as memory  # noqa: E402  pylint: disable=wrong-import-position
import sparkfleet_overlay as overlay  # noqa: E402  pylint: disable=wrong-import-position
import sparkfleet_rollout as rollout  # noqa: E402  pylint: disable=wrong-import-position
import sparkfleet_status as status  # noqa: E402  pylint: disable=wrong-import-position
import sparkfleet_topology as topology  # noqa: E402  pylint: disable=wrong-import-position
import sparkfleet_vllm_args as vllm_args  # noqa: E402  pylint: disable=wrong-import-position
import sparkfleet_vllm_check as vllm_check  # noqa: E402  pylint: disable=wrong-import-position
import sparkfleet_vllm_profile as vllm_profile  # noqa: E402  pylint: disable=wrong-import-position


# Only these inventory facts feed the topology. Reading whole hostvars would
# template every variable of every host, including the ones derived from here.
TOPOLOGY_KEYS = ("sparkfleet_pair", "sparkfleet_node_role", "sparkfleet_fabric_address")


def _nodes(hostvars, hosts):
    return {h: {k: hostvars[h].get(k) for k in TOPOLOGY_KEYS} for h in hosts}


def sparkfleet_pairs(hostvars, hosts):
    """{pair: {head, worker, master_addr}} for the hosts of sparkfleet_nodes."""
    try:
        return topology.build_pairs(_nodes(hostvars, hosts))
    except topology.TopologyError as exc:
        raise AnsibleFilterError("sparkfleet inventory: %s" % exc)


def sparkfleet_roll_plan(pairs, batch=1, min_serving=1, canary=True):
    """Rollout batches (canary first), hosts per batch for `serial`, host order and a one-line description."""
    try:
        result = rollout.plan(dict(pairs), batch, min_serving, bool(canary))
    except rollout.RolloutPlanError as exc:
        raise AnsibleFilterError("sparkfleet rollout plan: %s" % exc)
    result["description"] = rollout.describe(result)
    return result


def sparkfleet_build_host(pairs, configured="", play_hosts=None, same_image=None):
    """The head that builds the image of the heads in ``same_image`` (all: None): {host, note}."""
    try:
        host, note = distribution.build_host([p["head"] for _, p in sorted(dict(pairs).items())],
                                             configured or "", play_hosts,
                                             None if same_image is None else list(same_image))
    except distribution.DistributionError as exc:
        raise AnsibleFilterError("sparkfleet image distribution: %s" % exc)
    return {"host": host, "note": note}


def sparkfleet_fanout_plan(heads, hostvars, source, id_var="spark_image_id"):
    """Rounds of {sender, receiver} bringing every head in `heads` the source's image ID."""
    try:
        return distribution.fanout_plan({h: hostvars[h].get(id_var) or "" for h in heads}, source)
    except distribution.DistributionError as exc:
        raise AnsibleFilterError("sparkfleet image distribution: %s" % exc)


def sparkfleet_fanout_describe(rounds):
    """The fan-out plan in one line, round by round."""
    return distribution.describe(rounds)


def sparkfleet_fanout_part(rounds, index, host):
    """This host's part in one round: {sends_to, receives_from} ('' when none)."""
    return distribution.round_role(rounds, int(index), host)


def sparkfleet_node(hostvars, hosts, host):
    """This host's place in the fleet: pair, role, rank, peer, master address."""
    try:
        return topology.node_view(topology.build_pairs(_nodes(hostvars, hosts)), host)
    except topology.TopologyError as exc:
        raise AnsibleFilterError("sparkfleet inventory: %s" % exc)


def sparkfleet_serve_args(profile, node, service):
    """The argv after `vllm serve` for this node, validated."""
    try:
        return vllm_args.render_serve_args(dict(profile), dict(node), dict(service))
    except vllm_args.LaunchConfigError as exc:
        raise AnsibleFilterError("sparkfleet launch settings: %s" % exc)


def sparkfleet_drain_bound(profile, cap):
    """Seconds a stop waits for in-flight answers under this profile (see vllm_profile.drain_bound)."""
    try:
        return vllm_profile.drain_bound(dict(profile), cap)
    except (vllm_args.LaunchConfigError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("sparkfleet drain bound: %s" % exc)


def sparkfleet_profile_errors(profile, name):
    """Problems with a composed launch profile (types, ranges, allowed values); [] when valid."""
    return vllm_profile.profile_errors(str(name), dict(profile))


def sparkfleet_env_lines(env, node_ip=None):
    """Validated `NAME=value` lines for a docker --env-file."""
    try:
        return ["%s=%s" % pair for pair in vllm_args.render_env(dict(env or {}), node_ip)]
    except vllm_args.LaunchConfigError as exc:
        raise AnsibleFilterError("sparkfleet launch settings: %s" % exc)


_FINGERPRINTS = {}


def _fingerprint(path):
    if path not in _FINGERPRINTS:
        try:
            _FINGERPRINTS[path] = vllm_check.load_fingerprint(path)
        except (OSError, ValueError) as exc:
            raise AnsibleFilterError("sparkfleet vLLM fingerprint: cannot read %s (%s); run "
                                     "scripts/vllm-fingerprint for the pinned release" % (path, exc))
    return _FINGERPRINTS[path]


def sparkfleet_launch_check(args, fingerprint_path, env=None, extra_env=None):
    """{problems, warnings} of an argv and env against the pinned release's fingerprint.

    ``env`` (the profile's) must hold only VLLM_* names the release knows;
    unknown names in ``extra_env`` (site additions) are warned about.
    """
    fingerprint = _fingerprint(str(fingerprint_path))
    surface = vllm_check.Surface.from_fingerprint(fingerprint)
    problems, warnings = vllm_check.check_argv(list(args), surface)
    known = fingerprint.get("env", [])
    for target, names in ((problems, env), (warnings, extra_env)):
        for name, near in vllm_check.unknown_env(dict(names or {}), known):
            target.append("environment variable %s is not known to vLLM %s%s (vLLM logs \"Unknown vLLM "
                          "environment variable detected\" and ignores it)"
                          % (name, surface.version, "; nearest: %s" % near if near else ""))
    return {"problems": problems, "warnings": warnings, "release": surface.version}


def sparkfleet_help_check(args, help_text, source="the image's vLLM"):
    """Problems of an argv against the options the image's own `vllm serve --help=all` lists."""
    try:
        surface = vllm_check.Surface.from_help(str(help_text), str(source))
    except vllm_args.LaunchConfigError as exc:
        return {"problems": [str(exc)], "warnings": []}
    problems, warnings = vllm_check.check_argv(list(args), surface)
    return {"problems": problems, "warnings": warnings}


def sparkfleet_fingerprint_log_lines(fingerprint_path, keys=None):
    """The pinned release's log texts ({key: text}), all or those of ``keys`` the release has.

    A release may drop one of several equivalent lines (the fingerprint lists
    it under ``missing``; scripts/vllm-release reports it): the others still
    serve. None of ``keys`` in the fingerprint is an error."""
    entries = _fingerprint(str(fingerprint_path)).get("log_lines", {})
    lines = {key: entry["text"] for key, entry in entries.items()}
    if keys is None:
        # A line the release words two ways (two model runners) is matched in both.
        return {key: [entry["text"]] + entry["also"] if entry.get("also") else entry["text"]
                for key, entry in entries.items()}
    present = [lines[key] for key in keys if key in lines]
    if not present:
        raise AnsibleFilterError("sparkfleet vLLM fingerprint %s has none of the log lines %s; regenerate it with "
                                 "scripts/vllm-fingerprint" % (fingerprint_path, ", ".join(keys)))
    return present


def sparkfleet_fingerprint_release(fingerprint_path):
    """The vLLM version a fingerprint file describes."""
    return _fingerprint(str(fingerprint_path))["release"]["version"]


def sparkfleet_min_free_kbytes(mem_total_bytes, ratio=0.025, floor_gib=1.0, ceiling_gib=5.0):
    """vm.min_free_kbytes for a node of this RAM size (see sparkfleet_memory.min_free_kbytes)."""
    return memory.min_free_kbytes(int(mem_total_bytes), float(ratio), float(floor_gib), float(ceiling_gib))


def sparkfleet_overlay(overlay_dir):
    """The overlay in overlay_dir: validated manifest, its hashes, the applier's hash.

    Reads manifest.yml on the controller; a bad manifest (missing field,
    unparsable patch, missing source) stops the play before any build.
    """
    import yaml

    path = os.path.join(overlay_dir, "manifest.yml")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            manifest = yaml.safe_load(handle)
        described = overlay.describe(manifest, overlay_dir)
    except (OSError, yaml.YAMLError, overlay.OverlayError) as exc:
        raise AnsibleFilterError("sparkfleet overlay: %s" % exc)
    described["manifest"] = manifest
    described["applier_sha256"] = overlay.sha256_file(overlay.__file__.replace(".pyc", ".py"))
    return described


def sparkfleet_content_tag(text, length=16):
    """A tag derived from content: the first `length` hex digits of its sha256."""
    return overlay.sha256_bytes(text.encode("utf-8"))[:length]


def sparkfleet_repair_list(bad, manifest):
    """Files a node must fetch: [{path, size, sha256}] for each bad file, from the reference manifest."""
    missing = sorted(name for name in bad if name not in manifest)
    if missing:
        raise AnsibleFilterError("sparkfleet weights: %s not in the reference manifest" % ", ".join(missing))
    return [{"path": name, "size": manifest[name]["size"], "sha256": manifest[name].get("sha256")}
            for name in sorted(bad)]


def sparkfleet_status_rows(hostvars, hosts, endpoint_hosts, now, result_var="spark_health_status",
                          endpoint_var="sparkfleet_status_endpoint"):
    """One status row per pair, from each node's sparkfleet_node_status result (result_var) and
    every endpoint host's view of the heads (its sparkfleet_haproxy info result, endpoint_var;
    no endpoint hosts: a fleet without an endpoint)."""
    try:
        pairs = topology.build_pairs(_nodes(hostvars, hosts))
    except topology.TopologyError as exc:
        raise AnsibleFilterError("sparkfleet inventory: %s" % exc)
    listed = []
    for name in sorted(pairs):
        pair = pairs[name]
        readings = {role: dict(hostvars[pair[role]].get(result_var) or {}) for role in ("head", "worker")}
        listed.append({"pair": name, "head": pair["head"], "worker": pair["worker"],
                       "head_status": readings["head"], "worker_status": readings["worker"]})
    views = {}
    for host in endpoint_hosts or []:
        result = hostvars[host].get(endpoint_var) or {}
        # A host whose runtime API did not answer has no servers: it does not count.
        views[host] = dict(result["servers"]) if result.get("servers") is not None else None
    return status.fleet_rows(listed, status.merge_endpoint_views(views), float(now))


def sparkfleet_status_table(rows):
    """The status rows as table lines, a heading first."""
    return status.table_lines(list(rows))


def sparkfleet_doctor_summary(hosts, hostvars, bundle):
    """The doctor's summary lines from each host's sparkfleet_doctor result (hosts without one are skipped)."""
    results = {}
    for host in hosts:
        result = hostvars[host].get("sparkfleet_doctor_node")
        if result and not result.get("skipped"):
            results[host] = dict(result)
    return doctor.summary_lines(results, bundle)


def sparkfleet_file_spec(pair, mode=None, secret=False):
    """(path, src) -> a file entry for the sparkfleet_files module: copy src
    (a file on the node) to path. Without a mode, environment files (they
    hold the API key) get 0600 and everything else 0644."""
    path, src = pair
    if mode is None:
        mode = "0600" if str(path).endswith(".env") else "0644"
    return {"path": path, "src": src, "mode": mode, "secret": bool(secret)}


class FilterModule:
    """sparkfleet filters."""

    def filters(self):
        return {
            "sparkfleet_overlay": sparkfleet_overlay,
            "sparkfleet_content_tag": sparkfleet_content_tag,
            "sparkfleet_repair_list": sparkfleet_repair_list,
            "sparkfleet_pairs": sparkfleet_pairs,
            "sparkfleet_node": sparkfleet_node,
            "sparkfleet_build_host": sparkfleet_build_host,
            "sparkfleet_fanout_plan": sparkfleet_fanout_plan,
            "sparkfleet_fanout_part": sparkfleet_fanout_part,
            "sparkfleet_fanout_describe": sparkfleet_fanout_describe,
            "sparkfleet_serve_args": sparkfleet_serve_args,
            "sparkfleet_env_lines": sparkfleet_env_lines,
            "sparkfleet_profile_errors": sparkfleet_profile_errors,
            "sparkfleet_drain_bound": sparkfleet_drain_bound,
            "sparkfleet_roll_plan": sparkfleet_roll_plan,
            "sparkfleet_launch_check": sparkfleet_launch_check,
            "sparkfleet_help_check": sparkfleet_help_check,
            "sparkfleet_fingerprint_release": sparkfleet_fingerprint_release,
            "sparkfleet_fingerprint_log_lines": sparkfleet_fingerprint_log_lines,
            "sparkfleet_min_free_kbytes": sparkfleet_min_free_kbytes,
            "sparkfleet_status_rows": sparkfleet_status_rows,
            "sparkfleet_status_table": sparkfleet_status_table,
            "sparkfleet_doctor_summary": sparkfleet_doctor_summary,
            "sparkfleet_file_spec": sparkfleet_file_spec,
        }
