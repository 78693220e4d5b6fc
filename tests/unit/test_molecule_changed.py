"""The role -> molecule scenario map covers every role, and changes select the scenarios that exercise them."""

import importlib.machinery
import importlib.util
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_loader = importlib.machinery.SourceFileLoader("molecule_changed", os.path.join(ROOT, "scripts", "molecule-changed"))
_spec = importlib.util.spec_from_loader("molecule_changed", _loader)
mc = importlib.util.module_from_spec(_spec)
_loader.exec_module(mc)

MAP = mc.load_map()
SCENARIOS = mc.scenarios()


def test_every_role_has_scenarios_and_every_named_scenario_exists():
    roles = sorted(d for d in os.listdir(os.path.join(ROOT, "roles")) if os.path.isdir(os.path.join(ROOT, "roles", d)))
    assert sorted(MAP["roles"]) == roles, "molecule/scenarios.yml must list exactly the roles in roles/"
    for role, names in MAP["roles"].items():
        assert names, "role %s is covered by no scenario" % role
        assert set(names) <= set(SCENARIOS), "role %s names a scenario that does not exist: %s" % (role, names)


def test_every_scenario_covers_some_role():
    covered = {s for names in MAP["roles"].values() for s in names}
    assert covered == set(SCENARIOS)


def test_a_role_change_selects_its_scenarios_only():
    # The monitoring scenario converges the endpoint too (it scrapes HAProxy's exporter).
    assert mc.select(["roles/fleet_endpoint/templates/haproxy.cfg.j2"], MAP, SCENARIOS) == ["endpoint", "monitoring"]
    assert mc.select(["roles/fleet_monitoring/tasks/main.yml"], MAP, SCENARIOS) == ["monitoring"]
    assert mc.select(["roles/spark_fabric/tasks/link.yml"], MAP, SCENARIOS) == ["default", "fabric"]


def test_a_plugin_maps_through_the_roles_that_use_it():
    # The HAProxy runtime module is used by fleet_endpoint (and by rollout playbooks no scenario runs).
    assert "endpoint" in mc.select(["plugins/modules/sparkfleet_haproxy.py"], MAP, SCENARIOS)
    # module_utils reach scenarios through the modules that import them.
    assert "artifacts" in mc.select(["plugins/module_utils/sparkfleet_weights.py"], MAP, SCENARIOS)
    # A filter maps by the names it registers.
    assert "fabric" in mc.select(["plugins/filter/sparkfleet_fabric.py"], MAP, SCENARIOS)


def test_scenario_files_and_shared_paths():
    assert mc.select(["molecule/endpoint/tests/test_endpoint.py"], MAP, SCENARIOS) == ["endpoint"]
    assert mc.select(["group_vars/all/fleet.yml"], MAP, SCENARIOS) == SCENARIOS
    assert mc.select(["README.md", "tests/lab/test_drain.py"], MAP, SCENARIOS) == []


def test_pre_commit_config_is_valid_and_runs_the_selection_on_push():
    import subprocess
    import sys

    import yaml
    pre_commit = os.path.join(os.path.dirname(sys.executable), "pre-commit")
    result = subprocess.run([pre_commit, "validate-config", ".pre-commit-config.yaml"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(ROOT, ".pre-commit-config.yaml"), encoding="utf-8") as handle:
        hooks = {h["id"]: h for repo in yaml.safe_load(handle)["repos"] for h in repo["hooks"]}
    assert "scripts/molecule-changed" in hooks["molecule-changed"]["entry"]
    assert hooks["molecule-changed"]["stages"] == ["pre-push"]
    assert {"yamllint", "ansible-lint"} <= set(hooks)
