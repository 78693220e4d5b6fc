# -*- coding: utf-8 -*-
"""Filters for benchmark figures (logic in module_utils/sparkfleet_benchmark.py)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))

import sparkfleet_benchmark as bench  # noqa: E402  pylint: disable=wrong-import-position


def sparkfleet_benchmark_table(records):
    """Fixed-width table lines, one row per benchmark record."""
    return bench.summary_table(list(records or []))


class FilterModule(object):
    def filters(self):
        return {"sparkfleet_benchmark_table": sparkfleet_benchmark_table}
