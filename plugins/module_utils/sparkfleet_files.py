# -*- coding: utf-8 -*-
"""Several files and directories on a node in one module call.

A rollout's serial part pays one round trip per module call and per loop
item, so the launcher, the unit checker, the argv and the unit go in one call.
Each file is written like ansible.builtin.copy writes it: compared first, a
temporary file in the same directory, validated, then renamed over the old one.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
import subprocess
import tempfile

# Larger files get no --diff body (a unit, an argv or a script is far smaller).
DIFF_MAX_BYTES = 256 * 1024


class FilesError(Exception):
    pass


def _ids(owner, group):
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise FilesError("no user %r on this host" % owner)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise FilesError("no group %r on this host" % group)
    return uid, gid


def _mode(value):
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        raise FilesError("mode %r is not an octal string such as '0644'" % (value,))


def _attrs_differ(st, mode, uid, gid):
    return stat.S_IMODE(st.st_mode) != mode or st.st_uid != uid or st.st_gid != gid


def _text(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def ensure_directory(spec, check_mode):
    """Create or fix one directory; returns True when it changed (or would)."""
    path = spec["path"]
    mode = _mode(spec.get("mode") or "0755")
    uid, gid = _ids(spec.get("owner") or "root", spec.get("group") or "root")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise FilesError("%s exists and is not a directory" % path)
    if not os.path.isdir(path):
        if not check_mode:
            os.makedirs(path, mode=0o755, exist_ok=True)
            os.chmod(path, mode)
            os.chown(path, uid, gid)
        return True
    if _attrs_differ(os.stat(path), mode, uid, gid):
        if not check_mode:
            os.chmod(path, mode)
            os.chown(path, uid, gid)
        return True
    return False


def _validate(command, candidate, path):
    if "%s" not in command:
        raise FilesError("validate command for %s must contain %%s (the candidate file): %r" % (path, command))
    argv = [part.replace("%s", candidate) for part in shlex.split(command)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip() or "no output")
        raise FilesError("%s was not written: its validator (%s) refused it (exit %d): %s"
                         % (path, argv[0], result.returncode, detail))


def ensure_file(spec, check_mode):
    """Write or fix one file; returns (changed, diff or None)."""
    path = spec["path"]
    mode = _mode(spec.get("mode") or "0644")
    uid, gid = _ids(spec.get("owner") or "root", spec.get("group") or "root")
    if spec.get("src"):
        try:
            with open(spec["src"], "rb") as handle:
                wanted = handle.read()
        except OSError as exc:
            raise FilesError("cannot read %s (the source for %s): %s" % (spec["src"], path, exc.strerror))
    elif spec.get("content") is not None:
        wanted = spec["content"].encode("utf-8")
    else:
        raise FilesError("%s needs content or src" % path)
    if os.path.isdir(path):
        raise FilesError("%s is a directory" % path)
    current = None
    if os.path.lexists(path):
        with open(path, "rb") as handle:
            current = handle.read()
    if current == wanted:
        st = os.stat(path)
        if not _attrs_differ(st, mode, uid, gid):
            return False, None
        if not check_mode:
            os.chmod(path, mode)
            os.chown(path, uid, gid)
        return True, None
    diff = None
    if len(wanted) <= DIFF_MAX_BYTES and (current is None or len(current) <= DIFF_MAX_BYTES):
        before, after = _text(current or b""), _text(wanted)
        if before is not None and after is not None:
            diff = {"before_header": path if current is not None else "%s (absent)" % path,
                    "after_header": path, "before": before, "after": after}
    if check_mode:
        return True, diff
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise FilesError("%s: directory %s does not exist" % (path, directory))
    fd, candidate = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(wanted)
        os.chmod(candidate, mode)
        os.chown(candidate, uid, gid)
        if spec.get("validate"):
            _validate(spec["validate"], candidate, path)
        os.replace(candidate, path)
    except BaseException:
        if os.path.exists(candidate):
            os.unlink(candidate)
        raise
    return True, diff


def ensure_absent(path, check_mode):
    """Remove one file; returns True when it was there."""
    if os.path.isdir(path) and not os.path.islink(path):
        raise FilesError("%s is a directory; only files are removed" % path)
    if not os.path.lexists(path):
        return False
    if not check_mode:
        os.unlink(path)
    return True


def ensure_all(directories, files, check_mode, absent=()):
    """Directories first, then files in the order given (a later validator
    may run a file written earlier in the same call), then removals."""
    changed, diffs = [], []
    for spec in directories:
        if ensure_directory(spec, check_mode):
            changed.append(spec["path"])
    for spec in files:
        file_changed, diff = ensure_file(spec, check_mode)
        if file_changed:
            changed.append(spec["path"])
            if diff is not None and not spec.get("secret"):
                diffs.append(diff)
    for path in absent:
        if ensure_absent(path, check_mode):
            changed.append(path)
            diffs.append({"before_header": path, "after_header": "%s (absent)" % path,
                          "before": "(present)\n", "after": ""})
    return changed, diffs
