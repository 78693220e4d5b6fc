#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: several files and directories in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_files
short_description: Write several files and directories on a node in one call
description:
  - Creates or fixes each directory in O(directories), then writes each file in O(files) in the
    order given. One module call instead of one per file, because a rolling restart pays for
    each call on its serial path.
  - Each file is compared first and left alone when its content, mode, owner and group match,
    so a second run reports no change. A changed file is written to a temporary file in the
    same directory, checked by its C(validate) command (C(%s) is the candidate) and renamed over
    the old one; a refused candidate is removed and the module fails, naming the file and
    quoting the validator.
  - Check mode reports what would change and writes nothing; with --diff each changed file
    shows its before and after (not for files marked C(secret)).
options:
  directories:
    type: list
    elements: dict
    default: []
    description: Each with C(path), and C(mode) (default C(0755)), C(owner), C(group) (default root).
  files:
    type: list
    elements: dict
    default: []
    description:
      - Each with C(path) and either C(content) (text) or C(src) (a file on this node to copy);
        C(mode) (default C(0644)), C(owner), C(group) (default root), C(validate) (a command
        with C(%s)) and C(secret) (no diff).
  secret_files:
    type: list
    elements: dict
    default: []
    description:
      - Like O(files), written before them (a later file's validator may need them), never diffed, and masked in Ansible's output and logs
        (no_log on this option), so a task can carry a file holding a key without no_log.
  absent:
    type: list
    elements: path
    default: []
    description: Files to remove (a rotation's second key once the rotation is over).
"""

RETURN = r"""
touched: {description: The directories and files written, fixed or removed (or that would be)., returned: always, type: list}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_files import FilesError, ensure_all


def main():
    module = AnsibleModule(
        argument_spec=dict(
            directories=dict(type="list", elements="dict", default=[]),
            files=dict(type="list", elements="dict", default=[]),
            secret_files=dict(type="list", elements="dict", default=[], no_log=True),
            absent=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    secrets = [dict(spec, secret=True) for spec in module.params["secret_files"]]
    for spec in module.params["directories"] + module.params["files"] + secrets:
        if not spec.get("path"):
            module.fail_json(msg="every directory and file needs a path: %r" % sorted(spec))
    try:
        changed, diffs = ensure_all(module.params["directories"], secrets + module.params["files"],
                                    module.check_mode, absent=module.params["absent"])
    except FilesError as exc:
        module.fail_json(msg=str(exc))
    result = dict(changed=bool(changed), touched=changed)
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
