# -*- coding: utf-8 -*-
"""Jinja filter for preflight.yml: every inconsistency of the fleet, one line each.

The checks live in plugins/module_utils/sparkfleet_preflight.py (pure Python,
unit tested). This filter never raises on a bad fleet: it returns the lines,
and the playbook fails on them, so the operator reads each one without
Ansible's wrapper text around it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from jinja2 import Undefined

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))

import sparkfleet_preflight as preflight  # noqa: E402  pylint: disable=wrong-import-position

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
NODES_GROUP = "sparkfleet_nodes"
ENDPOINT_GROUP = "sparkfleet_endpoint"

class UnresolvedVariable(ValueError):
    """A variable whose template does not evaluate (undefined name, failing lookup or filter)."""


def _undefined_in(value, depth=0):
    """The first undefined (Ansible's deferred error marker) in a templated value, else None."""
    if isinstance(value, Undefined):
        return value
    if depth < 20 and isinstance(value, Mapping):
        for item in value.values():
            found = _undefined_in(item, depth + 1)
            if found is not None:
                return found
    elif depth < 20 and isinstance(value, (list, tuple)):
        for item in value:
            found = _undefined_in(item, depth + 1)
            if found is not None:
                return found
    return None


def _reason(marker):
    for attribute in ("_as_message", "_undefined_message"):
        try:
            text = getattr(type(marker), attribute).__get__(marker)
            return str(text() if callable(text) else text)
        except Exception:  # pylint: disable=broad-except
            continue
    return "undefined"


class _HostVars(Mapping):
    """One host's variables: names without templating; a value is templated when read.

    In ansible-core 2.19 a template that fails inside a filter yields a
    deferred marker instead of raising; it is raised here as
    UnresolvedVariable so the preflight reports it as a problem.
    """

    def __init__(self, variables):
        self._vars = variables

    def __getitem__(self, key):
        value = self._vars[key]
        marker = _undefined_in(value)
        if marker is not None:
            raise UnresolvedVariable(_reason(marker))
        return value

    def __contains__(self, key):
        return key in self._vars

    def __iter__(self):
        return iter(self._vars.keys())

    def __len__(self):
        return len(self._vars)


def sparkfleet_preflight(hostvars, groups):
    """Problems of the fleet in groups sparkfleet_nodes and sparkfleet_endpoint, and of the
    controller (localhost); [] when consistent.

    Reads only the values the checks need from ``hostvars`` (each read
    templates that one variable); the unknown-variable check looks at names
    only. Run it before any set_fact: facts would count as variables.
    """
    groups = groups or {}
    nodes = list(groups.get(NODES_GROUP) or [])
    endpoints = list(groups.get(ENDPOINT_GROUP) or [])
    # hostvars[h] is a lazy mapping: keys() does not template, [key] templates one value.
    fleet = {host: _HostVars(hostvars[host]) for host in dict.fromkeys(nodes + endpoints)}
    # Ansible's implicit localhost is not among hostvars' keys, yet
    # hostvars['localhost'] holds its variables (group all's included).
    controller = _HostVars(hostvars[preflight.CONTROLLER]) if preflight.CONTROLLER in hostvars else None
    return preflight.problems(fleet, nodes, endpoints, preflight.known_variables(ROOT), preflight.endpoint_port_defaults(ROOT),
                              controller, preflight.pinned_releases(ROOT), preflight.option_specs(ROOT))


class FilterModule:
    """sparkfleet preflight filter."""

    def filters(self):
        return {"sparkfleet_preflight": sparkfleet_preflight}
