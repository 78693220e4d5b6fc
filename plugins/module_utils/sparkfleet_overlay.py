#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""The sparkfleet overlay: replacement files and patches for the vLLM tree.

A manifest lists entries (name, kind, target path, the vLLM releases it was
written for, why, invariants). Applying is idempotent by construction: every
hunk of a patch is looked for in its patched form first, so an already-applied
patch is detected and skipped; a hunk that is neither present nor applicable
fails naming the entry, the patch file and the hunk; the invariants are
checked after every apply. Re-applying the mxfp4 cleanup by hand duplicated its
`del ...; empty_cache()` block and broke model load with an UnboundLocalError;
here that cannot happen silently.

This file is a module_utils library (pure stdlib, unit tested), the CLI the
image build runs inside the image (``python3 sparkfleet_overlay.py apply``),
and the describe step the controller uses to derive the image tag.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys

KINDS = ("patch", "file")
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class OverlayError(Exception):
    """The overlay cannot be applied; str() names the entry, file and hunk."""


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- manifest

# A release as vLLM spells it: "0.33.0", "0.33.0rc1", "0.33.0.post1",
# "0.33.0+cu130". Written as a string in YAML (unquoted 0.33 is a float).
_RELEASE = re.compile(r"^[0-9]+(?:\.[0-9]+)+[A-Za-z0-9]*(?:[._+-][A-Za-z0-9]+)*$")


def _release_problems(label, entry):
    """Problems with an entry's optional 'releases' list (the vLLM releases it is for)."""
    if "releases" not in entry:
        return []
    releases = entry["releases"]
    if not isinstance(releases, list) or not releases:
        return ["%s: 'releases' must be a non-empty list of vLLM versions such as \"0.33.0\"" % label]
    problems = []
    for value in releases:
        if not isinstance(value, str):
            problems.append("%s: 'releases' entry %r is not a string (quote versions in YAML)" % (label, value))
        elif not _RELEASE.match(value):
            problems.append("%s: 'releases' entry %r is not a vLLM version such as \"0.33.0\"" % (label, value))
    strings = [v for v in releases if isinstance(v, str)]
    if len(set(strings)) != len(strings):
        problems.append("%s: 'releases' lists a version twice" % label)
    return problems


def validate_manifest(manifest, overlay_dir=None):
    """Problems with a manifest dict, as a list of sentences (empty = valid)."""
    problems = []
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), list):
        return ["the overlay manifest needs an 'entries' list"]
    names = set()
    for position, entry in enumerate(manifest["entries"], 1):
        label = "entry %d" % position
        if not isinstance(entry, dict):
            problems.append("%s is not a mapping" % label)
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not re.match(r"^[a-z0-9][a-z0-9._-]*$", name or ""):
            problems.append("%s: 'name' must be lower-case letters, digits, '.', '_' or '-'" % label)
        else:
            label = "entry '%s'" % name
            if name in names:
                problems.append("%s appears twice" % label)
            names.add(name)
        if entry.get("kind") not in KINDS:
            problems.append("%s: 'kind' must be one of %s" % (label, ", ".join(KINDS)))
        for key in ("source", "target", "why"):
            if not isinstance(entry.get(key), str) or not entry.get(key).strip():
                problems.append("%s: '%s' is required" % (label, key))
        for key in ("source", "target"):
            value = entry.get(key)
            if isinstance(value, str) and (value.startswith("/") or ".." in value.split("/")):
                problems.append("%s: '%s' must be a relative path inside the tree" % (label, key))
        replaces = entry.get("replaces_sha256", [])
        if not isinstance(replaces, list) or not all(isinstance(v, str) and re.match(r"^[0-9a-f]{64}$", v)
                                                     for v in replaces):
            problems.append("%s: 'replaces_sha256' must be a list of sha256 hex digests" % label)
        problems += _release_problems(label, entry)
        invariants = entry.get("invariants", [])
        if not isinstance(invariants, list):
            problems.append("%s: 'invariants' must be a list" % label)
            invariants = []
        for number, invariant in enumerate(invariants, 1):
            where = "%s invariant %d" % (label, number)
            if not isinstance(invariant, dict):
                problems.append("%s is not a mapping" % where)
                continue
            if not isinstance(invariant.get("literal"), str) or not invariant.get("literal"):
                problems.append("%s: 'literal' (the text to count) is required" % where)
            if not isinstance(invariant.get("count"), int) or isinstance(invariant.get("count"), bool) \
                    or invariant.get("count") < 0:
                problems.append("%s: 'count' must be a whole number >= 0" % where)
            path = invariant.get("path", entry.get("target"))
            if not isinstance(path, str) or path.startswith("/") or ".." in path.split("/"):
                problems.append("%s: 'path' must be a relative path inside the tree" % where)
        if overlay_dir and isinstance(entry.get("source"), str):
            source = os.path.join(overlay_dir, entry["source"])
            if not os.path.isfile(source):
                problems.append("%s: source %s does not exist" % (label, source))
            elif entry.get("kind") == "patch":
                try:
                    with open(source, "r", encoding="utf-8") as handle:
                        parse_patch(handle.read(), entry["source"])
                except OverlayError as exc:
                    problems.append(str(exc))
    return problems


def describe(manifest, overlay_dir):
    """Content hashes of the manifest and each entry's source.

    The manifest hash covers the entries and every source's bytes, so it
    changes when anything that could change the image changes.
    """
    problems = validate_manifest(manifest, overlay_dir)
    if problems:
        raise OverlayError("overlay manifest in %s: %s" % (overlay_dir, "; ".join(problems)))
    entries = []
    for entry in manifest["entries"]:
        entries.append({"name": entry["name"], "kind": entry["kind"], "target": entry["target"],
                        "sha256": sha256_file(os.path.join(overlay_dir, entry["source"]))})
    canonical = json.dumps({"entries": manifest["entries"], "sources": entries}, sort_keys=True,
                           separators=(",", ":"))
    return {"manifest_sha256": sha256_bytes(canonical.encode("utf-8")), "entries": entries}


# ---------------------------------------------------------------- patches

class Hunk(object):
    def __init__(self, number, header, old_start, old_lines, new_lines):
        self.number = number
        self.header = header
        self.old_start = old_start
        self.old_lines = old_lines
        self.new_lines = new_lines

    def describe(self):
        return "hunk %d (%s)" % (self.number, self.header)


def parse_patch(text, name="patch"):
    """A single-file unified diff -> (target path from +++ line, [Hunk])."""
    lines = text.splitlines(True)
    target = None
    hunks = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("+++ "):
            if target is not None:
                raise OverlayError("%s: one patch file must change one file" % name)
            target = line[4:].strip().split("\t")[0]
            if target.startswith("b/"):
                target = target[2:]
            index += 1
            continue
        match = _HUNK_HEADER.match(line)
        if not match:
            index += 1
            continue
        old_count = int(match.group(2)) if match.group(2) is not None else 1
        new_count = int(match.group(4)) if match.group(4) is not None else 1
        old, new = [], []
        index += 1
        while index < len(lines) and (len(old) < old_count or len(new) < new_count):
            body = lines[index]
            tag, content = body[:1], body[1:]
            if body.startswith("\\"):
                index += 1
                continue
            if tag == " " or body in ("\n", "\r\n"):
                content = content if tag == " " else body
                old.append(content)
                new.append(content)
            elif tag == "-":
                old.append(content)
            elif tag == "+":
                new.append(content)
            else:
                break
            index += 1
        if len(old) != old_count or len(new) != new_count:
            raise OverlayError("%s: hunk %d (%s) is truncated: expected %d old / %d new lines, read %d / %d"
                               % (name, len(hunks) + 1, line.strip(), old_count, new_count, len(old), len(new)))
        hunks.append(Hunk(len(hunks) + 1, line.strip(), int(match.group(1)), old, new))
    if target is None or not hunks:
        raise OverlayError("%s: not a unified diff (needs a '+++' line and at least one hunk)" % name)
    return target, hunks


def _find(lines, block, near):
    """Start index of `block` in `lines` closest to `near`, or None."""
    if not block:
        return None
    found = [start for start in range(len(lines) - len(block) + 1) if lines[start:start + len(block)] == block]
    if not found:
        return None
    return min(found, key=lambda start: abs(start - near))


find_block = _find


def patch_state(text, hunks):
    """For each hunk: 'present' (patched form found), 'applicable' or 'conflict'."""
    lines = text.splitlines(True)
    states = []
    for hunk in hunks:
        if _find(lines, hunk.new_lines, hunk.old_start - 1) is not None:
            states.append("present")
        elif _find(lines, hunk.old_lines, hunk.old_start - 1) is not None:
            states.append("applicable")
        else:
            states.append("conflict")
    return states


def apply_hunks(text, hunks):
    lines = text.splitlines(True)
    shift = 0
    for hunk in hunks:
        start = _find(lines, hunk.old_lines, hunk.old_start - 1 + shift)
        lines[start:start + len(hunk.old_lines)] = hunk.new_lines
        shift += len(hunk.new_lines) - len(hunk.old_lines)
    return "".join(lines)


def _first_lines(block, count=3):
    return "".join("    | " + line for line in block[:count]).rstrip("\n")


# ---------------------------------------------------------------- apply

def check_invariants(entry, root, only_excess=False):
    """Broken invariants of one entry, as sentences.

    With only_excess, only literals found more often than allowed are reported
    (what a conflicting, not yet patched file can tell about a duplicated block).
    """
    broken = []
    for invariant in entry.get("invariants", []):
        path = invariant.get("path", entry["target"])
        full = os.path.join(root, path)
        if not os.path.isfile(full):
            if not only_excess:
                broken.append("%s: invariant on %s: the file does not exist" % (entry["name"], path))
            continue
        with open(full, "r", encoding="utf-8") as handle:
            found = handle.read().count(invariant["literal"])
        if found > invariant["count"] or (found != invariant["count"] and not only_excess):
            broken.append("%s: `%s` occurs %d times in %s, must be exactly %d%s"
                          % (entry["name"], invariant["literal"].replace("\n", "\\n"), found, path,
                             invariant["count"],
                             (" (%s)" % invariant["reason"]) if invariant.get("reason") else ""))
    return broken


def apply_entry(entry, overlay_dir, root, dry_run=False):
    """Apply one entry; returns 'applied' or 'already-present'. Raises OverlayError."""
    source = os.path.join(overlay_dir, entry["source"])
    target = os.path.join(root, entry["target"])
    if not os.path.isfile(target) and entry["kind"] == "patch":
        raise OverlayError("%s: target %s does not exist under %s (does the vLLM ref match the overlay?)"
                           % (entry["name"], entry["target"], root))
    if entry["kind"] == "file":
        wanted = sha256_file(source)
        if os.path.isfile(target):
            current = sha256_file(target)
            if current == wanted:
                return "already-present"
            replaces = entry.get("replaces_sha256", [])
            if replaces and current not in replaces:
                raise OverlayError("%s: %s has sha256 %s, which is neither the overlay's version nor one it "
                                   "is meant to replace (%s): upstream changed the file; review and update "
                                   "the entry" % (entry["name"], entry["target"], current, ", ".join(replaces)))
        if not dry_run:
            with open(source, "rb") as handle:
                data = handle.read()
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(data)
        return "applied"
    with open(source, "r", encoding="utf-8") as handle:
        _, hunks = parse_patch(handle.read(), entry["source"])
    with open(target, "r", encoding="utf-8") as handle:
        text = handle.read()
    states = patch_state(text, hunks)
    if all(state == "present" for state in states):
        return "already-present"
    for hunk, state in zip(hunks, states):
        if state == "conflict":
            broken = check_invariants(entry, root, only_excess=True)
            releases = entry.get("releases")
            raise OverlayError(
                "%s: %s %s neither applies to %s nor is already present; expected near line %d:\n%s%s%s"
                % (entry["name"], entry["source"], hunk.describe(), entry["target"], hunk.old_start,
                   _first_lines(hunk.old_lines),
                   ("\nthe file already breaks this entry's invariants: " + "; ".join(broken)) if broken else "",
                   ("\nthe entry was written for vLLM %s: on another release port it (files/overlay/README.md)"
                    % ", ".join(releases)) if releases else ""))
    if "present" in states:
        raise OverlayError("%s: %s is partly applied to %s (present: %s; missing: %s): restore the file "
                           "from the base image before applying"
                           % (entry["name"], entry["source"], entry["target"],
                              ", ".join(h.describe() for h, s in zip(hunks, states) if s == "present"),
                              ", ".join(h.describe() for h, s in zip(hunks, states) if s != "present")))
    if not dry_run:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(apply_hunks(text, hunks))
    return "applied"


def apply_overlay(manifest, overlay_dir, root, dry_run=False):
    """Apply every entry in order, then check every invariant.

    Returns {'entries': [{name, result}], 'changed': [names]}. Raises
    OverlayError naming the entry, file and hunk, or the broken invariants.
    In dry-run mode nothing is written and invariants are not checked for
    entries that would change.
    """
    problems = validate_manifest(manifest, overlay_dir)
    if problems:
        raise OverlayError("overlay manifest: " + "; ".join(problems))
    results = []
    for entry in manifest["entries"]:
        results.append({"name": entry["name"], "result": apply_entry(entry, overlay_dir, root, dry_run)})
    changed = [r["name"] for r in results if r["result"] == "applied"]
    broken = []
    for entry in manifest["entries"]:
        if not (dry_run and entry["name"] in changed):
            broken += check_invariants(entry, root)
    if broken:
        raise OverlayError("overlay invariants broken after apply: " + "; ".join(broken))
    return {"entries": results, "changed": changed}


def find_vllm_root():
    """The directory holding the `vllm` package, found without importing it."""
    import importlib.util
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        raise OverlayError("no vllm package is importable in this image: pass --root")
    return os.path.dirname(list(spec.submodule_search_locations)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="sparkfleet-overlay",
        description="Apply the sparkfleet overlay to a vLLM tree, idempotently, and check its invariants.")
    parser.add_argument("action", choices=["apply", "check"],
                        help="apply: change what is missing; check: change nothing, fail if anything is missing")
    parser.add_argument("--manifest", required=True, help="manifest.json (the overlay directory is its parent)")
    parser.add_argument("--root", default="auto", help="directory holding the vllm package (default: found)")
    args = parser.parse_args(argv)
    try:
        with open(args.manifest, "r", encoding="utf-8") as handle:
            manifest = json.load(handle)
        root = find_vllm_root() if args.root == "auto" else args.root
        report = apply_overlay(manifest, os.path.dirname(os.path.abspath(args.manifest)), root,
                               dry_run=args.action == "check")
    except (OverlayError, OSError, ValueError) as exc:
        sys.stderr.write("sparkfleet-overlay: %s\n" % exc)
        return 1
    for item in report["entries"]:
        sys.stdout.write("%s: %s\n" % (item["name"], item["result"]))
    if args.action == "check" and report["changed"]:
        sys.stderr.write("sparkfleet-overlay: not applied in this tree: %s\n" % ", ".join(report["changed"]))
        return 1
    sys.stdout.write(json.dumps({"root": root, "changed": report["changed"]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
