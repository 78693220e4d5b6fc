# -*- coding: utf-8 -*-
"""Verify a safetensors checkpoint directory against its index and a manifest.

The index (`model.safetensors.index.json`) says which shards must exist. The
manifest ({file: {size, sha256}}) says what each file must be: it comes from
the Hugging Face metadata when the head downloaded the weights, or from the
head's own files when they were seeded by hand (the head is then the
reference). A stamp in `<dir>/.sparkfleet/verified.json` records what was
verified (size and mtime of each file, and the manifest it matched), so the
next run re-hashes only files that changed since; `rehash` forces a full
pass. Hashing 149 GB takes minutes, a stat takes milliseconds.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil

STATE_DIR = ".sparkfleet"
STAMP = "verified.json"
SOURCE_MANIFEST = "source-manifest.json"
# Files a checkpoint directory carries besides the shards (tokenizer, config).
SKIP_SUFFIXES = (".partial", ".lock", ".incomplete")


class WeightsError(Exception):
    """The checkpoint cannot be verified; str() says what is wrong and the fix."""


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_index(directory, index_name):
    """Shard file names listed by the checkpoint's index."""
    path = os.path.join(directory, index_name)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            index = json.load(handle)
    except OSError:
        raise WeightsError("%s has no %s: the checkpoint is missing or incomplete" % (directory, index_name))
    except ValueError as exc:
        raise WeightsError("%s is not valid JSON: %s" % (path, exc))
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError("%s has no weight_map" % path)
    return sorted(set(weight_map.values()))


def list_files(directory):
    """Relative paths of the checkpoint's files (not our state, not partials, not dot files)."""
    found = []
    for base, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.endswith(SKIP_SUFFIXES):
                continue
            found.append(os.path.relpath(os.path.join(base, name), directory))
    return found


def manifest_digest(manifest):
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest()


def _stat(path):
    info = os.stat(path)
    return [info.st_size, info.st_mtime_ns]


def _load_json(path):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True, indent=1)
    os.replace(temporary, path)


def _hash_many(directory, names, workers):
    """{name: sha256}, hashed in parallel (hashlib releases the GIL)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = pool.map(lambda n: sha256_file(os.path.join(directory, n)), names)
        return dict(zip(names, digests))


def verify(directory, index_name, manifest=None, rehash=False, workers=4, write_stamp=True):
    """Check a checkpoint directory.

    manifest None: this node is the reference; its own files become the
    manifest (hashed once, then trusted while their size and mtime hold).
    Returns {manifest, manifest_sha256, bad: {file: reason}, hashed: [..],
    skipped: bool}; `skipped` means nothing needed hashing.
    """
    if not os.path.isdir(directory):
        if manifest is None:
            raise WeightsError("%s does not exist: download or seed the checkpoint on the head first" % directory)
        return {"manifest": manifest, "manifest_sha256": manifest_digest(manifest),
                "bad": {name: "missing" for name in sorted(manifest)}, "hashed": [], "skipped": False}
    stamp_path = os.path.join(directory, STATE_DIR, STAMP)
    stamp = _load_json(stamp_path) or {}
    trusted = {} if rehash else stamp.get("files", {})
    bad = {}

    if manifest is None:
        shards = read_index(directory, index_name)
        present = list_files(directory)
        missing = [s for s in shards if s not in present]
        if missing:
            raise WeightsError("the reference checkpoint in %s lacks shards its index lists: %s; re-download "
                               "or re-seed it on the head" % (directory, ", ".join(missing)))
        stats = {name: _stat(os.path.join(directory, name)) for name in present}
        to_hash = [n for n in present if trusted.get(n, {}).get("stat") != stats[n]]
        hashed = _hash_many(directory, to_hash, workers)
        manifest = {n: {"size": stats[n][0], "sha256": hashed.get(n) or trusted[n]["sha256"]} for n in present}
    else:
        names = sorted(manifest)
        stats = {}
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                bad[name] = "missing"
                continue
            stats[name] = _stat(path)
            if stats[name][0] != manifest[name]["size"]:
                bad[name] = "size %d, expected %d" % (stats[name][0], manifest[name]["size"])
        to_hash = [n for n in stats if n not in bad and not (
            trusted.get(n, {}).get("stat") == stats[n] and trusted[n].get("sha256") == manifest[n].get("sha256"))]
        hashed = _hash_many(directory, to_hash, workers)
        for name, digest in hashed.items():
            if manifest[name].get("sha256") and digest != manifest[name]["sha256"]:
                bad[name] = "sha256 %s, expected %s" % (digest[:12], manifest[name]["sha256"][:12])
        if index_name not in manifest:
            raise WeightsError("the manifest for %s does not list the index %s" % (directory, index_name))
        if index_name not in bad:
            unlisted = [s for s in read_index(directory, index_name) if s not in manifest]
            if unlisted:
                raise WeightsError("the index in %s names shards the manifest lacks: %s"
                                   % (directory, ", ".join(unlisted)))

    digest = manifest_digest(manifest)
    if write_stamp and os.access(directory, os.W_OK):
        files = {n: {"stat": stats[n], "sha256": manifest[n]["sha256"]} for n in stats if n not in bad}
        if files != stamp.get("files") or digest != stamp.get("manifest_sha256"):
            _write_json(stamp_path, {"manifest_sha256": digest, "files": files})
    return {"manifest": manifest, "manifest_sha256": digest, "bad": bad, "hashed": sorted(to_hash),
            "skipped": not to_hash and not bad}


def would_seed(directory, seed_dir):
    """What seed() would copy, without copying."""
    return [name for name in list_files(seed_dir)
            if not (os.path.isfile(os.path.join(directory, name))
                    and os.path.getsize(os.path.join(directory, name)) == os.path.getsize(os.path.join(seed_dir, name)))]


def seed(directory, seed_dir):
    """Copy files missing here (or of another size) from an operator's seed
    directory (NFS mount, USB disk) holding the checkpoint. Returns what it copied."""
    if not os.path.isdir(seed_dir):
        raise WeightsError("seed directory %s does not exist" % seed_dir)
    copied = []
    for name in would_seed(directory, seed_dir):
        source, target = os.path.join(seed_dir, name), os.path.join(directory, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target + ".partial")
        os.replace(target + ".partial", target)
        copied.append(name)
    return copied


def load_source_manifest(directory):
    """The manifest written at download time from the hub's metadata, if any."""
    return _load_json(os.path.join(directory, STATE_DIR, SOURCE_MANIFEST))
