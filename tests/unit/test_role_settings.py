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
