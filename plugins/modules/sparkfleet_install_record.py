#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: record a host's state before sparkfleet changes it, so uninstall can put it back."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_install_record
short_description: Record what a host had before sparkfleet changed it
description:
  - Adds to the host's install record, once per item, the original of each file in O(files) (or
    that it did not exist), the original value of each key in O(json_keys), the live value of each
    kernel setting in O(sysctl) and whether each package in O(packages) was installed.
  - Items already recorded are left alone, so the record keeps the state from before the first
    install and a second run changes nothing.
  - C(playbooks/uninstall.yml) restores from this record (module C(sparkfleet_uninstall)).
options:
  record_file: {type: path, required: true, description: "The record (sparkfleet_install_record_file)."}
  files: {type: list, elements: path, default: [], description: Files sparkfleet will write but does not own.}
  dirs: {type: list, elements: path, default: [], description: Directories sparkfleet will create (missing parents too).}
  json_keys:
    type: dict
    default: {}
    description: JSON file path to the list of top-level keys sparkfleet merges into it.
  sysctl: {type: list, elements: str, default: [], description: Kernel settings sparkfleet will set.}
  packages: {type: list, elements: str, default: [], description: Packages sparkfleet may install.}
  units: {type: list, elements: str, default: [], description: systemd units sparkfleet will enable or start.}
  proc_sys: {type: path, default: /proc/sys, description: Where live kernel settings are read.}
"""

RETURN = r"""
recorded: {description: What this run added to the record (empty on a second run)., returned: always, type: list}
"""

import os
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_install_record import (load, record_dirs, record_files, record_json_keys,
                                                            record_packages, record_sysctl, record_units, save,
                                                            unit_state)


def package_installed(name):
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
    return result.returncode == 0 and "install ok installed" in result.stdout


def main():
    module = AnsibleModule(
        argument_spec=dict(
            record_file=dict(type="path", required=True),
            files=dict(type="list", elements="path", default=[]),
            dirs=dict(type="list", elements="path", default=[]),
            json_keys=dict(type="dict", default={}),
            sysctl=dict(type="list", elements="str", default=[]),
            packages=dict(type="list", elements="str", default=[]),
            units=dict(type="list", elements="str", default=[]),
            proc_sys=dict(type="path", default="/proc/sys"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    record = load(p["record_file"])
    recorded = []
    # In check mode nothing is copied; the record is only read to say what would be added.
    if module.check_mode:
        recorded += [f for f in p["files"] if f not in record["files"]]
        recorded += ["directory %s" % d for d in p["dirs"] if not os.path.exists(d) and d not in record["created_dirs"]]
        recorded += ["%s:%s" % (path, k) for path, keys in p["json_keys"].items()
                     for k in keys if k not in record["json_keys"].get(path, {})]
        recorded += ["sysctl %s" % k for k in p["sysctl"] if k not in record["sysctl"]]
        recorded += ["package %s" % k for k in p["packages"] if k not in record["packages"]]
        recorded += ["unit %s" % k for k in p["units"] if k not in record["units"]]
        module.exit_json(changed=bool(recorded), recorded=recorded)
    recorded += record_files(record, p["record_file"], p["files"])
    recorded += ["directory %s" % d for d in record_dirs(record, p["dirs"])]
    for path, keys in sorted(p["json_keys"].items()):
        recorded += ["%s:%s" % (path, k) for k in record_json_keys(record, path, keys)]
    recorded += ["sysctl %s" % k for k in record_sysctl(record, p["proc_sys"], p["sysctl"])]
    missing = [name for name in p["packages"] if name not in record["packages"]]
    recorded += ["package %s" % k for k in record_packages(record, {n: package_installed(n) for n in missing})]
    new_units = [u for u in p["units"] if u not in record["units"]]
    recorded += ["unit %s" % k for k in record_units(record, {u: unit_state(u) for u in new_units})]
    if recorded:
        save(p["record_file"], record)
    module.exit_json(changed=bool(recorded), recorded=recorded)


if __name__ == "__main__":
    main()
