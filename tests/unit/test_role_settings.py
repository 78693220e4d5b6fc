"""Each role's settings are declared once: meta/argument_specs.yml is the schema (type, choices,
default, description) and defaults/main.yml must say exactly what it says. Preflight validates
an inventory against the same declarations (test_preflight.py)."""

import glob
import os

import pytest
import yaml

from conftest import ROOT

ROLES = sorted(os.path.basename(os.path.dirname(os.path.dirname(path)))
               for path in glob.glob(os.path.join(ROOT, "roles", "*", "meta", "argument_specs.yml")))


def _load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def _options(role):
    """[(entry point, name, option)] of a role's argument specs."""
    specs = _load(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml"))["argument_specs"]
    return [(entry, name, option) for entry, spec in specs.items()
            for name, option in ((spec or {}).get("options") or {}).items()]


def test_every_role_declares_its_settings():
    assert ROLES == sorted(os.path.basename(path) for path in glob.glob(os.path.join(ROOT, "roles", "*"))
                           if os.path.isdir(path))


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_the_declared_defaults(role):
    path = os.path.join(ROOT, "roles", role, "defaults", "main.yml")
    defaults = _load(path) if os.path.exists(path) else {}
    options = _options(role)
    declared = {name for _, name, _ in options}
    assert sorted(set(defaults) - declared) == [], "defaults/main.yml sets options argument_specs.yml does not declare"
    wrong = [(entry, name, option["default"], defaults.get(name, "<not in defaults/main.yml>"))
             for entry, name, option in options
             if "default" in option and (name not in defaults or defaults[name] != option["default"])]
    assert wrong == [], "argument_specs.yml default differs from defaults/main.yml (entry, option, spec, defaults)"


@pytest.mark.parametrize("role", ROLES)
def test_every_option_is_described_and_typed(role):
    missing = [(entry, name) for entry, name, option in _options(role)
               if not option.get("description") or "type" not in option]
    assert missing == []


def test_an_option_shared_by_entry_points_or_roles_is_declared_alike():
    seen, differ = {}, []
    for role in ROLES:
        for entry, name, option in _options(role):
            shape = {key: option.get(key) for key in ("type", "elements", "choices", "default")}
            where = "%s:%s" % (role, entry)
            if name in seen and seen[name][1] != shape:
                differ.append((name, seen[name][0], where))
            seen.setdefault(name, (where, shape))
    assert differ == []


# The fleet settings: files/fleet_settings.yml declares every sparkfleet_* setting;
# group_vars/all gives the defaults.
FLEET = _load(os.path.join(ROOT, "files", "fleet_settings.yml"))["options"]
GROUP_VARS = {name: value for path in sorted(glob.glob(os.path.join(ROOT, "group_vars", "all", "*.yml")))
              for name, value in _load(path).items()}
ROLE_OPTIONS = {name for role in ROLES for _, name, _ in _options(role)}


def test_group_vars_all_sets_only_declared_settings():
    undeclared = sorted(name for name in GROUP_VARS if name not in FLEET and name not in ROLE_OPTIONS)
    assert undeclared == [], "declare these in files/fleet_settings.yml (or as a role's option)"
    # A role option set fleet-wide stays the role's declaration: the fleet file does not repeat it.
    assert sorted(set(FLEET) & ROLE_OPTIONS) == []
    assert all(name.startswith("sparkfleet_") for name in FLEET)


def test_every_fleet_setting_is_typed_described_and_valid_by_default():
    import sparkfleet_preflight as preflight  # pylint: disable=import-outside-toplevel

    for name, option in FLEET.items():
        assert option.get("type") in preflight._TYPES, name  # pylint: disable=protected-access
        description = option.get("description") or ""
        assert description and "\n" not in description.strip(), name
        assert "default" not in option, "%s: the default lives in group_vars/all (or the playbook)" % name
        assert set(option) <= {"type", "elements", "choices", "description", "derived", "secret"}, name
        value = GROUP_VARS.get(name)
        if value is not None and not (isinstance(value, str) and "{{" in value):
            assert preflight._spec_problem(value, option) is None, (name, value)  # pylint: disable=protected-access
        if option.get("derived"):
            assert name in GROUP_VARS, "%s is derived: group_vars/all composes it" % name


def test_every_fleet_setting_without_a_default_is_read_somewhere():
    """A setting the inventory or -e gives (no group_vars default) is one the code reads."""
    texts = []
    for pattern in ("roles/**/*.yml", "roles/**/*.j2", "playbooks/**/*.yml", "plugins/**/*.py"):
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            with open(path, encoding="utf-8") as handle:
                texts.append(handle.read())
    text = "\n".join(texts)
    unread = [name for name in FLEET if name not in GROUP_VARS and name not in text]
    assert unread == []
