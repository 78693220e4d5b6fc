#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: undo what sparkfleet did on a host (one role's share per call)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_uninstall
short_description: Restore recorded originals and delete sparkfleet's own files
description:
  - Restores each file in O(restore) from the install record (or deletes it when the record says it
    did not exist), puts back the original value of the keys sparkfleet merged into each JSON file in
    O(restore_json), the live kernel settings in O(restore_sysctl) where O(proc_sys) is writable, and
    deletes every path or glob in O(remove) except what O(keep) names.
  - Returns the packages of O(packages) the record says sparkfleet installed, for the caller to remove.
  - Consumed record entries are dropped; with O(drop_record) the record and saved originals go too.
  - Check mode says what would change. A second run finds nothing to do.
options:
  record_file: {type: path, required: true, description: "The record (sparkfleet_install_record_file)."}
  restore: {type: list, elements: path, default: [], description: Recorded files to put back.}
  restore_json: {type: list, elements: path, default: [], description: JSON files whose merged keys to put back.}
  restore_sysctl: {type: bool, default: false, description: Put recorded kernel settings back.}
  proc_sys: {type: path, default: /proc/sys, description: Where live kernel settings are written.}
  remove: {type: list, elements: str, default: [], description: sparkfleet's own paths or globs to delete.}
  keep: {type: list, elements: str, default: [], description: Paths under O(remove) to keep (weights).}
  remove_empty_dirs: {type: list, elements: path, default: [], description: Directories to delete only when empty.}
  packages: {type: list, elements: str, default: [], description: Packages to ask the record about.}
  restore_units:
    type: list
    elements: str
    default: []
    description:
      - Units put back to their recorded enabled and active state, after a daemon-reload; one that was
        running is restarted when files were restored, so it runs on its original configuration.
  drop_record: {type: bool, default: false, description: Delete the record and its saved originals.}
"""

RETURN = r"""
actions: {description: What was (or would be) done, a line each., returned: always, type: list}
notes: {description: What could not be undone here and why (not a change)., returned: always, type: list}
remove_packages: {description: Packages of O(packages) that sparkfleet installed., returned: always, type: list}
"""

import os
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_install_record import (load, originals_dir, remove_created_dirs, remove_paths,
                                                            restore_files, restore_json_keys, restore_sysctl, save,
                                                            unit_plan, unit_state)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            record_file=dict(type="path", required=True),
            restore=dict(type="list", elements="path", default=[]),
            restore_json=dict(type="list", elements="path", default=[]),
            restore_sysctl=dict(type="bool", default=False),
            proc_sys=dict(type="path", default="/proc/sys"),
            remove=dict(type="list", elements="str", default=[]),
            keep=dict(type="list", elements="str", default=[]),
            remove_empty_dirs=dict(type="list", elements="path", default=[]),
            packages=dict(type="list", elements="str", default=[]),
            restore_units=dict(type="list", elements="str", default=[]),
            drop_record=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    record_file = p["record_file"]
    recorded = os.path.exists(record_file)
    record = load(record_file)
    actions, notes = [], []

    file_actions, consumed = restore_files(record, p["restore"], check)
    actions += file_actions
    for path in p["restore_json"]:
        actions += restore_json_keys(record, path, check)
    if p["restore_sysctl"]:
        writable = os.access(os.path.join(p["proc_sys"], "vm"), os.W_OK)
        sysctl_actions, notes = restore_sysctl(record, p["proc_sys"], writable, check)
        actions += sysctl_actions
    remove_packages = sorted(name for name in p["packages"]
                             if not record["packages"].get(name, {"installed_before": True})["installed_before"])

    # An existing record and its originals are kept out of the removal, so that
    # a run that fails halfway can be repeated; they go last, with drop_record.
    protect = [record_file, originals_dir(record_file)] if recorded else []
    actions += remove_paths(p["remove"], list(p["keep"]) + protect, check)

    # After the removals: a unit restarted now runs without sparkfleet's drop-ins.
    files_changed = bool(actions)
    if p["restore_units"] and recorded:
        if files_changed and not check:
            subprocess.run(["systemctl", "daemon-reload"], check=True)
        for unit in p["restore_units"]:
            for verb in unit_plan(record, unit, unit_state(unit), files_changed):
                actions.append("%s %s (as it was before sparkfleet)" % (verb, unit))
                if not check:
                    result = subprocess.run(["systemctl", verb, unit], capture_output=True, text=True)
                    if result.returncode != 0:
                        module.fail_json(msg="systemctl %s %s failed: %s" % (verb, unit, result.stderr.strip()),
                                         actions=actions)
            record["units"].pop(unit, None)

    if recorded and not check:
        for path in consumed:
            record["files"].pop(path, None)
        for path in p["restore_json"]:
            record["json_keys"].pop(path, None)
        if p["restore_sysctl"]:
            record["sysctl"] = {}
        for name in p["packages"]:
            record["packages"].pop(name, None)
        if p["drop_record"]:
            shutil.rmtree(originals_dir(record_file), ignore_errors=True)
            os.remove(record_file)
            actions.append("removed the install record %s" % record_file)
        else:
            save(record_file, record)
    elif recorded and p["drop_record"]:
        actions.append("removed the install record %s" % record_file)
    # Directories left only because they held the record, then the ones the
    # record says sparkfleet created (a parent such as /usr/local/libexec).
    kept = set(p["keep"])
    for path in list(p["remove"]) + list(p["remove_empty_dirs"]):
        if path in kept or not os.path.isdir(path) or os.path.islink(path) or os.listdir(path):
            continue
        actions.append("removed empty directory %s" % path)
        if not check:
            os.rmdir(path)
    if p["drop_record"]:
        actions += remove_created_dirs(record, check)
    # A consumed record entry is bookkeeping, not a host change: only actions count.
    module.exit_json(changed=bool(actions), actions=actions, notes=notes, remove_packages=remove_packages)


if __name__ == "__main__":
    main()
