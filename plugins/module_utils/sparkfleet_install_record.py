# -*- coding: utf-8 -*-
"""What sparkfleet changed on a host, recorded before it changed it, and how to undo it.

The install record (one JSON file per host) holds, for every file sparkfleet
modifies but does not own (Docker's daemon.json, HAProxy's configuration,
earlyoom's defaults), a copy of the original or the fact that there was none;
for JSON files it merges keys into, the original value of each key; the live
value of each kernel setting before sparkfleet wrote its own; and the packages
sparkfleet installed. Entries are only ever added once: a second converge
records nothing, so the record keeps the state from before the first install.

Uninstall restores those entries and deletes the files sparkfleet owns outright.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import shutil
import subprocess

RECORD_VERSION = 1
ABSENT = None


def _empty():
    return {"version": RECORD_VERSION, "files": {}, "json_keys": {}, "json_existed": {}, "json_original": {}, "sysctl": {},
            "packages": {}, "created_dirs": [], "units": {}}


def load(record_file):
    try:
        with open(record_file, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return _empty()
    for key, value in _empty().items():
        record.setdefault(key, value)
    return record


def save(record_file, record):
    os.makedirs(os.path.dirname(record_file), mode=0o700, exist_ok=True)
    tmp = record_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, record_file)


def originals_dir(record_file):
    return os.path.join(os.path.dirname(record_file), "install-originals")


def _stash_name(path):
    return hashlib.sha256(path.encode()).hexdigest()[:16] + "-" + os.path.basename(path)


def record_files(record, record_file, paths):
    """Keep a copy of each file (or note its absence) unless it is already recorded. Returns the paths added."""
    added = []
    for path in paths:
        if path in record["files"]:
            continue
        if os.path.lexists(path):
            stash = os.path.join(originals_dir(record_file), _stash_name(path))
            os.makedirs(os.path.dirname(stash), mode=0o700, exist_ok=True)
            shutil.copy2(path, stash)
            st = os.stat(path)
            record["files"][path] = {"stash": stash, "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid}
        else:
            record["files"][path] = ABSENT
        added.append(path)
    return added


def record_dirs(record, dirs):
    """Remember the directories (and missing parents) that do not exist yet: sparkfleet is about to create them."""
    added = []
    for path in dirs:
        path = os.path.normpath(path)
        while path not in ("/", "") and not os.path.exists(path):
            if path not in record["created_dirs"]:
                record["created_dirs"].append(path)
                added.append(path)
            path = os.path.dirname(path)
    return added


def remove_created_dirs(record, check_mode=False):
    """Remove, deepest first, the recorded directories sparkfleet created that are now empty."""
    actions = []
    for path in sorted(record["created_dirs"], key=lambda p: (-p.count(os.sep), p)):
        if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
            actions.append("removed empty directory %s (sparkfleet created it)" % path)
            if not check_mode:
                os.rmdir(path)
    return actions


def record_json_keys(record, path, keys):
    """Remember each key's value in a JSON file before sparkfleet merges its own (absent: None marker)."""
    current = {}
    record["json_existed"].setdefault(path, os.path.exists(path))
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        current = json.loads(text) if text.strip() else {}
        # The text as it was, so an uninstall that leaves the other keys alone
        # puts back the same bytes (key order and layout), not an equal JSON.
        record["json_original"].setdefault(path, text)
    entry = record["json_keys"].setdefault(path, {})
    added = []
    for key in keys:
        if key in entry:
            continue
        entry[key] = {"present": key in current, "value": current.get(key)}
        added.append(key)
    return added


def record_sysctl(record, proc_sys, keys):
    added = []
    for key in keys:
        if key in record["sysctl"]:
            continue
        try:
            with open(os.path.join(proc_sys, key.replace(".", "/")), encoding="utf-8") as handle:
                record["sysctl"][key] = handle.read().strip()
        except OSError:
            record["sysctl"][key] = ABSENT
        added.append(key)
    return added


def record_units(record, states):
    """states: {unit: {"enabled": bool, "active": bool}} as the host has them before sparkfleet."""
    added = []
    for unit, state in sorted(states.items()):
        if unit in record["units"]:
            continue
        record["units"][unit] = {"enabled": bool(state["enabled"]), "active": bool(state["active"])}
        added.append(unit)
    return added


def unit_state(unit):
    """{"enabled": bool, "active": bool} of a systemd unit, as systemctl reports it now."""
    def ask(verb):
        return subprocess.run(["systemctl", verb, unit], capture_output=True, text=True).stdout.strip()
    return {"enabled": ask("is-enabled") in ("enabled", "enabled-runtime"), "active": ask("is-active") == "active"}


def unit_plan(record, unit, now, files_changed):
    """systemctl verbs that put a unit back as recorded: [] when it already is (or was not recorded)."""
    before = record["units"].get(unit)
    if before is None:
        return []
    verbs = []
    if before["enabled"] != now["enabled"]:
        verbs.append("enable" if before["enabled"] else "disable")
    if not before["active"] and now["active"]:
        verbs.append("stop")
    elif before["active"] and (not now["active"] or files_changed):
        # Restarted on its own configuration again (or started, if it was stopped).
        verbs.append("restart")
    return verbs


def record_packages(record, installed):
    """installed: {package: bool} as the host has them now, before sparkfleet installs anything."""
    added = []
    for package, present in sorted(installed.items()):
        if package in record["packages"]:
            continue
        record["packages"][package] = {"installed_before": bool(present)}
        added.append(package)
    return added


def _same_file(a, b):
    try:
        with open(a, "rb") as one, open(b, "rb") as two:
            return one.read() == two.read()
    except OSError:
        return False


def restore_files(record, paths, check_mode=False):
    """Put recorded files back as they were. Returns (actions, paths whose record entry is consumed)."""
    actions, consumed = [], []
    for path in paths:
        if path not in record["files"]:
            continue
        entry = record["files"][path]
        consumed.append(path)
        if entry is ABSENT:
            if os.path.lexists(path):
                actions.append("removed %s (sparkfleet created it)" % path)
                if not check_mode:
                    os.remove(path)
            continue
        stash = entry["stash"]
        if not os.path.exists(stash):
            actions.append("cannot restore %s: its saved original %s is gone" % (path, stash))
            continue
        if _same_file(path, stash) and (os.stat(path).st_mode & 0o7777) == entry["mode"]:
            continue
        actions.append("restored %s to its original" % path)
        if not check_mode:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copyfile(stash, path)
            os.chmod(path, entry["mode"])
            os.chown(path, entry["uid"], entry["gid"])
    return actions, consumed


def restore_json_keys(record, path, check_mode=False):
    """Put back the original value of each key sparkfleet merged, keeping every other key as it is now."""
    entry = record["json_keys"].get(path)
    if not entry or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    current = json.loads(text) if text.strip() else {}
    wanted = dict(current)
    for key, original in entry.items():
        if original["present"]:
            wanted[key] = original["value"]
        else:
            wanted.pop(key, None)
    if wanted == current:
        return []
    changed_keys = sorted(k for k in entry if current.get(k) != wanted.get(k) or (k in current) != (k in wanted))
    if not check_mode:
        if wanted or record["json_existed"].get(path, True):
            original = record["json_original"].get(path)
            tmp = path + ".sparkfleet-tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                if original is not None and (json.loads(original) if original.strip() else {}) == wanted:
                    handle.write(original)
                else:
                    json.dump(wanted, handle, indent=2)
                    handle.write("\n")
            shutil.copymode(path, tmp)
            os.replace(tmp, path)
        else:
            # The file held nothing but sparkfleet's keys and did not exist before.
            os.remove(path)
    return ["restored keys %s of %s" % (", ".join(changed_keys), path)]


def restore_sysctl(record, proc_sys, apply, check_mode=False):
    """Returns (actions, notes): a setting that cannot be written here is a note, not a change."""
    actions, notes = [], []
    for key, value in sorted(record["sysctl"].items()):
        if value is ABSENT:
            continue
        node = os.path.join(proc_sys, key.replace(".", "/"))
        try:
            with open(node, encoding="utf-8") as handle:
                now = handle.read().strip()
        except OSError:
            continue
        if now.split() == value.split():
            continue
        if not apply:
            notes.append("left %s=%s (original %s): %s is not writable here" % (key, now, value, proc_sys))
            continue
        actions.append("set %s back to %s (was %s)" % (key, value, now))
        if not check_mode:
            with open(node, "w", encoding="utf-8") as handle:
                handle.write(value)
    return actions, notes


def expand(patterns):
    """Paths matching the given paths or globs, deepest first (children before their directories)."""
    found = set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            found.update(glob.glob(pattern))
        elif os.path.lexists(pattern):
            found.add(pattern)
    return sorted(found, key=lambda p: (-p.count(os.sep), p))


def _is_kept(path, keep):
    for kept in keep:
        kept = kept.rstrip("/")
        if path == kept or path.startswith(kept + "/") or kept.startswith(path.rstrip("/") + "/"):
            return True
        if fnmatch.fnmatch(path, kept):
            return True
    return False


def remove_paths(patterns, keep=(), check_mode=False):
    """Delete sparkfleet's own files and directories, sparing anything in keep (and the directories above it)."""
    actions = []
    for path in expand(patterns):
        if _is_kept(path, keep):
            if os.path.isdir(path) and not os.path.islink(path):
                for name in sorted(os.listdir(path)):
                    child = os.path.join(path, name)
                    if not _is_kept(child, keep):
                        actions.extend(remove_paths([child], keep, check_mode))
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            actions.append("removed directory %s" % path)
            if not check_mode:
                shutil.rmtree(path)
        else:
            actions.append("removed %s" % path)
            if not check_mode:
                os.remove(path)
    return actions
