"""Pruning: the running and last-known-good images always stay, then the newest others."""

import sparkfleet_prune as prune

IMAGES = [
    {"id": "sha256:run", "ref": "sparkfleet/vllm-spark:aaaa", "created": "2026-11-20 10:00:00 +0000 UTC"},
    {"id": "sha256:lkg", "ref": "sparkfleet/vllm-spark:bbbb", "created": "2026-11-01 10:00:00 +0000 UTC"},
    {"id": "sha256:new", "ref": "sparkfleet/vllm-spark:cccc", "created": "2026-11-25 10:00:00 +0000 UTC"},
    {"id": "sha256:mid", "ref": "sparkfleet/vllm-spark:dddd", "created": "2026-11-10 10:00:00 +0000 UTC"},
    {"id": "sha256:old", "ref": "sparkfleet/vllm-spark:eeee", "created": "2026-10-01 10:00:00 +0000 UTC"},
]


def test_running_and_last_known_good_stay_even_when_old():
    decided = prune.plan(IMAGES, ["sha256:run", "sha256:lkg"], 1, ["aaaa", "bbbb", "cccc", "dddd", "eeee", "zzzz"])
    assert decided["keep"] == ["sparkfleet/vllm-spark:cccc", "sparkfleet/vllm-spark:aaaa", "sparkfleet/vllm-spark:bbbb"]
    assert decided["remove"] == ["sparkfleet/vllm-spark:dddd", "sparkfleet/vllm-spark:eeee"]
    # A context goes with its image; one whose image is gone already goes too.
    assert decided["remove_contexts"] == ["dddd", "eeee", "zzzz"]


def test_keep_zero_others_and_a_second_tag_of_a_kept_image():
    images = IMAGES + [{"id": "sha256:run", "ref": "sparkfleet/vllm-spark:alias", "created": IMAGES[0]["created"]}]
    decided = prune.plan(images, ["sha256:run", ""], 0, [])
    assert sorted(decided["keep"]) == ["sparkfleet/vllm-spark:aaaa", "sparkfleet/vllm-spark:alias"]
    assert len(decided["remove"]) == 4


def test_nothing_to_remove_is_a_no_op():
    decided = prune.plan(IMAGES[:2], ["sha256:run", "sha256:lkg"], 2, ["aaaa", "bbbb"])
    assert decided["remove"] == [] and decided["remove_contexts"] == []
