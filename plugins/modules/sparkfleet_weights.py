#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Ansible module: verify a checkpoint directory against its index and manifest."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_weights
short_description: Verify model weights against the checkpoint index and a manifest
description:
  - Checks that every shard the index lists is present, with the manifest's
    size and sha256. Files unchanged since the last verification (same size
    and mtime, recorded in C(<path>/.sparkfleet/verified.json)) are not
    hashed again unless O(rehash) is set.
  - Without O(manifest) the node is the reference (the head) and its files
    become the manifest, from the download's hub metadata when present.
options:
  path: {description: Checkpoint directory., type: path, required: true}
  index: {description: Index file name., type: str, default: model.safetensors.index.json}
  manifest: {description: "Reference manifest {file: {size, sha256}}; omit on the reference node.", type: dict}
  rehash: {description: Hash every file even when its stamp is current., type: bool, default: false}
  workers: {description: Files hashed in parallel., type: int, default: 4}
  seed_dir: {description: Directory to copy missing files from on the reference node., type: path}
author: sparkfleet
"""

RETURN = r"""
manifest: {description: The reference manifest., returned: always, type: dict}
manifest_sha256: {description: Digest of the manifest., returned: always, type: str}
bad: {description: "Files that are missing or differ: {file: reason}.", returned: always, type: dict}
hashed: {description: Files hashed on this run., returned: always, type: list}
skipped: {description: True when nothing needed hashing (the cheap path)., returned: always, type: bool}
seeded: {description: Files copied from seed_dir., returned: always, type: list}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_weights import (
    STAMP, STATE_DIR, WeightsError, load_source_manifest, seed, verify, would_seed)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            index=dict(type="str", default="model.safetensors.index.json"),
            manifest=dict(type="dict"),
            rehash=dict(type="bool", default=False),
            workers=dict(type="int", default=4),
            seed_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    stamp = os.path.join(params["path"], STATE_DIR, STAMP)
    before = open(stamp, "rb").read() if os.path.isfile(stamp) else None
    seeded = []
    try:
        manifest = params["manifest"]
        if manifest is None:
            if params["seed_dir"] and module.check_mode:
                would = would_seed(params["path"], params["seed_dir"])
                if would:
                    # Predict from the seed: what the node will hold once seeded.
                    result = verify(params["seed_dir"], params["index"], None, write_stamp=False)
                    module.exit_json(changed=True, seeded=would, **result)
            elif params["seed_dir"]:
                os.makedirs(params["path"], exist_ok=True)
                seeded = seed(params["path"], params["seed_dir"])
            manifest = load_source_manifest(params["path"])
        result = verify(params["path"], params["index"], manifest, params["rehash"], params["workers"],
                        write_stamp=not module.check_mode)
    except (WeightsError, OSError) as exc:
        module.fail_json(msg="%s: %s" % (params["path"], exc))
    after = open(stamp, "rb").read() if os.path.isfile(stamp) else None
    module.exit_json(changed=bool(seeded) or before != after, seeded=seeded, **result)


if __name__ == "__main__":
    main()
