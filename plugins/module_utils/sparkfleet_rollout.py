# -*- coding: utf-8 -*-
"""Rollout batches: a canary pair alone, then batches of a set size or share of the fleet,
never leaving fewer than a set number of pairs serving."""

from __future__ import annotations

import math


class RolloutPlanError(ValueError):
    pass


def batch_size(batch, pairs):
    """Pairs per batch from an int or a share ('25%'), at least 1."""
    text = str(batch).strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError
            return max(1, math.ceil(pairs * share / 100.0))
        size = int(text)
        if size < 1:
            raise ValueError
        return size
    except ValueError:
        raise RolloutPlanError("sparkfleet_roll_batch must be a whole number of pairs (>= 1) or a share "
                               "such as '25%%', not %r" % (batch,))


def plan(pairs, batch=1, min_serving=1, canary=True):
    """pairs: {name: {head, worker, ...}} in rollout order (sorted by name here).

    Returns {"batches": [[pair, ...], ...], "serial": [hosts per batch], "order": [worker, head, ...],
    "single_pair": bool}. With one pair there is nothing that can keep serving: one batch, and the
    caller warns about the downtime.
    """
    names = sorted(pairs)
    if not names:
        raise RolloutPlanError("the fleet has no pairs to roll")
    try:
        min_serving = int(min_serving)
    except (TypeError, ValueError):
        raise RolloutPlanError("sparkfleet_roll_min_serving_pairs must be a number, not %r" % (min_serving,))
    if min_serving < 0:
        raise RolloutPlanError("sparkfleet_roll_min_serving_pairs must be 0 or more")
    size = batch_size(batch, len(names))
    single = len(names) == 1
    if not single:
        room = len(names) - min_serving
        if room < 1:
            raise RolloutPlanError(
                "sparkfleet_roll_min_serving_pairs is %d but the fleet has %d pairs: no pair could be "
                "restarted while that many keep serving" % (min_serving, len(names)))
        size = min(size, room)
    batches = []
    rest = list(names)
    if canary and len(rest) > 1:
        batches.append([rest.pop(0)])
    while rest:
        batches.append(rest[:size])
        rest = rest[size:]
    order = [host for group in batches for name in group for host in (pairs[name]["worker"], pairs[name]["head"])]
    return {"batches": batches, "serial": [2 * len(group) for group in batches], "order": order,
            "single_pair": single, "batch_size": size}


def describe(result):
    parts = []
    for index, group in enumerate(result["batches"]):
        label = "canary" if index == 0 and len(result["batches"]) > 1 and len(group) == 1 else "batch %d" % index
        parts.append("%s: %s" % (label, ", ".join(group)))
    return "; ".join(parts)
