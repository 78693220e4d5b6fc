# -*- coding: utf-8 -*-
"""Fleet preflight: every inconsistency of an inventory, one line each.

``problems()`` takes a plain description of the fleet -- each host's
variables (any mapping: a dict in the tests, Ansible's lazily templated
hostvars on the controller), which hosts are Spark nodes and which run the
fleet endpoint -- plus the variable names sparkfleet knows, and returns one
line per problem::

    <host>: <setting> is <value>; <what is allowed>

The same problem on several hosts (a typo in a group_vars file) is one line
naming every host. Nothing here raises on a bad fleet: the playbook prints the
lines itself, so the operator reads them without Ansible's wrapper text.

Only the values a check needs are read from a host's variables; for the
unknown-variable check only the names are (reading a value may template it).

Pure Python, no Ansible imports: used by the filter plugin on the controller
and by the unit tests.
"""

from __future__ import annotations

import difflib
import functools
import glob
import json
import os
import re

from sparkfleet_rollout import RolloutPlanError, batch_size
from sparkfleet_topology import NODE_ROLES, TopologyError, build_pairs

# Variable name prefixes owned by sparkfleet and its roles: an inventory
# variable with one of these that nothing reads is a typo or a leftover.
PREFIXES = ("sparkfleet_", "spark_host_", "spark_fabric_", "spark_image_", "spark_model_",
            "spark_service_", "spark_health_", "fleet_endpoint_", "fleet_monitoring_")

NODES_PER_PAIR = len(NODE_ROLES)
PORT_MIN, PORT_MAX = 1, 65535
IPV4_RE = re.compile(r"^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])([.](25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}$")
HEAD_PORTS = ("sparkfleet_api_port", "sparkfleet_master_port")
ENDPOINT_PORTS = ("fleet_endpoint_port", "fleet_endpoint_stats_port", "fleet_endpoint_metrics_port")
# A registry digest, or a local image ID (content-addressed: the same bits on
# every node that holds it, e.g. an image loaded from an archive).
DIGEST_RE = re.compile(r"^([^@\s]+@)?sha256:[0-9a-f]{64}$")
DIGEST_FORM = "name@sha256:<64 hex digits> (or a local image ID, sha256:<64 hex digits>)"

# The host controller-side tasks run on (hosts: localhost, delegate_to: localhost).
CONTROLLER = "localhost"

_MISSING = object()


class _Unresolved:
    """A value whose templating failed; the reason is reported once."""

    def __init__(self, reason):
        self.reason = reason


def _show(value):
    """A value as the operator wrote it: strings quoted, nothing Python-specific."""
    if value is _MISSING or value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'%s'" % value
    return str(value)


def _as_int(value):
    """An integer setting (an int, or a string of digits as `-e name=8000` gives); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _as_bool(value):
    """Ansible's notion of a boolean setting; None when the value is none of them."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "on", "1", "y", "t"):
            return True
        if text in ("false", "no", "off", "0", "n", "f", ""):
            return False
    return None


def combine(base, override):
    """combine(recursive=True) as Ansible does it: dicts merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = combine(out[key], value)
        else:
            out[key] = value
    return out


# "<setting> is <value>; must ...": the shape of every line refusing a value.
_SAID_RE = re.compile(r"^(\S+) is (.*?); ")


class _Report:
    """Problems in the order found; one line per distinct text, naming every host it applies to."""

    def __init__(self):
        self._hosts = {}
        self._values = set()

    def add(self, host, text):
        hosts = self._hosts.setdefault(text, [])
        if host not in hosts:
            hosts.append(host)
        said = _SAID_RE.match(text)
        if said:
            self._values.add(said.groups())

    def has(self, text):
        return text in self._hosts

    def said(self, setting, shown):
        """Whether a line already refused ``setting`` with this value (on any host)."""
        return (setting, shown) in self._values

    def lines(self):
        return ["%s: %s" % (", ".join(hosts), text) if hosts[0] is not None else text
                for text, hosts in self._hosts.items()]


class _Host:
    """Reads one host's variables, turning a value that cannot be templated into a problem."""

    def __init__(self, name, variables, report):
        self.name = name
        self._vars = variables if variables is not None else {}
        self._report = report

    def names(self):
        return [str(key) for key in self._vars.keys()]

    def peek(self, key):
        """A value, or _MISSING when it is unset or cannot be templated here (without reporting
        it: a role option may name what only its role defines, such as role_path)."""
        if key not in self._vars:
            return _MISSING
        try:
            return self._vars[key]
        except Exception:  # pylint: disable=broad-except  (templating errors of any kind)
            return _MISSING

    def get(self, key, default=_MISSING):
        if key not in self._vars:
            return default
        try:
            return self._vars[key]
        except Exception as exc:  # pylint: disable=broad-except  (templating errors of any kind)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._report.add(self.name, "%s cannot be resolved (%s); it must evaluate to a value" % (key, reason))
            return _Unresolved(reason)


def _check_topology(fleet, nodes, report):
    """The existing topology rules (one head plus one worker per pair, fabric addresses)."""
    topo = {}
    for name in nodes:
        host = fleet[name]
        topo[name] = {key: host.get(key, None) for key in
                      ("sparkfleet_pair", "sparkfleet_node_role", "sparkfleet_fabric_address")}
        if any(isinstance(value, _Unresolved) for value in topo[name].values()):
            return
    try:
        build_pairs(topo)
    except TopologyError as exc:
        report.add(None, "sparkfleet inventory: %s" % exc)


def _check_profile(head, report):
    """The head's composed profile must use exactly the pair's GPUs.

    Returns (name, composed profile) when the profile could be composed, else None.
    """
    defaults = head.get("sparkfleet_profile_defaults", {})
    profiles = head.get("sparkfleet_profiles", {})
    name = head.get("sparkfleet_profile", _MISSING)
    overrides = head.get("sparkfleet_profile_overrides", {})
    gpus = head.get("sparkfleet_gpus_per_node", 1)
    if any(isinstance(v, _Unresolved) for v in (defaults, profiles, name, overrides, gpus)):
        return None
    gpus_per_node = _as_int(gpus)
    if gpus_per_node is None or gpus_per_node < 1:
        report.add(head.name, "sparkfleet_gpus_per_node is %s; must be an integer of at least 1 "
                              "(GPUs per Spark: one GB10)" % _show(gpus))
        gpus_per_node = None
    if not isinstance(profiles, dict):
        report.add(head.name, "sparkfleet_profiles is %s; must be a mapping of profile name to settings"
                              % _show(profiles))
        return None
    if name is _MISSING or name is None or str(name) not in profiles:
        report.add(head.name, "sparkfleet_profile is %s; known profiles: %s"
                              % (_show(name), ", ".join(sorted(map(str, profiles)))))
        return None
    name = str(name)
    for setting, value in (("sparkfleet_profile_defaults", defaults), ("sparkfleet_profiles." + name, profiles[name]),
                           ("sparkfleet_profile_overrides", overrides)):
        if value is not None and not isinstance(value, dict):
            report.add(head.name, "%s is %s; must be a mapping of profile settings" % (setting, _show(value)))
            return None
    profile = combine(combine(defaults or {}, profiles[name] or {}), overrides or {})
    tp_raw, pp_raw = profile.get("tensor_parallel_size", _MISSING), profile.get("pipeline_parallel_size", 1)
    tp, pp = _as_int(tp_raw), _as_int(pp_raw)
    for setting, raw, value in (("tensor_parallel_size", tp_raw, tp), ("pipeline_parallel_size", pp_raw, pp)):
        if value is None or value < 1:
            report.add(head.name, "%s of profile %s is %s; must be an integer of at least 1"
                                  % (setting, name, _show(raw)))
    if tp is None or pp is None or tp < 1 or pp < 1 or gpus_per_node is None:
        return name, profile
    gpus_per_pair = NODES_PER_PAIR * gpus_per_node
    if tp * pp != gpus_per_pair:
        report.add(head.name, "tensor_parallel_size × pipeline_parallel_size of profile %s is %d × %d = %d; "
                              "must equal the pair's GPUs, %d nodes × sparkfleet_gpus_per_node %d = %d"
                              % (name, tp, pp, tp * pp, NODES_PER_PAIR, gpus_per_node, gpus_per_pair))
    return name, profile


def _check_checkpoint(name, profile, members, report):
    """A profile that needs one checkpoint (its ``checkpoint``) runs only on a
    pair that serves it: vLLM loads the pair's own sparkfleet_model_dir, mounted,
    offline, and spark_model fetches sparkfleet_model into it. Nothing else
    would bring the profile's checkpoint to the pair."""
    checkpoint = profile.get("checkpoint")
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        return  # none needed; a bad type is the profile spec's to report
    for member in members:
        model = member.get("sparkfleet_model", _MISSING)
        if isinstance(model, _Unresolved) or model == checkpoint:
            continue
        report.add(member.name, "sparkfleet_model is %s, but profile %s needs the checkpoint '%s'; set "
                                "sparkfleet_model: %s and a sparkfleet_model_dir for it on each pair that runs it "
                                "(group or host vars of its head and its worker)"
                   % (_show(model), name, checkpoint, checkpoint))


def _check_controller(controller, report):
    """The controller (Ansible's localhost) must not become: every task on or
    delegated to it would run through sudo, and fail on a workstation without
    passwordless sudo. The implicit localhost takes the vars of group all."""
    if controller is None:
        return
    become = controller.get("ansible_become", False)
    if isinstance(become, _Unresolved) or not _as_bool(become):
        return
    report.add(controller.name, "ansible_become is %s; the controller must not become (every task on or "
                                "delegated to localhost would run through sudo): scope ansible_become to the "
                                "sparkfleet_nodes and sparkfleet_endpoint groups (their vars:, not all: vars or -e)"
               % _show(become))


def _check_rollout(controller, pair_count, report):
    """The rollout settings rolling_restart.yml plans with on the controller: refused here, before
    any pair is drained, rather than by the plan filter halfway into the rollout."""
    if controller is None:
        return
    batch = controller.get("sparkfleet_roll_batch", 1)
    if not isinstance(batch, _Unresolved):
        try:
            if isinstance(batch, bool):
                raise RolloutPlanError("a boolean")
            batch_size(batch, max(pair_count, 1))
        except RolloutPlanError:
            report.add(controller.name, "sparkfleet_roll_batch is %s; must be a whole number of pairs (1 or more) "
                                        "or a share of the fleet above 0%% and at most 100%%, such as '25%%'"
                       % _show(batch))
    serving = controller.get("sparkfleet_roll_min_serving_pairs", 1)
    if not isinstance(serving, _Unresolved):
        count = None if isinstance(serving, bool) else _as_int(serving)
        if count is None or count < 0:
            report.add(controller.name, "sparkfleet_roll_min_serving_pairs is %s; must be a whole number, 0 or more "
                                        "(pairs that keep serving while others restart)" % _show(serving))
        elif pair_count > 1 and count >= pair_count:
            report.add(controller.name, "sparkfleet_roll_min_serving_pairs is %d; must be less than the fleet's %d "
                                        "pairs, or no pair can restart while that many keep serving"
                       % (count, pair_count))
    for setting in ("sparkfleet_roll_canary", "sparkfleet_perf_gate"):
        value = controller.get(setting, True)
        if not isinstance(value, _Unresolved) and _as_bool(value) is None:
            report.add(controller.name, "%s is %s; must be true or false" % (setting, _show(value)))


def _check_gate_share(head, report):
    """The performance gate's share of the last known good: above 0 and at most 1. Above 1 no pair
    can pass, so every rollout would drain, restart and roll back its canary (two cold starts)."""
    for setting in ("sparkfleet_perf_gate_share", "spark_health_perf_gate_share"):
        value = head.get(setting, _MISSING)
        if value is _MISSING or isinstance(value, _Unresolved):
            continue
        try:
            share = None if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            share = None
        if share is None or not 0 < share <= 1:
            report.add(head.name, "%s is %s; must be a number above 0 and at most 1 (the share of its last "
                                  "known good figures a rolled pair must reach; 0.9 is 90%%)" % (setting, _show(value)))


def _check_distinct_addresses(fleet, nodes, report):
    """Two Sparks cannot be one machine: each node's ansible_host is its own (a copy-paste
    slip would have Ansible configure one box twice and the other never)."""
    seen = {}
    for name in nodes:
        address = fleet[name].get("ansible_host", _MISSING)
        if address is _MISSING or isinstance(address, _Unresolved) or address in (None, ""):
            continue
        seen.setdefault(str(address), []).append(name)
    for address, names in seen.items():
        if len(names) > 1:
            report.add(None, "%s: ansible_host is %s on each; every Spark must have its own address"
                       % (", ".join(names), address))


def _check_endpoint_vip(fleet, endpoints, report):
    """Two or more endpoint hosts need one virtual IP (keepalived) clients use, the same on each,
    an IPv4 address that is no host's own."""
    vips = {}
    for name in endpoints:
        vip = fleet[name].get("fleet_endpoint_vip", "")
        if isinstance(vip, _Unresolved):
            return
        vips[name] = str(vip or "")
    named = sorted(set(v for v in vips.values() if v))
    if len(endpoints) > 1 and not named:
        report.add(None, "sparkfleet_endpoint has %d hosts (%s) but no fleet_endpoint_vip: clients need one "
                   "address that moves between them; set fleet_endpoint_vip in the group's vars, or keep one "
                   "endpoint host" % (len(endpoints), ", ".join(endpoints)))
        return
    if len(named) > 1 or (named and len(endpoints) > 1 and "" in vips.values()):
        report.add(None, "fleet_endpoint_vip differs between the endpoint hosts (%s): one virtual IP, set in "
                   "the sparkfleet_endpoint group's vars" % ", ".join("%s=%s" % (n, _show(v))
                                                                     for n, v in sorted(vips.items())))
        return
    if not named:
        return
    vip = named[0]
    if not IPV4_RE.match(vip):
        report.add(None, "fleet_endpoint_vip %s is not an IPv4 address (e.g. 192.168.1.99)" % _show(vip))
        return
    owners = sorted(name for name, host in fleet.items()
                    if str(host.get("ansible_host", "")) == vip or str(host.get("sparkfleet_mgmt_address", "")) == vip)
    if owners:
        report.add(None, "fleet_endpoint_vip %s is the address of %s: the virtual IP must be a free address "
                   "on the management network" % (vip, ", ".join(owners)))


TLS_HOLDS = (("-----BEGIN CERTIFICATE-----", "no certificate"), ("PRIVATE KEY-----", "no private key"))
TLS_WHAT = "a PEM file on the controller holding the certificate chain and its private key"


def _check_endpoint_tls(host, report):
    """The endpoint's certificate comes from the controller (each endpoint host gets a copy), so
    it must be there, readable, and hold both halves HAProxy's `ssl crt` needs; else the role would
    fail on the first endpoint host, or HAProxy's validation on a half-written configuration."""
    value = host.get("fleet_endpoint_tls_certificate", "")
    if not isinstance(value, str) or not value:
        return  # HTTP, or a type the argument spec check reports
    path = os.path.expanduser(value)
    if not os.path.isabs(path):
        report.add(host.name, "fleet_endpoint_tls_certificate is %s; must be an absolute path to %s "
                              "(e.g. '{{ inventory_dir }}/tls/api.pem')" % (_show(value), TLS_WHAT))
        return
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError as exc:
        report.add(host.name, "fleet_endpoint_tls_certificate is %s; %s on the controller: must be %s"
                              % (_show(value), exc.strerror.lower() if exc.strerror else type(exc).__name__, TLS_WHAT))
        return
    missing = [what for marker, what in TLS_HOLDS if marker not in text]
    if missing:
        report.add(host.name, "fleet_endpoint_tls_certificate is %s; it holds %s: must be %s"
                              % (_show(value), " and ".join(missing), TLS_WHAT))


def _check_ports(host, settings, defaults, report):
    """Each port a valid number, and no two of the ports this host listens on the same."""
    seen = {}
    for setting in settings:
        raw = host.get(setting, defaults.get(setting, _MISSING))
        if isinstance(raw, _Unresolved):
            continue
        port = _as_int(raw)
        if port is None or not PORT_MIN <= port <= PORT_MAX:
            report.add(host.name, "%s is %s; must be an integer in %d..%d" % (setting, _show(raw), PORT_MIN, PORT_MAX))
            continue
        if port in seen:
            report.add(host.name, "%s is %d; must differ from %s (also %d): both listen on this host"
                                  % (setting, port, seen[port], port))
            continue
        seen[port] = setting


def _check_worker_master_port(worker, head, report):
    """The worker joins its head's rendezvous: both must name the same port."""
    mine, theirs = _as_int(worker.get("sparkfleet_master_port", None)), _as_int(head.get("sparkfleet_master_port", None))
    if mine is not None and theirs is not None and PORT_MIN <= theirs <= PORT_MAX and mine != theirs:
        report.add(worker.name, "sparkfleet_master_port is %d; must equal its head %s's (%d): "
                                "the worker joins the head's rendezvous on that port" % (mine, head.name, theirs))


def _check_release(host, head, releases, report):
    """A node runs a pinned vLLM release (one with a fingerprint, the surface its launch is
    checked against), and a worker runs its head's: one pair, one release. Pairs may differ
    while the fleet moves to a new release."""
    version = host.get("sparkfleet_vllm_version", None)
    if isinstance(version, _Unresolved) or releases is None:
        return
    if version is None or str(version) not in releases:
        report.add(host.name, "sparkfleet_vllm_version is %s; pinned releases with a fingerprint: %s "
                              "(scripts/vllm-release X.Y.Z pins another)" % (_show(version), ", ".join(releases)))
        return
    if head is None:
        return
    theirs = head.get("sparkfleet_vllm_version", None)
    if not isinstance(theirs, _Unresolved) and theirs is not None and str(theirs) != str(version):
        report.add(host.name, "sparkfleet_vllm_version is %s; its head %s runs %s: both ranks of a pair "
                              "run one release (set it for the pair, not the node)" % (_show(version), head.name,
                                                                                        _show(theirs)))


def _check_stop_bounds(host, report):
    """The drain bound and vLLM's own drain (--shutdown-timeout) agree: a stop
    outside a rollout (reboot, systemctl stop) must wait at least as long for
    answers in flight as a rollout's drain does. The unit's stop timeout is
    derived from the shutdown timeout in its template."""
    drain = host.get("sparkfleet_roll_drain_timeout", _MISSING)
    shutdown = host.get("spark_service_shutdown_timeout", drain)
    if isinstance(drain, _Unresolved) or isinstance(shutdown, _Unresolved) or drain is _MISSING:
        return
    drain_s, shutdown_s = _as_int(drain), _as_int(shutdown)
    if drain_s is None or drain_s < 1:
        report.add(host.name, "sparkfleet_roll_drain_timeout is %s; must be a whole number of seconds, at least 1 "
                              "(how long a stop waits for answers in flight)" % _show(drain))
        return
    if shutdown_s is None or shutdown_s < drain_s:
        report.add(host.name, "spark_service_shutdown_timeout is %s; must be an integer of at least the drain bound "
                              "sparkfleet_roll_drain_timeout (%d s), or a reboot or `systemctl stop` cuts answers a "
                              "rollout would wait for (leave it unset: it follows the drain bound)"
                   % (_show(shutdown), drain_s))


def _check_model_dir(host, report):
    value = host.get("sparkfleet_model_dir", _MISSING)
    if isinstance(value, _Unresolved):
        return
    if not isinstance(value, str) or not value.strip() or not value.startswith("/"):
        report.add(host.name, "sparkfleet_model_dir is %s; must be an absolute path "
                              "(where the checkpoint lives on every node)" % _show(value))


def _check_image(host, report):
    build_raw = host.get("sparkfleet_image_build", False)
    if isinstance(build_raw, _Unresolved):
        return
    build = _as_bool(build_raw)
    if build is None:
        report.add(host.name, "sparkfleet_image_build is %s; must be true or false" % _show(build_raw))
        return
    if build:
        return  # build mode: the tag is derived from the build inputs
    ref = host.get("sparkfleet_image_ref", _MISSING)
    if isinstance(ref, _Unresolved):
        return
    when = "with sparkfleet_image_build false it must be pinned by digest, %s" % DIGEST_FORM
    if ref is _MISSING or ref is None or not str(ref).strip():
        report.add(host.name, "sparkfleet_image_ref is %s; %s" % ("empty" if ref == "" else _show(ref), when))
        return
    ref = str(ref)
    if DIGEST_RE.match(ref):
        return
    if "@" in ref:
        report.add(host.name, "sparkfleet_image_ref is %s; the digest must be sha256: and 64 lowercase hex "
                              "digits (%s)" % (_show(ref), DIGEST_FORM))
        return
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last or last.endswith(":latest"):
        report.add(host.name, "sparkfleet_image_ref is %s; :latest moves, so %s" % (_show(ref), when))
        return
    report.add(host.name, "sparkfleet_image_ref is %s; a tag can name different bits on the two nodes of a pair, "
                          "so %s" % (_show(ref), when))


# What a role option's declared type accepts, as Ansible's own argument spec
# validation converts it (a string of digits is an integer, "yes" a boolean, a
# comma-separated string a list), but stricter on one point: a boolean is not a
# string (YAML's bare yes/no where a name or path belongs is a slip, not a value).
def _is_int(value):
    return _as_int(value) is not None or (isinstance(value, float) and value.is_integer())


def _is_float(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _is_dict(value):
    if isinstance(value, dict):
        return True
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                return isinstance(json.loads(text), dict)
            except ValueError:
                return False
        return "=" in text
    return False


_TYPES = {
    "str": (lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool), "a string"),
    "path": (lambda v: isinstance(v, str), "a path (a string)"),
    "int": (_is_int, "an integer"),
    "float": (_is_float, "a number"),
    "bool": (lambda v: _as_bool(v) is not None, "true or false"),
    "list": (lambda v: isinstance(v, (list, tuple, str, int, float)) and not isinstance(v, bool), "a list"),
    "dict": (_is_dict, "a mapping"),
    "raw": (lambda v: True, "any value"),
}


def _spec_problem(value, spec):
    """What is wrong with ``value`` for an argument spec option, or None."""
    kind = spec.get("type") or "str"
    accepts, wanted = _TYPES.get(kind, _TYPES["raw"])
    if value is None:
        return None  # Ansible's "unset": the role's default applies
    if not accepts(value):
        return "must be %s" % wanted
    elements = spec.get("elements")
    if kind == "list" and isinstance(value, (list, tuple)) and elements in _TYPES:
        element_ok, element_wanted = _TYPES[elements]
        bad = [item for item in value if item is not None and not element_ok(item)]
        if bad:
            return "must be a list of %s; %s is not" % (
                {"a string": "strings", "a path (a string)": "paths", "an integer": "integers",
                 "a number": "numbers", "a mapping": "mappings"}.get(element_wanted, element_wanted), _show(bad[0]))
    choices = spec.get("choices")
    if choices:
        items = value if kind == "list" and isinstance(value, (list, tuple)) else [value]
        normal = {str(choice): choice for choice in choices}
        if any(str(item) not in normal for item in items):
            return "must be %s%s" % ("one of " if kind != "list" else "a list of ",
                                     ", ".join(_show(choice) for choice in choices))
    return None


def _check_values(host, specs, report, fleet_only=False):
    """Every role option and fleet setting this host has, against the type, element type and
    choices declared for it (roles/*/meta/argument_specs.yml, files/fleet_settings.yml): refused
    here, before any host is touched, rather than by a role's own validation once earlier plays
    have run, or not at all. The fleet settings are checked last (``fleet_only``), each
    value another check has already refused with its own reasons left out."""
    for name in sorted(host.names()):
        spec = specs.get(name)
        if spec is None or (spec["declared"] == FLEET_SETTINGS) != fleet_only:
            continue
        value = host.peek(name)
        # A template left as text is a value read without Ansible (its run checks the result).
        if value is _MISSING or (isinstance(value, str) and "{{" in value):
            continue
        problem = _spec_problem(value, spec)
        if not problem:
            continue
        shown = "(secret)" if spec.get("secret") else _show(value)
        text = "%s is %s; %s (%s)" % (name, shown, problem, spec["declared"])
        if report.has(text) or not report.said(name, shown):
            report.add(host.name, text)


def _check_names(host, known, report):
    for name in sorted(host.names()):
        if not name.startswith(PREFIXES) or name in known:
            continue
        near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        report.add(host.name, "%s is not a variable sparkfleet knows; %s" % (
            name, "nearest: %s" % near[0] if near
            else "settings are declared in %s and roles/*/meta/argument_specs.yml" % FLEET_SETTINGS))


def problems(hostvars, nodes, endpoints, known, endpoint_defaults=None, controller=None, releases=None,
             specs=None):
    """Every problem of the fleet, one line each; [] when the fleet is consistent.

    ``hostvars`` maps each host of ``nodes`` (group sparkfleet_nodes) and
    ``endpoints`` (group sparkfleet_endpoint) to a mapping of its variables;
    ``known`` is the set of variable names sparkfleet knows
    (``known_variables``); ``endpoint_defaults`` the fleet_endpoint role's
    port defaults; ``controller`` the variables of the host Ansible runs
    controller-side tasks on (``localhost``, implicit or not), when known;
    ``releases`` the vLLM releases pinned with a fingerprint (``pinned_releases``);
    ``specs`` the roles' declared options (``option_specs``).
    """
    report = _Report()
    # The controller first: a run that cannot even start its local steps.
    _check_controller(None if controller is None else _Host(CONTROLLER, controller, report), report)
    defaults = dict(endpoint_defaults or {})
    nodes, endpoints = list(nodes or []), list(endpoints or [])
    fleet = {name: _Host(name, hostvars[name] if name in hostvars else {}, report)
             for name in dict.fromkeys(nodes + endpoints)}
    known = frozenset(known)

    # Names first: a misspelt setting explains the other problems it causes.
    for name in fleet:
        _check_names(fleet[name], known, report)
    for name in fleet:
        _check_values(fleet[name], specs or {}, report)

    _check_topology(fleet, nodes, report)
    _check_distinct_addresses(fleet, nodes, report)
    _check_endpoint_vip(fleet, endpoints, report)
    for name in endpoints:
        _check_endpoint_tls(fleet[name], report)

    roles = {name: fleet[name].get("sparkfleet_node_role", None) for name in nodes}
    heads, workers = {}, {}
    for name in nodes:
        pair = fleet[name].get("sparkfleet_pair", None)
        if roles[name] in ("head", "worker") and not isinstance(pair, _Unresolved) and pair not in (None, ""):
            (heads if roles[name] == "head" else workers).setdefault(str(pair), []).append(name)

    for name in nodes:
        host = fleet[name]
        if roles[name] == "head":
            composed = _check_profile(host, report)
            pair = str(host.get("sparkfleet_pair", None))
            _check_gate_share(host, report)
            if len(heads.get(pair, [])) == 1:
                _check_stop_bounds(host, report)
                if composed is not None:
                    _check_checkpoint(composed[0], composed[1],
                                      [host] + [fleet[worker] for worker in workers.get(pair, [])], report)
        _check_model_dir(host, report)
        _check_image(host, report)

    controller_host = None if controller is None else _Host(CONTROLLER, controller, report)
    _check_rollout(controller_host, len(heads), report)

    for name in fleet:
        host = fleet[name]
        listens = []
        if name in nodes and roles[name] == "head":
            listens += HEAD_PORTS
        elif name in nodes:
            listens.append("sparkfleet_master_port")  # range only: the worker connects to it
        if name in endpoints:
            listens += ENDPOINT_PORTS
        _check_ports(host, listens, defaults if name in endpoints else {}, report)
        if name in nodes and roles[name] == "worker":
            pair = host.get("sparkfleet_pair", None)
            pair_heads = heads.get(str(pair), []) if not isinstance(pair, _Unresolved) else []
            if len(pair_heads) == 1:
                _check_worker_master_port(host, fleet[pair_heads[0]], report)
        if name in nodes and roles[name] in ("head", "worker"):
            pair = host.get("sparkfleet_pair", None)
            pair_heads = heads.get(str(pair), []) if not isinstance(pair, _Unresolved) else []
            head = fleet[pair_heads[0]] if roles[name] == "worker" and len(pair_heads) == 1 else None
            _check_release(host, head, releases, report)
    # The fleet settings' declared types and choices, for what no check above has refused.
    for name in fleet:
        _check_values(fleet[name], specs or {}, report, fleet_only=True)
    return report.lines()


def pinned_releases(root):
    """The vLLM releases files/vllm/releases.yml pins and files/vllm holds a fingerprint of."""
    with open(os.path.join(root, "files", "vllm", "releases.yml"), encoding="utf-8") as handle:
        pinned = _yaml().safe_load(handle)["releases"]
    return sorted(str(v) for v in pinned
                  if os.path.isfile(os.path.join(root, "files", "vllm", "vllm-%s.fingerprint.json" % v)))


# --- the variable names sparkfleet knows -----------------------------------

IDENTIFIER_RE = re.compile(r"(?<![A-Za-z0-9_])((?:%s)[A-Za-z0-9_]+)" % "|".join(PREFIXES))
SCANNED = ("roles", "playbooks", "group_vars", "plugins", "site.yml")
# The fleet settings' declarations (sparkfleet_* variables an operator may set).
FLEET_SETTINGS = os.path.join("files", "fleet_settings.yml")
FLEET_PREFIX = "sparkfleet_"


def _yaml():
    import yaml  # PyYAML: ansible-core's own dependency

    return yaml


def _argument_spec_options(path):
    with open(path, "r", encoding="utf-8") as handle:
        data = _yaml().safe_load(handle) or {}
    names = set()
    for entry in (data.get("argument_specs") or {}).values():
        names.update((entry or {}).get("options") or {})
    return names


@functools.lru_cache(maxsize=None)
def endpoint_port_defaults(root):
    """The ports the fleet_endpoint role listens on when the inventory sets none: its
    defaults file (group_vars/all sets the others, and hostvars carry those)."""
    with open(os.path.join(root, "roles", "fleet_endpoint", "defaults", "main.yml"), "r", encoding="utf-8") as handle:
        data = _yaml().safe_load(handle) or {}
    return {key: data[key] for key in ENDPOINT_PORTS if key in data}


@functools.lru_cache(maxsize=None)
def fleet_settings(root):
    """The fleet settings files/fleet_settings.yml declares: {name: declaration}."""
    with open(os.path.join(root, FLEET_SETTINGS), "r", encoding="utf-8") as handle:
        return dict((_yaml().safe_load(handle) or {}).get("options") or {})


@functools.lru_cache(maxsize=None)
def option_specs(root):
    """Every role option the roles declare and every fleet setting: {name: {type, elements,
    choices, secret, declared}}, where ``declared`` names the file that declares it (the first
    role, for an option shared by roles; a unit test keeps shared options declared alike)."""
    specs = {name: {"type": option.get("type", "str"), "elements": option.get("elements"),
                    "choices": option.get("choices"), "secret": bool(option.get("secret")),
                    "declared": FLEET_SETTINGS}
             for name, option in fleet_settings(root).items()}
    for path in sorted(glob.glob(os.path.join(root, "roles", "*", "meta", "argument_specs.yml"))):
        with open(path, "r", encoding="utf-8") as handle:
            data = _yaml().safe_load(handle) or {}
        for entry in (data.get("argument_specs") or {}).values():
            for name, option in ((entry or {}).get("options") or {}).items():
                specs.setdefault(name, {"type": option.get("type", "str"), "elements": option.get("elements"),
                                        "choices": option.get("choices"), "secret": bool(option.get("no_log")),
                                        "declared": os.path.relpath(path, root)})
    return specs


def _top_level_keys(path):
    with open(path, "r", encoding="utf-8") as handle:
        data = _yaml().safe_load(handle)
    return set(data) if isinstance(data, dict) else set()


def _files(root):
    for entry in SCANNED:
        path = os.path.join(root, entry)
        if os.path.isfile(path):
            yield path
            continue
        # playbooks/group_vars links to group_vars: scanned once, under group_vars/.
        for base, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not os.path.islink(os.path.join(base, d)))
            for name in sorted(names):
                if not name.endswith((".pyc", ".pyo")):
                    yield os.path.join(base, name)


@functools.lru_cache(maxsize=None)
def known_variables(root):
    """Every variable name sparkfleet knows, from the repository at ``root`` (cached per process).

    A sparkfleet_* name is known when files/fleet_settings.yml declares it. A role-prefixed
    name is known when its role declares it (roles/*/meta/argument_specs.yml), group_vars/all
    sets it, or roles/, playbooks/, group_vars/, plugins/ or site.yml use it (a role's own
    derived values, which an inventory may pass to it).
    """
    names = set(fleet_settings(root))
    for path in sorted(glob.glob(os.path.join(root, "roles", "*", "meta", "argument_specs.yml"))):
        names |= _argument_spec_options(path)
    for path in sorted(glob.glob(os.path.join(root, "group_vars", "all", "*.yml"))
                       + glob.glob(os.path.join(root, "group_vars", "all", "*.yaml"))):
        names |= {name for name in _top_level_keys(path) if not name.startswith(FLEET_PREFIX)}
    for path in _files(root):
        try:
            with open(path, "r", encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError):
            continue
        names.update(name for name in IDENTIFIER_RE.findall(text) if not name.startswith(FLEET_PREFIX))
    return frozenset(names)
