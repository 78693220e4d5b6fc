#!/usr/bin/env python3
"""Download a checkpoint at a pinned revision and record the hub's manifest.

Runs inside the serving image (which carries huggingface_hub). Writes
<dest>/.sparkfleet/source-manifest.json: {file: {size, sha256}} from the
hub's LFS metadata (hashed locally for the small non-LFS files), last, so
its presence means the download completed.
"""

import argparse
import hashlib
import json
import os

from huggingface_hub import HfApi, snapshot_download


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--dest", required=True)
    args = parser.parse_args()
    snapshot_download(repo_id=args.repo, revision=args.revision, local_dir=args.dest)
    manifest = {}
    for entry in HfApi().list_repo_tree(args.repo, revision=args.revision, recursive=True):
        if not hasattr(entry, "size") or entry.path.startswith("."):
            continue  # folders and dot files
        lfs = getattr(entry, "lfs", None)
        sha = lfs.sha256 if lfs is not None else sha256_file(os.path.join(args.dest, entry.path))
        manifest[entry.path] = {"size": entry.size, "sha256": sha}
    state = os.path.join(args.dest, ".sparkfleet")
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "source-manifest.json.tmp"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, sort_keys=True, indent=1)
    os.replace(os.path.join(state, "source-manifest.json.tmp"), os.path.join(state, "source-manifest.json"))
    print("downloaded %s@%s: %d files" % (args.repo, args.revision, len(manifest)))


if __name__ == "__main__":
    main()
