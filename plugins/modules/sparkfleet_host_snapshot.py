#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: a fingerprint of a host's files, enabled units and packages, and its differences from an earlier one."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_host_snapshot
short_description: Fingerprint a host's configuration and compare it with an earlier fingerprint
description:
  - Records, for every file, link and directory under O(roots) (except O(exclude) globs), its type, mode,
    owner and content hash (a link's target), the enabled systemd unit files and the installed packages.
  - With O(compare_to) (an earlier result's C(snapshot)) it returns what differs, a line each. Used to
    prove that C(playbooks/uninstall.yml) puts a host back as it was; read-only, never changes anything.
options:
  roots: {type: list, elements: path, required: true, description: Directories to walk.}
  exclude: {type: list, elements: str, default: [], description: Path globs left out (files the platform rewrites).}
  sysctl: {type: list, elements: str, default: [], description: Kernel settings to include.}
  compare_to: {type: dict, description: An earlier C(snapshot) to compare with.}
"""

RETURN = r"""
snapshot: {description: The fingerprint., returned: always, type: dict}
differences: {description: What differs from O(compare_to), a line each., returned: when compare_to is given, type: list}
"""

import fnmatch
import hashlib
import os
import subprocess

from ansible.module_utils.basic import AnsibleModule


def fingerprint(path):
    st = os.lstat(path)
    owner = "%o %d:%d" % (st.st_mode & 0o7777, st.st_uid, st.st_gid)
    if os.path.islink(path):
        return "link -> %s" % os.readlink(path)
    if os.path.isdir(path):
        return "dir %s" % owner
    if not os.path.isfile(path):
        return "special %s" % owner
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "file %s %s" % (owner, digest.hexdigest()[:16])


def walk(roots, exclude):
    files = {}
    for root in roots:
        if not os.path.lexists(root):
            continue
        for top, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(os.path.join(top, d), e) for e in exclude)]
            for name in [""] + dirs + names:
                path = os.path.join(top, name) if name else top
                if name in dirs and not os.path.islink(path):
                    continue  # walked (and recorded) as its own top
                if any(fnmatch.fnmatch(path, e) for e in exclude):
                    continue
                try:
                    files[path] = fingerprint(path)
                except OSError as err:
                    files[path] = "unreadable %s" % err.strerror
    return files


def command_lines(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def compare(before, after):
    lines = []
    for section in ("files", "sysctl"):
        old, new = before.get(section, {}), after.get(section, {})
        for key in sorted(set(old) | set(new)):
            if key not in new:
                lines.append("%s is gone (was %s)" % (key, old[key]))
            elif key not in old:
                lines.append("%s is new (%s)" % (key, new[key]))
            elif old[key] != new[key]:
                lines.append("%s changed: %s -> %s" % (key, old[key], new[key]))
    for section, what in (("units_enabled", "enabled unit"), ("packages", "package")):
        old, new = set(before.get(section, [])), set(after.get(section, []))
        lines += ["%s %s is new" % (what, x) for x in sorted(new - old)]
        lines += ["%s %s is gone" % (what, x) for x in sorted(old - new)]
    return lines


def main():
    module = AnsibleModule(
        argument_spec=dict(
            roots=dict(type="list", elements="path", required=True),
            exclude=dict(type="list", elements="str", default=[]),
            sysctl=dict(type="list", elements="str", default=[]),
            compare_to=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    sysctl = {}
    for key in p["sysctl"]:
        try:
            with open("/proc/sys/" + key.replace(".", "/"), encoding="utf-8") as handle:
                sysctl[key] = " ".join(handle.read().split())
        except OSError:
            sysctl[key] = None
    snapshot = {
        "files": walk(p["roots"], p["exclude"]),
        "sysctl": sysctl,
        "units_enabled": [line.split()[0] for line in command_lines(
            ["systemctl", "list-unit-files", "--state=enabled", "--no-legend", "--no-pager"])],
        "packages": command_lines(["dpkg-query", "-W", "-f=${binary:Package}\\n"]),
    }
    result = {"changed": False, "snapshot": snapshot}
    if p["compare_to"] is not None:
        result["differences"] = compare(p["compare_to"], snapshot)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
