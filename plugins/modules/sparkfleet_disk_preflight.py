#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: refuse a build or transfer, with numbers, when the disk cannot hold it."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_disk_preflight
short_description: Check a filesystem can hold what is about to be written, keeping a reserve free
description:
  - Fails, naming the free space, the need, the reserve and the shortfall, when the filesystem of
    O(path) (or of Docker's root directory with O(docker_root)) has less than O(need_bytes) plus
    O(reserve_bytes) available. Changes nothing.
options:
  path: {type: path, description: A directory on the filesystem to check (its nearest existing parent counts).}
  docker_root: {type: bool, default: false, description: "Check Docker's root directory (docker info) instead of O(path)."}
  need_bytes: {type: int, required: true, description: Bytes about to be written.}
  reserve_bytes: {type: int, default: 0, description: Bytes that must stay free afterwards.}
  what: {type: str, required: true, description: What needs the space, for the message.}
  node_name: {type: str, description: Host name used in the message.}
"""

RETURN = r"""
path: {description: The directory checked., returned: always, type: str}
free_bytes: {description: Bytes available there., returned: always, type: int}
"""

import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_disk import existing_dir, free_bytes, verdict


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path"),
            docker_root=dict(type="bool", default=False),
            need_bytes=dict(type="int", required=True),
            reserve_bytes=dict(type="int", default=0),
            what=dict(type="str", required=True),
            node_name=dict(type="str"),
        ),
        required_one_of=[["path", "docker_root"]],
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"]
    if p["docker_root"]:
        out = subprocess.run(["docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True,
                             check=False)
        path = out.stdout.strip() or "/var/lib/docker"
    path = existing_dir(path)
    free = free_bytes(path)
    refusal = verdict(p["node_name"] or "this node", path, free, p["need_bytes"], p["reserve_bytes"], p["what"])
    if refusal:
        module.fail_json(msg=refusal, path=path, free_bytes=free)
    module.exit_json(changed=False, path=path, free_bytes=free)


if __name__ == "__main__":
    main()
