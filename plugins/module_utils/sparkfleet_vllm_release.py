# -*- coding: utf-8 -*-
"""The pinned vLLM release: find, download and read its wheel.

sparkfleet derives what it knows about vLLM (its ``serve`` options, the
environment variables it reads, the files the overlay patches) from the real
wheel of the release it pins in ``files/vllm/releases.yml``, never from memory.
The wheel is downloaded once from PyPI into the repository's gitignored
``.cache/vllm`` and checked against its pinned sha256 before it is read.
Sources are read from the zip directly: nothing of vLLM is imported or run.

Standard library only (plus PyYAML for the pin file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from sparkfleet_overlay import sha256_file  # the same stdlib helper, one copy

RELEASES_FILE = os.path.join("files", "vllm", "releases.yml")
CACHE_DIR = os.path.join(".cache", "vllm")


class ReleaseError(Exception):
    """The pinned release cannot be found, downloaded or verified."""


def repo_root():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.abspath(os.path.join(here, "..", ".."))


def load_releases(root=None):
    import yaml

    path = os.path.join(root or repo_root(), RELEASES_FILE)
    with open(path, "r", encoding="utf-8") as handle:
        return yaml.safe_load(handle)["releases"]


def pin(version, root=None):
    releases = load_releases(root)
    if version not in releases:
        raise ReleaseError(
            "vLLM %s is not pinned in %s (pinned: %s)" % (version, RELEASES_FILE, ", ".join(sorted(releases))))
    entry = dict(releases[version])
    entry["version"] = version
    return entry


# The platform whose wheel is read: a release's Python sources are the same in
# every platform's wheel (releases.yml says why), and this one is on PyPI for
# every release.
DEFAULT_PLATFORM = "manylinux_2_28_x86_64"


def _pip_download(version, platform, dest):
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--no-deps", "--only-binary=:all:", "--platform", platform,
               "--dest", dest, "vllm==%s" % version]
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)


def fetch_unpinned(version, root=None, platform=DEFAULT_PLATFORM):
    """Download a release not pinned yet into the cache: (path, sha256, platform)."""
    import glob
    import tempfile

    root = root or repo_root()
    cache = os.path.join(root, CACHE_DIR)
    os.makedirs(cache, exist_ok=True)
    found = sorted(glob.glob(os.path.join(cache, "vllm-%s-*%s.whl" % (version, platform))))
    if not found:
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            result = _pip_download(version, platform, tmp)
            wheels = sorted(glob.glob(os.path.join(tmp, "vllm-%s-*.whl" % version)))
            if result.returncode != 0 or not wheels:
                raise ReleaseError("could not download vLLM %s (%s) from PyPI:\n%s"
                                   % (version, platform, result.stdout[-2000:]))
            target = os.path.join(cache, os.path.basename(wheels[0]))
            os.replace(wheels[0], target)
            found = [target]
    return found[0], sha256_file(found[0]), platform


def add_pin(version, wheel, sha256, platform, root=None):
    """Append a release to releases.yml (text, so its comments stay); refuse a
    pin that already says something else."""
    root = root or repo_root()
    releases = load_releases(root)
    entry = {"wheel": wheel, "sha256": sha256, "platform": platform}
    if version in releases:
        if dict(releases[version]) != entry:
            raise ReleaseError("%s pins %s as %s, the download is %s" % (RELEASES_FILE, version,
                                                                         releases[version], entry))
        return False
    path = os.path.join(root, RELEASES_FILE)
    with open(path, "r", encoding="utf-8") as handle:
        text = handle.read()
    if not text.endswith("\n"):
        text += "\n"
    text += '  "%s":\n    wheel: %s\n    sha256: %s\n    platform: %s\n' % (version, wheel, sha256, platform)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return True


def wheel_path(version, root=None, download=True):
    """Path of the verified wheel of ``version``, downloading it when missing."""
    root = root or repo_root()
    entry = pin(version, root)
    cache = os.path.join(root, CACHE_DIR)
    path = os.path.join(cache, entry["wheel"])
    if not os.path.isfile(path):
        if not download:
            raise ReleaseError("%s is not in %s; run scripts/vllm-wheel %s" % (entry["wheel"], cache, version))
        os.makedirs(cache, exist_ok=True)
        result = _pip_download(version, entry["platform"], cache)
        if result.returncode != 0 or not os.path.isfile(path):
            raise ReleaseError("could not download %s from PyPI:\n%s" % (entry["wheel"], result.stdout[-2000:]))
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ReleaseError("%s has sha256 %s, pinned %s: delete it and download again"
                           % (path, actual, entry["sha256"]))
    return path


class Wheel:
    """Read-only access to the ``.py`` sources of a wheel."""

    def __init__(self, path):
        self.path = path
        self._zip = zipfile.ZipFile(path)
        self.names = set(self._zip.namelist())

    def read_bytes(self, member):
        if member not in self.names:
            raise ReleaseError("%s has no %s" % (os.path.basename(self.path), member))
        return self._zip.read(member)

    def read_text(self, member):
        return self.read_bytes(member).decode("utf-8")

    def python_files(self, prefix="vllm/"):
        return sorted(n for n in self.names if n.startswith(prefix) and n.endswith(".py"))

    def close(self):
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
