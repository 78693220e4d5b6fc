#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: collect a node's diagnostic bundle and match known failure signatures."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_doctor
short_description: Collect a node's diagnostic bundle (secrets redacted) and name known failures with their fix
description:
  - Collects unit journals since boot, the serving containers' state, sparkfleet's rendered files, sysctl
    and limits in force, memory, RDMA devices and the GID table, links and MTU, C(nvidia-smi -q), kernel
    lines with Xid/NVRM/GSP or the OOM killer and the serving images' provenance into a tar.gz at O(archive).
  - Redacts secrets (the values in O(secrets), and anything named like a key, token or password).
  - A program that is missing is listed in C(missing), not fatal.
  - Matches the collected text against known failure signatures and returns each found with its fix.
  - Writes only O(archive) (the play fetches and removes it); never changes the node's configuration.
options:
  archive: {type: path, required: true, description: Where to write the bundle on the node.}
  secrets: {type: list, elements: str, default: [], no_log: true, description: Values that must not appear in the bundle.}
  timeout: {type: int, default: 30, description: Seconds per command.}
  serving_units: {type: dict, required: true, description: "The serving units by role (sparkfleet_units); each container is named as its unit."}
  state_files: {type: list, elements: path, default: [], description: "sparkfleet's state records on the node (gate, last known good, start times), copied when present."}
"""

RETURN = r"""
signatures: {description: "Known failures found: key, meaning, fix, file, evidence.", returned: always, type: list}
missing: {description: Programs not on this node., returned: always, type: list}
files: {description: The bundle's file names., returned: always, type: list}
"""

import glob
import io
import json
import os
import subprocess
import tarfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_doctor import (
    FILES, commands, gid_table, kernel_lines, match_signatures, redact, units)


def run(argv, timeout):
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        return "sparkfleet doctor: `%s` timed out after %d s\n" % (" ".join(argv), timeout)
    return result.stdout + (("\n--- stderr (exit %d)\n%s" % (result.returncode, result.stderr)) if result.stderr else "")


def collect(timeout, serving_units, state_files=()):
    texts, missing = {}, []
    for name, argv in commands(serving_units):
        out = run(argv, timeout)
        if out is None:
            missing.append(argv[0])
            continue
        texts[name] = out
    for unit in units(serving_units):
        out = run(["journalctl", "--unit", unit, "--boot", "--no-pager", "--output", "short-iso"], timeout)
        if out is None:
            missing.append("journalctl")
            break
        texts["journal-%s.txt" % unit] = out
    kernel = run(["journalctl", "--dmesg", "--boot", "--no-pager", "--output", "short-iso"], timeout)
    texts["kernel.txt"] = "\n".join(kernel_lines(kernel or "")) + "\n"
    texts["rdma-gids.txt"] = "\n".join(gid_table()) + "\n"
    for pattern in FILES + tuple(state_files):
        for path in sorted(glob.glob(pattern)):
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    texts["files" + path.replace(os.sep, "_")] = handle.read()
            except OSError as exc:
                texts["files" + path.replace(os.sep, "_")] = "unreadable: %s\n" % exc
    for image in launch_images():
        out = run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image], timeout)
        if out:
            texts.setdefault("image-provenance.txt", "")
            texts["image-provenance.txt"] += "%s %s" % (image, out)
    return texts, sorted(set(missing))


def launch_images(config_dir="/etc/sparkfleet"):
    """The image IDs the launch files name (what the units run)."""
    images = set()
    for path in glob.glob(os.path.join(config_dir, "*.json")):
        try:
            with open(path, encoding="utf-8") as handle:
                images.add(json.load(handle).get("image_id") or "")
        except (OSError, ValueError, AttributeError):
            continue
    return sorted(image for image in images if image)


def write_archive(path, texts, secrets):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stamp = time.time()
    with tarfile.open(path + ".tmp", "w:gz") as bundle:
        for name in sorted(texts):
            data = redact(texts[name], secrets).encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), stamp, 0o600
            bundle.addfile(info, io.BytesIO(data))
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type="path", required=True),
            secrets=dict(type="list", elements="str", default=[], no_log=True),
            timeout=dict(type="int", default=30),
            serving_units=dict(type="dict", required=True),
            state_files=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    texts, missing = collect(p["timeout"], p["serving_units"], p["state_files"])
    signatures = match_signatures(texts)
    for found in signatures:
        found["evidence"] = redact(found["evidence"], p["secrets"])
    if not module.check_mode:
        write_archive(p["archive"], texts, p["secrets"])
    # The bundle is a report, written to a scratch path the play removes: not a change to the node.
    module.exit_json(changed=False, signatures=signatures, missing=missing, files=sorted(texts))


if __name__ == "__main__":
    main()
