"""Rollout batches: canary alone, then batches by size or share, never fewer than the minimum serving."""

import pytest

import sparkfleet_rollout as rollout


def pairs(n):
    return {chr(ord("a") + i): {"head": "spark-%s1" % chr(ord("a") + i), "worker": "spark-%s2" % chr(ord("a") + i)}
            for i in range(n)}


def test_canary_then_batches_of_the_set_size():
    plan = rollout.plan(pairs(6), batch=2, min_serving=1)
    assert plan["batches"] == [["a"], ["b", "c"], ["d", "e"], ["f"]]
    assert plan["serial"] == [2, 4, 4, 2]
    assert plan["order"][:4] == ["spark-a2", "spark-a1", "spark-b2", "spark-b1"]
    assert rollout.describe(plan) == "canary: a; batch 1: b, c; batch 2: d, e; batch 3: f"


def test_a_share_of_the_fleet_and_the_minimum_serving_cap():
    assert rollout.plan(pairs(8), batch="50%", min_serving=1)["batches"] == [["a"], ["b", "c", "d", "e"], ["f", "g", "h"]]
    # 4 pairs, at least 3 serving: batches of one whatever the asked size.
    assert rollout.plan(pairs(4), batch="100%", min_serving=3)["batches"] == [["a"], ["b"], ["c"], ["d"]]


def test_two_pairs_roll_one_at_a_time_as_before():
    plan = rollout.plan(pairs(2))
    assert plan["batches"] == [["a"], ["b"]] and plan["serial"] == [2, 2] and not plan["single_pair"]


def test_one_pair_is_one_batch_flagged_for_the_downtime_warning():
    plan = rollout.plan(pairs(1), min_serving=1)
    assert plan["batches"] == [["a"]] and plan["single_pair"]


def test_no_canary_when_turned_off():
    assert rollout.plan(pairs(4), batch=2, canary=False)["batches"] == [["a", "b"], ["c", "d"]]


@pytest.mark.parametrize("batch, min_serving, message", [
    (0, 1, "whole number of pairs"),
    ("150%", 1, "share such as '25%'"),
    ("two", 1, "not 'two'"),
    (1, 4, "min_serving_pairs is 4 but the fleet has 4 pairs"),
    (1, -1, "0 or more"),
])
def test_bad_settings_are_refused_with_the_setting_named(batch, min_serving, message):
    with pytest.raises(rollout.RolloutPlanError) as err:
        rollout.plan(pairs(4), batch=batch, min_serving=min_serving)
    assert message in str(err.value)
