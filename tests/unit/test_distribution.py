"""Build once per fleet: the build host and the doubling tree that brings every head the image."""

import math

import pytest

import sparkfleet_distribution as distribution

HEADS = ["spark-%s1" % c for c in "abcdefghijklmnop"]


def test_the_first_head_in_the_play_builds_unless_one_is_configured():
    assert distribution.build_host(HEADS[:4]) == ("spark-a1", "")
    assert distribution.build_host(HEADS[:4], "spark-c1") == ("spark-c1", "")
    # --limit leaves the first head out: the first head that is in the play builds.
    assert distribution.build_host(HEADS[:4], "", ["spark-b1", "spark-b2", "spark-d1"]) == ("spark-b1", "")


def test_a_configured_build_host_outside_the_play_falls_back_and_says_so():
    host, note = distribution.build_host(HEADS[:4], "spark-a1", ["spark-c1", "spark-d1"])
    assert host == "spark-c1"
    assert "spark-a1 (spark_image_build_host) is not in this play" in note and "spark-c1 builds" in note


def test_bad_build_host_settings_are_refused_by_name():
    with pytest.raises(distribution.DistributionError, match="'spark-a2' is not a head"):
        distribution.build_host(HEADS[:2], "spark-a2")
    with pytest.raises(distribution.DistributionError, match="no head of the fleet is in this play"):
        distribution.build_host(HEADS[:2], "", ["spark-a2"])


@pytest.mark.parametrize("heads", [2, 3, 4, 5, 8, 16])
def test_every_round_doubles_the_holders(heads):
    ids = {h: "" for h in HEADS[:heads]}
    ids["spark-a1"] = "sha256:new"
    rounds = distribution.fanout_plan(ids, "spark-a1")
    assert len(rounds) == math.ceil(math.log2(heads))
    holders = {"spark-a1"}
    for pairs in rounds:
        senders = [p["sender"] for p in pairs]
        receivers = [p["receiver"] for p in pairs]
        # Each sender holds the image already and serves one receiver a round.
        assert set(senders) <= holders and len(set(senders)) == len(senders)
        assert not set(receivers) & holders and len(set(receivers)) == len(receivers)
        holders |= set(receivers)
    assert holders == set(ids)


def test_heads_that_hold_the_id_receive_nothing_and_send_from_the_start():
    ids = {"spark-a1": "sha256:new", "spark-b1": "sha256:new", "spark-c1": "sha256:old", "spark-d1": ""}
    rounds = distribution.fanout_plan(ids, "spark-a1")
    assert rounds == [[{"sender": "spark-a1", "receiver": "spark-c1"}, {"sender": "spark-b1", "receiver": "spark-d1"}]]
    assert distribution.fanout_plan({"spark-a1": "sha256:x", "spark-b1": "sha256:x"}, "spark-a1") == []


def test_nothing_to_send_when_the_build_host_has_no_image_yet():
    # Check mode on inputs never built: the build host only says what it would build.
    assert distribution.fanout_plan({"spark-a1": "", "spark-b1": ""}, "spark-a1") == []
    with pytest.raises(distribution.DistributionError, match="spark-z1 is not among the heads"):
        distribution.fanout_plan({"spark-a1": "x"}, "spark-z1")


def test_each_host_reads_its_own_part_of_a_round():
    rounds = distribution.fanout_plan({h: "" for h in HEADS[:3]} | {"spark-a1": "x"}, "spark-a1")
    assert distribution.round_role(rounds, 0, "spark-a1") == {"sends_to": "spark-b1", "receives_from": ""}
    assert distribution.round_role(rounds, 0, "spark-b1") == {"sends_to": "", "receives_from": "spark-a1"}
    assert distribution.round_role(rounds, 1, "spark-b1") == {"sends_to": "", "receives_from": ""}
    assert distribution.round_role(rounds, 1, "spark-c1") == {"sends_to": "", "receives_from": "spark-a1"}


def test_the_plan_reads_round_by_round():
    ids = {h: "" for h in HEADS[:4]} | {"spark-a1": "x"}
    assert distribution.describe(distribution.fanout_plan(ids, "spark-a1")) == (
        "round 1: spark-a1 -> spark-b1; round 2: spark-a1 -> spark-c1, spark-b1 -> spark-d1")


def test_each_release_is_built_once_by_a_head_that_serves_it():
    """Pairs a and c moved to a new release: one of them builds it, b builds the old one."""
    new, old = ["spark-a1", "spark-c1"], ["spark-b1", "spark-d1"]
    assert distribution.build_host(HEADS[:4], "", None, new) == ("spark-a1", "")
    assert distribution.build_host(HEADS[:4], "", None, old) == ("spark-b1", "")
    # The configured build host builds its own release; the other release's first head builds that one.
    assert distribution.build_host(HEADS[:4], "spark-d1", None, old) == ("spark-d1", "")
    assert distribution.build_host(HEADS[:4], "spark-d1", None, new) == ("spark-a1", "")
    # Only the heads of one image are planned together.
    plan = distribution.fanout_plan({"spark-a1": "sha256:new", "spark-c1": ""}, "spark-a1")
    assert plan == [[{"sender": "spark-a1", "receiver": "spark-c1"}]]
