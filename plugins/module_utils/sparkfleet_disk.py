# -*- coding: utf-8 -*-
"""Disk preflight: refuse a build or transfer, with numbers, when the disk cannot hold it.

Pure Python, no Ansible imports: used by the sparkfleet_disk_preflight module
and the unit tests.
"""

from __future__ import annotations

import os

GIB = 1 << 30


def existing_dir(path):
    """path, or its nearest existing parent (a directory a transfer will create is not there yet)."""
    path = os.path.abspath(path)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def free_bytes(path):
    stats = os.statvfs(existing_dir(path))
    return stats.f_bavail * stats.f_frsize


def gib(count):
    return "%.1f GiB" % (count / float(GIB))


def verdict(host, path, free, need, reserve, what):
    """None when `need` bytes fit on `path` with `reserve` bytes left over, else the refusal."""
    if free - reserve >= need:
        return None
    return ("%s: %s has %s free; %s needs %s and %s stays free (sparkfleet_disk_reserve_gib), "
            "so %s more is needed. Free space (playbooks/prune.yml removes unused images and their "
            "build contexts) or grow the disk; nothing was transferred or built."
            % (host, path, gib(free), what, gib(need), gib(reserve), gib(need + reserve - free)))
