"""Preflight: every inconsistent fleet is refused with one line per problem, before any host is touched."""

import copy
import glob
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

from sparkfleet_preflight import combine, endpoint_port_defaults, known_variables, option_specs, pinned_releases, problems
from sparkfleet_vllm_profile import drain_bound

EXAMPLE = os.path.join(ROOT, "inventory", "example")
KNOWN = known_variables(ROOT)
GPUS = "must equal the pair's GPUs, 2 nodes × sparkfleet_gpus_per_node"
PIN = ("with sparkfleet_image_build false it must be pinned by digest, name@sha256:<64 hex digits> "
       "(or a local image ID, sha256:<64 hex digits>)")
DIGEST = "registry.example.internal/sparkfleet/vllm-spark@sha256:" + "ab" * 32


def _load(path):
    with open(path, "r", encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def example_fleet():
    """inventory/example/ with the repo's group_vars/all, as Ansible layers them (no templating needed)."""
    inventory = _load(os.path.join(EXAMPLE, "hosts.yml"))["all"]
    repo_all = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "group_vars", "all", "*.yml"))):
        repo_all.update(_load(path))
    groups = {name: group.get("hosts") or {} for name, group in inventory["children"].items()}
    group_files = {name: _load(path) for name in groups
                   for path in [os.path.join(EXAMPLE, "group_vars", name + ".yml")] if os.path.exists(path)}
    group_vars = {name: group.get("vars") or {} for name, group in inventory["children"].items()}
    hostvars = {}
    for group, hosts in groups.items():
        for host, own in hosts.items():
            hostvars[host] = {**repo_all, **(inventory.get("vars") or {}), **group_vars[group],
                              **group_files.get(group, {}), **(own or {})}
    # The one templated default a check reads, as Ansible resolves it (the
    # through-Ansible tests below run the real template).
    for host, variables in hostvars.items():
        profile = combine(repo_all["sparkfleet_profile_defaults"],
                          repo_all["sparkfleet_profiles"][variables.get("sparkfleet_profile", "balanced")]
                          if variables.get("sparkfleet_profile", "balanced") in repo_all["sparkfleet_profiles"] else {})
        variables["sparkfleet_roll_drain_timeout"] = drain_bound(profile, repo_all["sparkfleet_roll_drain_cap"])
    return hostvars, list(groups["sparkfleet_nodes"]), list(groups["sparkfleet_endpoint"])


def check(changes=None, nodes=None, endpoints=None, controller=None):
    """Problems of the example fleet with ``changes`` ({host: {var: value or DELETE}}) applied;
    ``controller``: localhost's variables."""
    hostvars, example_nodes, example_endpoints = example_fleet()
    for host, settings in (changes or {}).items():
        hostvars.setdefault(host, {})
        for key, value in settings.items():
            if value is DELETE:
                hostvars[host].pop(key, None)
            else:
                hostvars[host][key] = value
    return problems(hostvars, example_nodes if nodes is None else nodes,
                    example_endpoints if endpoints is None else endpoints, KNOWN,
                    endpoint_defaults=endpoint_port_defaults(ROOT), controller=controller,
                    releases=pinned_releases(ROOT), specs=option_specs(ROOT))


with open(os.path.join(ROOT, "group_vars", "all", "fleet.yml"), encoding="utf-8") as _handle:
    FLEET_RELEASE = str(yaml.safe_load(_handle)["sparkfleet_vllm_version"])
OTHER_RELEASE = next(v for v in pinned_releases(ROOT) if v != FLEET_RELEASE)
DELETE = object()
NODES = ("spark-01", "spark-02", "spark-03", "spark-04")
DSPARK = "fraserprice/DeepSeek-V4-Flash-DSpark"
DSPARK_DIR = "/var/lib/sparkfleet/models/DeepSeek-V4-Flash-DSpark"
CHECKPOINT = ("sparkfleet_model is {model}, but profile {profile} needs the checkpoint '{checkpoint}'; set "
              "sparkfleet_model: {checkpoint} and a sparkfleet_model_dir for it on each pair that runs it "
              "(group or host vars of its head and its worker)")
BECOME = ("localhost: ansible_become is {value}; the controller must not become (every task on or delegated to "
          "localhost would run through sudo): scope ansible_become to the sparkfleet_nodes and sparkfleet_endpoint "
          "groups (their vars:, not all: vars or -e)")


def on(hosts, **settings):
    return {host: dict(settings) for host in ([hosts] if isinstance(hosts, str) else hosts)}


def test_example_inventory_has_no_problems():
    assert check() == []


def test_example_inventory_has_no_problems_through_ansible():
    """The filter on real hostvars (templated group_vars, magic variables, implicit localhost)."""
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    run = subprocess.run([ansible, "localhost", "-i", EXAMPLE, "--playbook-dir", os.path.join(ROOT, "playbooks"),
                          "-m", "ansible.builtin.debug", "-a", "msg={{ hostvars | sparkfleet_preflight(groups) | to_json }}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=_ansible_env())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "msg: '[]'" in run.stdout, run.stdout


REFUSALS = [
    # --- the composed profile must use exactly the pair's GPUs
    ("tensor parallel 4 on a two-node pair",
     on("spark-01", sparkfleet_profile_overrides={"tensor_parallel_size": 4}),
     ["spark-01: tensor_parallel_size × pipeline_parallel_size of profile balanced is 4 × 1 = 4; %s 1 = 2" % GPUS]),
    ("pipeline parallel on top of tensor parallel",
     on("spark-03", sparkfleet_profile_overrides={"pipeline_parallel_size": 2}),
     ["spark-03: tensor_parallel_size × pipeline_parallel_size of profile balanced is 2 × 2 = 4; %s 1 = 2" % GPUS]),
    ("profile too small for two GPUs per node",
     on(NODES, sparkfleet_gpus_per_node=2),
     ["spark-01, spark-03: tensor_parallel_size × pipeline_parallel_size of profile balanced is 2 × 1 = 2; "
      "%s 2 = 4" % GPUS]),
    ("a profile's own setting counts (profile, then overrides, combined)",
     on("spark-01", sparkfleet_profile="latency",
        sparkfleet_profiles={**example_fleet()[0]["spark-01"]["sparkfleet_profiles"],
                             "latency": {"tensor_parallel_size": 1}}),
     ["spark-01: tensor_parallel_size × pipeline_parallel_size of profile latency is 1 × 1 = 1; %s 1 = 2" % GPUS]),
    ("non-integer parallel size",
     on("spark-01", sparkfleet_profile_overrides={"tensor_parallel_size": "two"}),
     ["spark-01: tensor_parallel_size of profile balanced is 'two'; must be an integer of at least 1"]),
    ("GPUs per node below one",
     on(NODES, sparkfleet_gpus_per_node=0),
     ["spark-01, spark-03: sparkfleet_gpus_per_node is 0; must be an integer of at least 1 (GPUs per Spark: one GB10)"]),
    ("unknown profile name",
     on("spark-03", sparkfleet_profile="fast"),
     ["spark-03: sparkfleet_profile is 'fast'; known profiles: balanced, latency, long_context_1m, throughput"]),
    # --- a profile that needs one checkpoint runs only on a pair that serves it
    ("profile that needs another checkpoint than the pair's",
     on("spark-01", sparkfleet_profile="long_context_1m"),
     ["spark-01, spark-02: " + CHECKPOINT.format(model="'deepseek-ai/DeepSeek-V4-Flash'", profile="long_context_1m",
                                                 checkpoint=DSPARK)]),
    ("the worker still on the old checkpoint",
     {**on("spark-01", sparkfleet_profile="long_context_1m", sparkfleet_model=DSPARK, sparkfleet_model_dir=DSPARK_DIR),
      **on("spark-02", sparkfleet_model_dir=DSPARK_DIR)},
     ["spark-02: " + CHECKPOINT.format(model="'deepseek-ai/DeepSeek-V4-Flash'", profile="long_context_1m",
                                       checkpoint=DSPARK)]),
    ("a checkpoint named by the overrides, on both pairs",
     on(NODES, sparkfleet_profile_overrides={"checkpoint": "example-org/Other-Checkpoint"}),
     ["spark-01, spark-02, spark-03, spark-04: " + CHECKPOINT.format(
         model="'deepseek-ai/DeepSeek-V4-Flash'", profile="balanced", checkpoint="example-org/Other-Checkpoint")]),
    ("pair without a model at all",
     on(("spark-03", "spark-04"), sparkfleet_profile="long_context_1m", sparkfleet_model=DELETE),
     ["spark-03, spark-04: " + CHECKPOINT.format(model="unset", profile="long_context_1m", checkpoint=DSPARK)]),
    # --- ports
    ("API port out of range (heads listen on it)",
     on(NODES, sparkfleet_api_port=70000),
     ["spark-01, spark-03: sparkfleet_api_port is 70000; must be an integer in 1..65535"]),
    ("master port zero",
     on(NODES, sparkfleet_master_port=0),
     ["spark-01, spark-02, spark-03, spark-04: sparkfleet_master_port is 0; must be an integer in 1..65535"]),
    ("port that is not a number",
     on("spark-01", sparkfleet_api_port="http"),
     ["spark-01: sparkfleet_api_port is 'http'; must be an integer in 1..65535"]),
    ("endpoint port out of range",
     on("fleet-gw", fleet_endpoint_port=70000),
     ["fleet-gw: fleet_endpoint_port is 70000; must be an integer in 1..65535"]),
    ("stats port out of range",
     on("fleet-gw", fleet_endpoint_stats_port=-1),
     ["fleet-gw: fleet_endpoint_stats_port is -1; must be an integer in 1..65535"]),
    ("master port equal to the API port",
     on(("spark-01", "spark-02"), sparkfleet_master_port=8000),
     ["spark-01: sparkfleet_master_port is 8000; must differ from sparkfleet_api_port (also 8000): "
      "both listen on this host"]),
    ("stats port equal to the endpoint port",
     on("fleet-gw", fleet_endpoint_stats_port=8000),
     ["fleet-gw: fleet_endpoint_stats_port is 8000; must differ from fleet_endpoint_port (also 8000): "
      "both listen on this host"]),
    ("worker joins another rendezvous port than its head's",
     on("spark-04", sparkfleet_master_port=29502),
     ["spark-04: sparkfleet_master_port is 29502; must equal its head spark-03's (29501): "
      "the worker joins the head's rendezvous on that port"]),
    # --- the checkpoint path
    ("empty model dir",
     on(NODES, sparkfleet_model_dir=""),
     ["spark-01, spark-02, spark-03, spark-04: sparkfleet_model_dir is ''; must be an absolute path "
      "(where the checkpoint lives on every node)"]),
    ("relative model dir",
     on("spark-02", sparkfleet_model_dir="models/DeepSeek-V4-Flash"),
     ["spark-02: sparkfleet_model_dir is 'models/DeepSeek-V4-Flash'; must be an absolute path "
      "(where the checkpoint lives on every node)"]),
    ("unset model dir",
     on("spark-02", sparkfleet_model_dir=DELETE),
     ["spark-02: sparkfleet_model_dir is unset; must be an absolute path (where the checkpoint lives on every node)"]),
    # --- the prebuilt image must be pinned by digest
    ("empty image reference",
     on(NODES, sparkfleet_image_ref=""),
     ["spark-01, spark-02, spark-03, spark-04: sparkfleet_image_ref is empty; %s" % PIN]),
    ("latest tag",
     on(NODES, sparkfleet_image_ref="registry.example.internal/sparkfleet/vllm-spark:latest"),
     ["spark-01, spark-02, spark-03, spark-04: sparkfleet_image_ref is "
      "'registry.example.internal/sparkfleet/vllm-spark:latest'; :latest moves, so %s" % PIN]),
    ("no tag at all (implicitly latest)",
     on("spark-01", sparkfleet_image_ref="registry.example.internal:5000/vllm-spark"),
     ["spark-01: sparkfleet_image_ref is 'registry.example.internal:5000/vllm-spark'; :latest moves, so %s" % PIN]),
    ("a tag",
     on("spark-01", sparkfleet_image_ref="registry.example.internal/sparkfleet/vllm-spark:v0.33.0"),
     ["spark-01: sparkfleet_image_ref is 'registry.example.internal/sparkfleet/vllm-spark:v0.33.0'; a tag can name "
      "different bits on the two nodes of a pair, so %s" % PIN]),
    ("a short digest",
     on("spark-01", sparkfleet_image_ref="vllm-spark@sha256:abc123"),
     ["spark-01: sparkfleet_image_ref is 'vllm-spark@sha256:abc123'; the digest must be sha256: and 64 lowercase "
      "hex digits (name@sha256:<64 hex digits> (or a local image ID, sha256:<64 hex digits>))"]),
    ("build mode that is not a boolean",
     on("spark-01", sparkfleet_image_build="sometimes"),
     ["spark-01: sparkfleet_image_build is 'sometimes'; must be true or false"]),
    # --- stop bounds: vLLM's own drain never shorter than a rollout's
    ("shutdown timeout below the drain bound",
     on("spark-01", spark_service_shutdown_timeout=10),
     ["spark-01: spark_service_shutdown_timeout is 10; must be an integer of at least the drain bound "
      "sparkfleet_roll_drain_timeout (900 s), or a reboot or `systemctl stop` cuts answers a rollout would wait "
      "for (leave it unset: it follows the drain bound)"]),
    ("drain bound of zero",
     on(NODES, sparkfleet_roll_drain_timeout=0),
     ["spark-01, spark-03: sparkfleet_roll_drain_timeout is 0; must be a whole number of seconds, at least 1 "
      "(how long a stop waits for answers in flight)"]),
    # --- variables nothing reads
    ("misspelt profile variable",
     on(NODES, sparkfleet_profil="throughput"),
     ["spark-01, spark-02, spark-03, spark-04: sparkfleet_profil is not a variable sparkfleet knows; "
      "nearest: sparkfleet_profile"]),
    ("misspelt role variable on the endpoint",
     on("fleet-gw", fleet_endpoint_prot=8080),
     ["fleet-gw: fleet_endpoint_prot is not a variable sparkfleet knows; nearest: fleet_endpoint_port"]),
    ("misspelt fleet setting",
     on("spark-02", sparkfleet_gpu_per_node=1),
     ["spark-02: sparkfleet_gpu_per_node is not a variable sparkfleet knows; nearest: sparkfleet_gpus_per_node"]),
    ("nothing close",
     on("spark-02", spark_host_zzzzzzzzzzzzzzzzzzzzzzzz=1),
     ["spark-02: spark_host_zzzzzzzzzzzzzzzzzzzzzzzz is not a variable sparkfleet knows; settings are declared in "
      "files/fleet_settings.yml and roles/*/meta/argument_specs.yml"]),
    ("a sparkfleet name the code uses internally is not a setting",
     on("spark-02", sparkfleet_roll_plan=[]),
     ["spark-02: sparkfleet_roll_plan is not a variable sparkfleet knows; nearest: sparkfleet_roll_canary"]),
    # --- the fleet settings' declared types and choices (files/fleet_settings.yml)
    ("a fleet setting of the wrong type",
     on(("spark-01", "spark-02"), sparkfleet_disk_reserve_gib="plenty"),
     ["spark-01, spark-02: sparkfleet_disk_reserve_gib is 'plenty'; must be a number (files/fleet_settings.yml)"]),
    ("a fleet setting outside its choices",
     on("spark-03", sparkfleet_reboot_method="kexec"),
     ["spark-03: sparkfleet_reboot_method is 'kexec'; must be one of 'reboot', 'container' (files/fleet_settings.yml)"]),
    ("a secret is named, never shown",
     on("spark-01", sparkfleet_api_key=["not", "a", "key"]),
     ["spark-01: sparkfleet_api_key is (secret); must be a string (files/fleet_settings.yml)"]),
    ("a value a dedicated check refused is not refused again by its declared type",
     on(("spark-01", "spark-02"), sparkfleet_perf_gate_share="fast"),
     ["spark-01: sparkfleet_perf_gate_share is 'fast'; must be a number above 0 and at most 1 (the share of its "
      "last known good figures a rolled pair must reach; 0.9 is 90%)"]),
    # --- the vLLM release: pinned, and one per pair
    ("a release sparkfleet has no fingerprint of",
     on(("spark-01", "spark-02"), sparkfleet_vllm_version="0.35.0"),
     ["spark-01, spark-02: sparkfleet_vllm_version is '0.35.0'; pinned releases with a fingerprint: 0.33.0, 0.34.0 "
      "(scripts/vllm-release X.Y.Z pins another)"]),
    ("a release as an unquoted YAML float",
     on(("spark-03", "spark-04"), sparkfleet_vllm_version=0.34),
     ["spark-03, spark-04: sparkfleet_vllm_version is 0.34; pinned releases with a fingerprint: 0.33.0, 0.34.0 "
      "(scripts/vllm-release X.Y.Z pins another)"]),
    ("a worker on another release than its head",
     on("spark-02", sparkfleet_vllm_version=OTHER_RELEASE),
     ["spark-02: sparkfleet_vllm_version is '%s'; its head spark-01 runs '%s': both ranks of a pair run "
      "one release (set it for the pair, not the node)" % (OTHER_RELEASE, FLEET_RELEASE)]),
    # --- role options against their argument specs, before the role runs
    ("a role's integer option given a word",
     on(("spark-01", "spark-02"), spark_service_start_timeout="ten minutes"),
     ["spark-01, spark-02: spark_service_start_timeout is 'ten minutes'; must be an integer "
      "(roles/spark_service/meta/argument_specs.yml)"]),
    ("a role's choice option given something else",
     on("spark-03", spark_fabric_nccl_debug="VERBOSE"),
     ["spark-03: spark_fabric_nccl_debug is 'VERBOSE'; must be one of 'VERSION', 'WARN', 'INFO', 'TRACE', 'ABORT' "
      "(roles/spark_fabric/meta/argument_specs.yml)"]),
    ("a role's boolean option given a word",
     on("spark-04", spark_service_cleanup="always"),
     ["spark-04: spark_service_cleanup is 'always'; must be true or false "
      "(roles/spark_service/meta/argument_specs.yml)"]),
    ("a role's list of integers holding a word",
     on("spark-01", spark_fabric_guarded_ports=[29501, "rendezvous"]),
     ["spark-01: spark_fabric_guarded_ports is [29501, 'rendezvous']; must be a list of integers; 'rendezvous' "
      "is not (roles/spark_fabric/meta/argument_specs.yml)"]),
    ("a role's path option given a YAML boolean",
     on("fleet-gw", fleet_endpoint_tls_certificate=False),
     ["fleet-gw: fleet_endpoint_tls_certificate is false; must be a string "
      "(roles/fleet_endpoint/meta/argument_specs.yml)"]),
    ("a role's number option given a mapping",
     on("fleet-gw", fleet_monitoring_alert_kv_cache_usage={"warn": 0.9}),
     ["fleet-gw: fleet_monitoring_alert_kv_cache_usage is {'warn': 0.9}; must be a number "
      "(roles/fleet_monitoring/meta/argument_specs.yml)"]),
    ("a monitoring option misspelt (fleet_monitoring_ is a sparkfleet prefix)",
     on("fleet-gw", fleet_monitoring_scrape_intervall="30s"),
     ["fleet-gw: fleet_monitoring_scrape_intervall is not a variable sparkfleet knows; nearest: "
      "fleet_monitoring_scrape_interval"]),
    # --- the endpoint's virtual IP (two endpoint hosts)
    ("two endpoint hosts without a virtual IP",
     on(("fleet-gw", "fleet-gw2"), fleet_endpoint_vip=""),
     ["sparkfleet_endpoint has 2 hosts (fleet-gw, fleet-gw2) but no fleet_endpoint_vip: clients need one address "
      "that moves between them; set fleet_endpoint_vip in the group's vars, or keep one endpoint host"]),
    ("a virtual IP set on one endpoint host only",
     on("fleet-gw2", fleet_endpoint_vip="192.168.1.97"),
     ["fleet_endpoint_vip differs between the endpoint hosts (fleet-gw='192.168.1.99', fleet-gw2='192.168.1.97'): "
      "one virtual IP, set in the sparkfleet_endpoint group's vars"]),
    ("a virtual IP that is not an IPv4 address",
     on(("fleet-gw", "fleet-gw2"), fleet_endpoint_vip="vip.example.org"),
     ["fleet_endpoint_vip 'vip.example.org' is not an IPv4 address (e.g. 192.168.1.99)"]),
    ("a virtual IP that is a Spark's address",
     on(("fleet-gw", "fleet-gw2"), fleet_endpoint_vip="192.168.1.103"),
     ["fleet_endpoint_vip 192.168.1.103 is the address of spark-03: the virtual IP must be a free address on the "
      "management network"]),
    # --- topology (the existing rules, as a line instead of an exception)
    ("two heads in a pair",
     on("spark-02", sparkfleet_node_role="head"),
     ["sparkfleet inventory: pair a has 2 head node(s) (spark-01, spark-02); a pair is exactly one head "
      "(rank 0, serves the API) and one worker (rank 1, headless)"]),
]


@pytest.mark.parametrize("changes, expected", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusal(changes, expected):
    assert check(changes) == expected


ACCEPTED = [
    ("build mode ignores the image reference", on(NODES, sparkfleet_image_build=True, sparkfleet_image_ref="x:latest")),
    ("build mode as -e gives it", on(NODES, sparkfleet_image_build="true", sparkfleet_image_ref="")),
    ("digest after a tag", on(NODES, sparkfleet_image_ref="vllm-spark:v1@sha256:" + "0" * 64)),
    ("a drain bound as -e gives it, with vLLM's drain following it",
     on(NODES, sparkfleet_roll_drain_timeout="120")),
    ("a longer engine drain than the rollout's", on(NODES, spark_service_shutdown_timeout=1200)),
    ("ports as -e gives them", on(NODES, sparkfleet_api_port="9000", sparkfleet_master_port="29600")),
    ("the worker's own profile choice is not used", on("spark-02", sparkfleet_profile="nonexistent")),
    ("variables without sparkfleet's prefixes are not ours", on(NODES, my_site_setting=1, spark_rack="r1")),
    ("two GPUs per node with TP 4", on(("spark-01", "spark-02"), sparkfleet_gpus_per_node=2,
                                       sparkfleet_profile_overrides={"tensor_parallel_size": 4})),
    ("the 1M profile on a pair that serves its checkpoint",
     on(("spark-01", "spark-02"), sparkfleet_profile="long_context_1m", sparkfleet_model=DSPARK,
        sparkfleet_model_dir=DSPARK_DIR)),
    ("the DSpark checkpoint under a profile that needs none", on(("spark-03", "spark-04"), sparkfleet_model=DSPARK)),
    ("the worker's own profile choice names no checkpoint", on("spark-02", sparkfleet_profile="long_context_1m")),
    ("one pair on another pinned release while the fleet moves",
     on(("spark-01", "spark-02"), sparkfleet_vllm_version=OTHER_RELEASE)),
]


@pytest.mark.parametrize("changes", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_accepted(changes):
    assert check(changes) == []


@pytest.mark.parametrize("value, shown", [(True, "true"), ("yes", "'yes'"), ("True", "'True'"), (1, "1")])
def test_a_controller_that_would_become_is_refused(value, shown):
    assert check(controller={"ansible_become": value, "ansible_user": "sparkops"}) == [BECOME.format(value=shown)]


@pytest.mark.parametrize("controller", [{}, {"ansible_become": False}, {"ansible_become": "no"},
                                        {"ansible_user": "sparkops"}, None])
def test_a_controller_that_does_not_become_is_accepted(controller):
    assert check(controller=controller) == []


def test_the_controller_is_reported_first_with_the_fleet_problems():
    assert check(on("spark-01", sparkfleet_api_port=70000), controller={"ansible_become": True}) == [
        BECOME.format(value="true"), "spark-01: sparkfleet_api_port is 70000; must be an integer in 1..65535"]


def test_the_example_inventory_keeps_connection_settings_off_group_all():
    """The implicit localhost takes group all's vars; ssh user and sudo belong to the node and endpoint groups."""
    inventory = _load(os.path.join(EXAMPLE, "hosts.yml"))["all"]
    assert not {"ansible_become", "ansible_user", "ansible_connection"} & set(inventory.get("vars") or {})
    for group in ("sparkfleet_nodes", "sparkfleet_endpoint"):
        assert inventory["children"][group]["vars"]["ansible_become"] is True, group


def test_head_and_endpoint_on_one_host_need_four_distinct_ports():
    assert check(nodes=list(NODES), endpoints=["spark-01"]) == [
        "spark-01: fleet_endpoint_port is 8000; must differ from sparkfleet_api_port (also 8000): both listen on this host"]
    assert check(on("spark-01", fleet_endpoint_port=8080, fleet_endpoint_stats_port=29501),
                 nodes=list(NODES), endpoints=["spark-01"]) == [
        "spark-01: fleet_endpoint_stats_port is 29501; must differ from sparkfleet_master_port (also 29501): "
        "both listen on this host"]


def test_every_problem_is_reported_at_once():
    found = check({"spark-01": {"sparkfleet_profil": "throughput", "sparkfleet_api_port": 70000,
                                "sparkfleet_image_ref": "vllm-spark:latest"}})
    assert [line.split(":", 2)[1].split()[0] for line in found] == [
        "sparkfleet_profil", "sparkfleet_image_ref", "sparkfleet_api_port"]


class _Unresolvable(dict):
    """A host's variables as Ansible's hostvars give them, one of which fails to template."""

    def __init__(self, variables, key, error):
        super().__init__(variables)
        self._key, self._error = key, error

    def __getitem__(self, key):
        if key == self._key:
            raise RuntimeError(self._error)
        return dict.__getitem__(self, key)


def test_a_value_that_cannot_be_templated_is_a_problem_not_a_crash():
    hostvars, nodes, endpoints = example_fleet()
    hostvars["spark-02"] = _Unresolvable(hostvars["spark-02"], "sparkfleet_model_dir",
                                         "'sparkfleet_root' is undefined\nmore detail")
    assert problems(hostvars, nodes, endpoints, KNOWN, endpoint_defaults=endpoint_port_defaults(ROOT)) == [
        "spark-02: sparkfleet_model_dir cannot be resolved ('sparkfleet_root' is undefined); it must evaluate to a value"]


def test_a_role_option_that_resolves_only_inside_its_role_is_not_a_problem():
    """The spec check reads role options the inventory sets; one naming role_path (as a lab
    test's -e does) cannot be templated outside its role, and that is no problem of the fleet."""
    hostvars, nodes, endpoints = example_fleet()
    for host in nodes:
        hostvars[host] = _Unresolvable(dict(hostvars[host], spark_service_vllm_fingerprint="{{ role_path }}/x.json"),
                                       "spark_service_vllm_fingerprint", "'role_path' is undefined")
    assert problems(hostvars, nodes, endpoints, KNOWN, endpoint_defaults=endpoint_port_defaults(ROOT), specs=option_specs(ROOT)) == []


def _filter_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sparkfleet_preflight_filter", os.path.join(ROOT, "plugins", "filter", "sparkfleet_preflight.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_filter_reports_deferred_template_errors():
    """ansible-core 2.19 hands a filter an Undefined (its deferred error marker), even nested, instead of raising."""
    from jinja2 import StrictUndefined

    hostvars, nodes, endpoints = example_fleet()
    hostvars["spark-01"]["sparkfleet_profile_overrides"] = {"env": {"X": StrictUndefined(name="site_env")}}
    hostvars["spark-02"]["sparkfleet_model_dir"] = StrictUndefined(name="sparkfleet_root")
    module = _filter_module()
    assert module.FilterModule().filters()["sparkfleet_preflight"] is module.sparkfleet_preflight
    assert module.sparkfleet_preflight(hostvars, {"sparkfleet_nodes": nodes, "sparkfleet_endpoint": endpoints}) == [
        "spark-01: sparkfleet_profile_overrides cannot be resolved ('site_env' is undefined); it must evaluate to a value",
        "spark-02: sparkfleet_model_dir cannot be resolved ('sparkfleet_root' is undefined); it must evaluate to a value"]


def test_filter_without_nodes_reports_the_topology():
    assert _filter_module().sparkfleet_preflight({}, {}) == [
        "sparkfleet inventory: the inventory has no hosts in group sparkfleet_nodes: describe at least one pair "
        "(see inventory/example/)"]


def test_combine_is_recursive_for_mappings_only():
    assert combine({"a": {"x": 1, "y": 2}, "l": [1, 2]}, {"a": {"y": 3}, "l": [3]}) == {"a": {"x": 1, "y": 3}, "l": [3]}


def test_known_variables_come_from_specs_group_vars_and_code():
    assert known_variables(ROOT) is KNOWN  # cached per process
    assert {"fleet_endpoint_stats_port",  # an argument spec option
            "sparkfleet_gpus_per_node",  # a group_vars/all key
            "sparkfleet_fabric_address",  # read by the roles, set only in inventories
            "spark_image_serving_ref",  # set by a task
            } <= KNOWN
    assert "sparkfleet_profil" not in KNOWN


# --- the playbook: the run stops on the controller, each problem one line, no wrapper text

def _ansible_env():
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0")
    env.pop("ANSIBLE_CONFIG", None)
    return env


def _local_hosts(inventory, **all_vars):
    """inventory/hosts.yml with every host on the controller: the ssh user and sudo of the
    node and endpoint groups dropped, ``all_vars`` under all: vars. Should anything run
    past preflight, it touches no real machine."""
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    for group in hosts["all"]["children"].values():
        for name in ("ansible_user", "ansible_become"):
            (group.get("vars") or {}).pop(name, None)
    hosts["all"]["vars"] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **all_vars}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))


def test_preflight_playbook_refuses_with_one_line_per_problem(tmp_path):
    inventory = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, inventory)
    # The connection settings under all: vars, where the implicit localhost takes them too.
    _local_hosts(inventory, ansible_become=True)
    with open(inventory / "group_vars" / "sparkfleet_nodes.yml", "a", encoding="utf-8") as handle:
        handle.write("sparkfleet_profil: throughput\nsparkfleet_profile_overrides: {tensor_parallel_size: 4}\n"
                     "sparkfleet_model_dir: \"{{ sparkfleet_root }}/models\"\n")
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    run = subprocess.run([playbook, "-i", str(inventory), "playbooks/preflight.yml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=_ansible_env())
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    lines = [line.strip() for line in output.splitlines()]
    for expected in (
            BECOME.format(value="true"),
            "spark-01, spark-02, spark-03, spark-04: sparkfleet_profil is not a variable sparkfleet knows; "
            "nearest: sparkfleet_profile",
            "spark-01, spark-03: tensor_parallel_size × pipeline_parallel_size of profile balanced is 4 × 1 = 4; "
            "%s 1 = 2" % GPUS,
            "spark-01, spark-02, spark-03, spark-04: sparkfleet_model_dir cannot be resolved "
            "('sparkfleet_root' is undefined); it must evaluate to a value"):
        assert expected in lines, output
    assert "Task failed: Finalization" not in output
    assert "Error while resolving" not in output
    # Nothing after the first play ran.
    assert "PLAY [Group the nodes" not in output, output
    assert "spark-01" not in output.split("PLAY RECAP", 1)[1], output


def _example_inventory(tmp_path):
    inventory = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, inventory)
    _local_hosts(inventory)
    return inventory


def _preflight(tmp_path, inventory, *extra):
    env = _ansible_env()
    env["HOME"] = str(tmp_path)  # the generated API key file lands here, not in the real home
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    run = subprocess.run([playbook, "-i", str(inventory), "playbooks/preflight.yml"] + list(extra),
                         cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    return run.returncode, run.stdout + run.stderr


def test_preflight_renders_and_checks_every_launch_of_the_example_fleet(tmp_path):
    """The whole preflight (every node's launch rendered and checked against the
    pinned vLLM fingerprint) passes on the example fleet, generating the API key
    into a private file and printing it nowhere."""
    inventory = _example_inventory(tmp_path)
    rc, output = _preflight(tmp_path, inventory)
    assert rc == 0, output[-4000:]
    key_file = tmp_path / ".config" / "sparkfleet" / "inventory.api-key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert oct(key_file.parent.stat().st_mode & 0o777) == "0o700"
    key = key_file.read_text().strip()
    assert len(key) == 48 and key not in output


def test_a_misspelt_flag_stops_preflight_with_one_line_naming_the_nearest(tmp_path):
    inventory = _example_inventory(tmp_path)
    rc, output = _preflight(tmp_path, inventory, "-e",
                            '{"sparkfleet_profile_overrides": {"extra_args": ["--max-num-seqz", "8"]}}')
    assert rc != 0
    with open(os.path.join(ROOT, "group_vars", "all", "fleet.yml"), encoding="utf-8") as handle:
        release = yaml.safe_load(handle)["sparkfleet_vllm_version"]
    assert ("spark-01: --max-num-seqz is not a `vllm serve` option of vLLM %s (pinned fingerprint); "
            "nearest: --max-num-seqs" % release) in output, output[-4000:]
    assert "Task failed: Finalization" not in output and "Error while resolving" not in output


ROLL_BATCH = ("localhost: sparkfleet_roll_batch is {value}; must be a whole number of pairs (1 or more) or a share "
              "of the fleet above 0% and at most 100%, such as '25%'")
GATE_SHARE = ("spark-01, spark-03: sparkfleet_perf_gate_share is {value}; must be a number above 0 and at most 1 "
              "(the share of its last known good figures a rolled pair must reach; 0.9 is 90%)")


@pytest.mark.parametrize("value, shown", [(0, "0"), ("0", "'0'"), ("150%", "'150%'"), ("0%", "'0%'"),
                                          ("two", "'two'"), (True, "true"), (-1, "-1")])
def test_a_rollout_batch_no_plan_can_use_is_refused(value, shown):
    assert check(controller={"sparkfleet_roll_batch": value}) == [ROLL_BATCH.format(value=shown)]


@pytest.mark.parametrize("value", [1, "3", "25%", "100%", 12])
def test_a_rollout_batch_of_pairs_or_a_share_is_accepted(value):
    assert check(controller={"sparkfleet_roll_batch": value}) == []


def test_min_serving_pairs_must_leave_a_pair_to_restart():
    # The example fleet has two pairs.
    assert check(controller={"sparkfleet_roll_min_serving_pairs": 2}) == [
        "localhost: sparkfleet_roll_min_serving_pairs is 2; must be less than the fleet's 2 pairs, "
        "or no pair can restart while that many keep serving"]
    assert check(controller={"sparkfleet_roll_min_serving_pairs": -1}) == [
        "localhost: sparkfleet_roll_min_serving_pairs is -1; must be a whole number, 0 or more "
        "(pairs that keep serving while others restart)"]
    assert check(controller={"sparkfleet_roll_min_serving_pairs": 1, "sparkfleet_roll_canary": "maybe"}) == [
        "localhost: sparkfleet_roll_canary is 'maybe'; must be true or false"]


@pytest.mark.parametrize("value, shown", [(1.5, "1.5"), (0, "0"), ("fast", "'fast'"), (-0.1, "-0.1"), (90, "90")])
def test_a_performance_gate_share_no_pair_can_pass_is_refused(value, shown):
    changes = {node: {"sparkfleet_perf_gate_share": value} for node in NODES}
    assert check(changes) == [GATE_SHARE.format(value=shown)]


@pytest.mark.parametrize("value", [1, 0.9, "0.75"])
def test_a_performance_gate_share_up_to_one_is_accepted(value):
    assert check({node: {"sparkfleet_perf_gate_share": value} for node in NODES}) == []


def test_two_sparks_with_one_address_are_refused():
    assert check(on("spark-03", ansible_host="192.168.1.101")) == [
        "spark-01, spark-03: ansible_host is 192.168.1.101 on each; every Spark must have its own address"]


def test_bad_rollout_settings_stop_the_rollout_in_preflight_with_one_line(tmp_path):
    """rolling_restart.yml refuses a batch no plan can use in its preflight, before any pair is
    drained, in one line and without Ansible's filter wrapper text."""
    inventory = _example_inventory(tmp_path)
    env = _ansible_env()
    env["HOME"] = str(tmp_path)
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    run = subprocess.run([playbook, "-i", str(inventory), "playbooks/rolling_restart.yml",
                          "-e", "sparkfleet_roll_batch=150%", "-e", "sparkfleet_perf_gate_share=1.5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    lines = [line.strip() for line in output.splitlines()]
    assert ROLL_BATCH.format(value="'150%'") in lines, output[-4000:]
    # -e gives a string: shown quoted, as the operator typed it.
    assert GATE_SHARE.format(value="'1.5'") in lines, output[-4000:]
    assert "Finalization" not in output, output[-4000:]
    assert "PLAY [Plan the rollout]" not in output, "the rollout went past its preflight"


TLS = "must be a PEM file on the controller holding the certificate chain and its private key"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("name, content, relative, problem", [
    ("missing", None, False, "no such file or directory on the controller: " + TLS),
    ("certificate only", CERT, False, "it holds no private key: " + TLS),
    ("key only", KEY, False, "it holds no certificate: " + TLS),
    ("neither", "hello\n", False, "it holds no certificate and no private key: " + TLS),
    ("relative path", CERT + KEY, True, "must be an absolute path to a PEM file on the controller holding the "
                                        "certificate chain and its private key (e.g. '{{ inventory_dir }}/tls/api.pem')"),
])
def test_an_endpoint_certificate_the_controller_cannot_hand_out_is_refused(tmp_path, name, content, relative, problem):
    pem = tmp_path / "api.pem"
    if content is not None:
        pem.write_text(content)
    value = "tls/api.pem" if relative else str(pem)
    assert check(on(("fleet-gw", "fleet-gw2"), fleet_endpoint_tls_certificate=value)) == [
        "fleet-gw, fleet-gw2: fleet_endpoint_tls_certificate is '%s'; %s" % (value, problem)]


def test_an_endpoint_certificate_with_its_key_is_accepted(tmp_path):
    pem = tmp_path / "api.pem"
    pem.write_text(CERT + KEY)
    assert check(on(("fleet-gw", "fleet-gw2"), fleet_endpoint_tls_certificate=str(pem))) == []


def test_the_endpoint_port_defaults_are_the_roles_and_group_vars_own():
    """No port is typed in preflight: the role's defaults file and group_vars/all name them."""
    with open(os.path.join(ROOT, "roles", "fleet_endpoint", "defaults", "main.yml"), encoding="utf-8") as handle:
        stats = yaml.safe_load(handle)["fleet_endpoint_stats_port"]
    assert endpoint_port_defaults(ROOT) == {"fleet_endpoint_stats_port": stats}
    # The inventory sets no stats port: the role's default is the one checked.
    found = check(on("fleet-gw", fleet_endpoint_port=stats))
    assert len(found) == 1 and found[0].startswith(
        "fleet-gw: fleet_endpoint_stats_port is %d; must differ from fleet_endpoint_port (also %d)" % (stats, stats)), found
