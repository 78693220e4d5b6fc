#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Ansible module: head -> worker image and file transfer over the fabric."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_peer_transfer
short_description: Stream images and weight files from a pair's head to its worker
description:
  - >-
    O(mode=serve) runs on the head as an async task. It listens on the head's
    fabric address and serves the listed images (C(docker save), compressed on
    the fly) and files to the peer address only, until the peer says done or
    O(idle_timeout) passes.
  - >-
    O(mode=fetch_image) and O(mode=fetch_files) run on the worker. Images go
    straight into C(docker load); files resume from C(.partial) and are
    verified against their size and sha256 before they replace anything.
options:
  mode: {description: Role in the transfer., type: str, required: true, choices: [serve, fetch_image, fetch_files]}
  address: {description: "serve: address to bind; fetch: the head's fabric address.", type: str, required: true}
  port: {description: TCP port., type: int, required: true}
  token: {description: Shared per-run secret., type: str, required: true, no_log: true}
  peer: {description: "serve: the only client address accepted.", type: str}
  images: {description: "serve: image references offered; fetch_image: the ones to fetch.", type: list, elements: str, default: []}
  expect_image_id: {description: "fetch_image: the image ID the head holds; checked after load.", type: str}
  root: {description: Checkpoint directory (both sides)., type: path}
  files: {description: "serve: relative paths offered; fetch_files: {path, size, sha256} to fetch.", type: list, elements: raw, default: []}
  idle_timeout: {description: "serve: seconds to wait for a request.", type: int, default: 300}
  compression: {description: Preferred compression for images., type: str, default: auto, choices: [auto, zstd, gzip, none]}
  progress_file:
    description: "fetch modes: write bytes moved, total and rate here (JSON) as the transfer goes, for a watcher."
    type: path
  progress_run: {description: "The run id written into O(progress_file), so a watcher knows its own run.", type: str, default: ""}
  progress_label: {description: "What the progress line calls this transfer.", type: str, default: transfer}
author: sparkfleet
"""

RETURN = r"""
transfers: {description: Per image or file, bytes moved and seconds., returned: fetch modes, type: list}
wire_bytes: {description: Bytes received in total., returned: fetch modes, type: int}
served: {description: What the server sent., returned: serve, type: list}
"""

import json
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sparkfleet_job_progress import ProgressFile
from ansible.module_utils.sparkfleet_transfer import (
    Server, TransferError, fetch_file, fetch_image, finish, local_compressions, resume_offset)


def image_id(module, ref):
    result = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Id}}", ref],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else ""


def fetch_files(p, transfers, progress):
    """Fetch p["files"] in turn; the progress counts bytes to move (resumed prefixes excluded)."""
    items = [dict(item, size=int(item["size"])) for item in p["files"]]
    to_move = [item["size"] - resume_offset(p["root"], item["path"], item["size"]) for item in items]
    progress.update(force=True, total_bytes=sum(to_move), bytes=0, files_total=len(items), files_done=0)
    moved = 0
    for number, item in enumerate(items, 1):
        def count(received, base=moved):
            progress.update(bytes=base + received)
        transfers.append(fetch_file(p["address"], p["port"], p["token"], item["path"], p["root"],
                                    item["size"], item.get("sha256"), progress=count))
        moved += transfers[-1]["bytes"]
        progress.update(force=True, bytes=moved, files_done=number)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type="str", required=True, choices=["serve", "fetch_image", "fetch_files"]),
            address=dict(type="str", required=True),
            port=dict(type="int", required=True),
            token=dict(type="str", required=True, no_log=True),
            peer=dict(type="str"),
            images=dict(type="list", elements="str", default=[]),
            expect_image_id=dict(type="str"),
            root=dict(type="path"),
            files=dict(type="list", elements="raw", default=[]),
            idle_timeout=dict(type="int", default=300),
            compression=dict(type="str", default="auto", choices=["auto", "zstd", "gzip", "none"]),
            progress_file=dict(type="path"),
            progress_run=dict(type="str", default=""),
            progress_label=dict(type="str", default="transfer"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if module.check_mode:
        module.exit_json(changed=p["mode"] != "serve" and bool(p["images"] or p["files"]))
    try:
        if p["mode"] == "serve":
            server = Server(p["address"], p["port"], p["token"], p["peer"], images=p["images"],
                            files_root=p["root"], files=[str(f) for f in p["files"]],
                            idle_timeout=p["idle_timeout"], compressions=local_compressions(p["compression"]))
            module.exit_json(changed=False, **server.run())
        transfers = []
        progress = ProgressFile(p["progress_file"], p["progress_run"], p["mode"], p["progress_label"])
        try:
            if p["mode"] == "fetch_image":
                for ref in p["images"]:
                    transfers.append(fetch_image(p["address"], p["port"], p["token"], ref, prefer=p["compression"],
                                                 progress=progress.update))
                    if p["expect_image_id"] and image_id(module, ref) != p["expect_image_id"]:
                        progress.finish(False)
                        module.fail_json(msg="%s loaded as %s, the head holds %s" % (
                            ref, image_id(module, ref), p["expect_image_id"]), transfers=transfers)
            else:
                fetch_files(p, transfers, progress)
            progress.finish(True)
        except BaseException:
            progress.finish(False)
            raise
        finally:
            try:
                finish(p["address"], p["port"], p["token"])
            except TransferError:
                pass  # the sender is gone already; its idle timeout ends it otherwise
    except (TransferError, OSError, ValueError) as exc:
        module.fail_json(msg="transfer %s with %s:%d: %s" % (p["mode"], p["address"], p["port"], exc))
    module.exit_json(changed=bool(transfers), transfers=transfers,
                     wire_bytes=sum(t.get("wire_bytes", t.get("bytes", 0)) for t in transfers))


if __name__ == "__main__":
    main()
