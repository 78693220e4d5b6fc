#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: remove old serving images and build contexts, keeping what can be served or rolled back to."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_image_prune
short_description: Prune old serving images and their build contexts on a node
description:
  - Keeps the images in O(keep_ids) (the one the unit runs and the last-known-good one) and the
    newest O(keep_others) other images of O(repository); removes the rest (C(docker image rm),
    never forced, so an image a container still uses stays) and the build contexts under
    O(build_dir) whose tag is no longer kept.
  - Check mode reports what would go.
options:
  repository: {type: str, required: true, description: The serving image repository.}
  keep_ids: {type: list, elements: str, default: [], description: Image IDs that must stay.}
  keep_others: {type: int, default: 2, description: Other images to keep, newest first.}
  build_dir: {type: path, description: Where the build contexts are (one directory per tag).}
"""

RETURN = r"""
kept: {description: Image references kept., returned: always, type: list}
removed: {description: Image references removed (or that would be)., returned: always, type: list}
removed_contexts: {description: Build contexts removed (or that would be)., returned: always, type: list}
refused: {description: Images docker would not remove (in use), with its reason., returned: always, type: list}
"""

import os
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_prune import plan


def list_images(repository):
    out = subprocess.run(["docker", "image", "ls", "--no-trunc", "--format",
                          "{{.ID}}\t{{.Repository}}:{{.Tag}}\t{{.CreatedAt}}", repository],
                         capture_output=True, text=True, check=True).stdout
    images = []
    for line in out.splitlines():
        image_id, ref, created = line.split("\t")
        if not ref.endswith(":<none>"):
            images.append({"id": image_id, "ref": ref, "created": created})
    return images


def main():
    module = AnsibleModule(
        argument_spec=dict(
            repository=dict(type="str", required=True),
            keep_ids=dict(type="list", elements="str", default=[]),
            keep_others=dict(type="int", default=2),
            build_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        images = list_images(p["repository"])
    except (OSError, subprocess.CalledProcessError) as exc:
        module.fail_json(msg="cannot list the images of %s: %s" % (p["repository"], exc))
    contexts = sorted(os.listdir(p["build_dir"])) if p["build_dir"] and os.path.isdir(p["build_dir"]) else []
    decided = plan(images, p["keep_ids"], p["keep_others"], contexts)
    removed, refused = [], []
    for ref in decided["remove"]:
        if module.check_mode:
            removed.append(ref)
            continue
        result = subprocess.run(["docker", "image", "rm", ref], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            removed.append(ref)
        else:
            refused.append("%s: %s" % (ref, result.stderr.strip()))
    for name in decided["remove_contexts"]:
        if not module.check_mode:
            shutil.rmtree(os.path.join(p["build_dir"], name), ignore_errors=True)
    module.exit_json(changed=bool(removed or decided["remove_contexts"]), kept=decided["keep"], removed=removed,
                     removed_contexts=decided["remove_contexts"], refused=refused)


if __name__ == "__main__":
    main()
