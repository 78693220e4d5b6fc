#!/usr/bin/env python3
"""Download a checkpoint at a pinned revision and record the hub's manifest.

Runs inside the serving image (which carries huggingface_hub). Writes
<dest>/.sparkfleet/source-manifest.json: {file: {size, sha256}} from the
hub's LFS metadata (hashed locally for the small non-LFS files), last, so
its presence means the download completed.

With --progress-file, the bytes on disk against the hub's total are written
there every few seconds (sparkfleet_job_progress.py, mounted beside this
script), for the play's progress lines.
"""

import argparse
import hashlib
import json
import os
import sys
import threading

from huggingface_hub import HfApi, snapshot_download

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparkfleet_job_progress import ProgressFile  # noqa: E402  (beside this script)

POLL_S = 2.0


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bytes_on_disk(dest):
    """Bytes under dest, the hub client's partial downloads (.cache/huggingface) included."""
    total = 0
    for folder, _dirs, files in os.walk(dest):
        if os.path.relpath(folder, dest).split(os.sep)[0] == ".sparkfleet":
            continue
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass  # renamed from .incomplete to its final name meanwhile
    return total


def files_complete(dest, files):
    return sum(1 for entry in files
               if os.path.exists(os.path.join(dest, entry.path)) and os.path.getsize(os.path.join(dest, entry.path)) == entry.size)


def record(dest, files, progress, at_start, **fields):
    progress.update(force=True, bytes=max(bytes_on_disk(dest) - at_start, 0), files_done=files_complete(dest, files),
                    **fields)


def watch(dest, files, progress, at_start, stop):
    """Write the progress every POLL_S seconds until `stop` is set."""
    while not stop.wait(POLL_S):
        record(dest, files, progress, at_start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--progress-file")
    parser.add_argument("--progress-run", default="")
    args = parser.parse_args()
    files = [entry for entry in HfApi().list_repo_tree(args.repo, revision=args.revision, recursive=True)
             if hasattr(entry, "size") and not entry.path.startswith(".")]  # no folders, no dot files
    progress = ProgressFile(args.progress_file, args.progress_run, "download",
                            "download of %s@%s" % (args.repo, args.revision[:12]))
    # Bytes already on disk (an interrupted download resumes) are not counted as moved.
    at_start = bytes_on_disk(args.dest)
    progress.update(force=True, total_bytes=max(sum(entry.size for entry in files) - at_start, 0), files_total=len(files))
    record(args.dest, files, progress, at_start)
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(args.dest, files, progress, at_start, stop), daemon=True)
    watcher.start()
    ok = False
    try:
        snapshot_download(repo_id=args.repo, revision=args.revision, local_dir=args.dest)
        manifest = {}
        for entry in files:
            lfs = getattr(entry, "lfs", None)
            sha = lfs.sha256 if lfs is not None else sha256_file(os.path.join(args.dest, entry.path))
            manifest[entry.path] = {"size": entry.size, "sha256": sha}
        state = os.path.join(args.dest, ".sparkfleet")
        os.makedirs(state, exist_ok=True)
        with open(os.path.join(state, "source-manifest.json.tmp"), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, sort_keys=True, indent=1)
        os.replace(os.path.join(state, "source-manifest.json.tmp"), os.path.join(state, "source-manifest.json"))
        ok = True
    finally:
        stop.set()
        watcher.join()
        record(args.dest, files, progress, at_start, finished=True, ok=ok)
    print("downloaded %s@%s: %d files" % (args.repo, args.revision, len(manifest)))


if __name__ == "__main__":
    main()
