"""The start-up progress report: phases from the pinned release's log lines, the line, the failure report."""

import json
import os

import pytest

from conftest import ROOT

import sparkfleet_progress as progress

with open(os.path.join(ROOT, "files", "vllm", "vllm-0.33.0.fingerprint.json"), encoding="utf-8") as _handle:
    LINES = {key: entry["text"] for key, entry in json.load(_handle)["log_lines"].items()}


def test_every_marker_is_a_log_line_of_the_pinned_release():
    keys = {key for key, _ in progress.MARKERS}
    assert keys <= set(LINES), keys - set(LINES)
    assert len(progress.marker_texts(LINES)) == len(progress.MARKERS)


@pytest.mark.parametrize("log, phase, detail", [
    ("", "starting", ""),
    ("INFO sparkfleet-cleanup: nothing stale\n", "starting", ""),
    ("INFO DP group leader: node_rank=0, node_rank_within_dp=0, master_addr=10.77.0.2\n", "rendezvous", ""),
    ("Starting to load model /models/x...\nLoading safetensors checkpoint shards:  50% Completed | 23/46 [00:10<?]\n",
     "loading", "23/46 shards, 50%"),
    ("Starting to load model /models/x...\nLoading weights took 30.1 seconds\n", "profiling", ""),
    ("Model loading took 75.3 GiB\nGPU KV cache size: 360,858 tokens\n", "kv_cache_ready", ""),
    ("GPU KV cache size: 1 tokens\nCapturing CUDA graphs (mixed prefill-decode, PIECEWISE): 40%\n", "cuda_graphs", ""),
    ("init engine (profile, create kv cache, warmup model) took 500.2 seconds\n", "engine_ready", ""),
    ("init engine (profile, create kv cache, warmup model) took 5 seconds\nStarting vLLM server on http://x\n",
     "api_starting", ""),
])
def test_phase_is_that_of_the_last_start_up_line(log, phase, detail):
    assert progress.phase_of(log, LINES) == (phase, detail)


def test_every_pinned_release_names_every_phase_from_its_own_lines():
    """0.34.0's runner says "Loading model from scratch..." where 0.33.0 said "Starting to load model %s...":
    the phase follows the release's own text."""
    import vllm_release

    for version in vllm_release.pinned_releases():
        lines = {key: entry["text"] for key, entry in vllm_release.fingerprint(version)["log_lines"].items()}
        assert len(progress.marker_texts(lines)) == len(progress.MARKERS), version
        start = "%s\n" % (lines["starting_to_load"] % "/models/x" if "%s" in lines["starting_to_load"]
                           else lines["starting_to_load"])
        assert progress.phase_of("INFO DP group leader: node_rank=0\n" + start, lines) == ("loading", ""), version
    # 0.33.0 runs either model runner (V2 unless a feature needs V1): both wordings mark "loading",
    # in the fingerprint's entries and in what the filter hands the progress module.
    import sys
    sys.path.insert(0, os.path.join(ROOT, "plugins", "filter"))
    import sparkfleet as filters

    old_entries = vllm_release.fingerprint("0.33.0")["log_lines"]
    old_lines = filters.sparkfleet_fingerprint_log_lines(vllm_release.fingerprint_path("0.33.0"))
    assert old_lines["starting_to_load"] == ["Starting to load model %s...", "Loading model from scratch..."]
    for lines in (old_entries, old_lines):
        for start in ("Starting to load model /models/x...\n", "Loading model from scratch...\n"):
            assert progress.phase_of("INFO DP group leader: node_rank=0\n" + start, lines) == ("loading", "")
    new = {key: entry["text"] for key, entry in vllm_release.fingerprint("0.34.0")["log_lines"].items()}
    assert progress.phase_of("Loading model from scratch...\n", new) == ("loading", "")
    assert progress.phase_of("Starting to load model /models/x...\n", new) == ("starting", "")


def test_line_names_both_ranks_and_the_expected_remaining_time():
    head = {"phase": "loading", "detail": "23/46 shards, 50%"}
    worker = {"phase": "loading", "detail": "20/46 shards, 43%"}
    assert progress.report_line("a", 95.4, head, worker) == (
        "pair a | 95 s | head: loading weights (23/46 shards, 50%) | worker: loading weights (20/46 shards, 43%)")
    assert progress.report_line("a", 200, {"phase": "rendezvous"}, {"phase": "not_running"}, expected_s=600).endswith(
        "head: waiting for the worker at rendezvous | worker: not running | about 6 min 40 s left (last start took "
        "10 min 00 s)")
    assert "slower than the last start (50 s)" in progress.report_line("a", 70, {"phase": "cuda_graphs"}, None, 50)
    # A pair that was already serving: its elapsed time is its uptime, no estimate.
    assert progress.report_line("a", 9000, {"phase": "api_up"}, None, 50) == (
        "pair a | 2 h 30 min | head: API up, gate checks running")
    assert progress.report_line("b", 30, {"phase": "rendezvous"},
                                {"phase": "restarting", "detail": "after: engine ready (headless)"}).endswith(
        "worker: restarting after a crash (systemd Restart=on-failure) (after: engine ready (headless))")


def test_relevant_lines_keep_errors_and_markers_only():
    log = "\n".join(["noise %d" % i for i in range(50)] + [
        "INFO Starting to load model /models/x...",
        "ERROR RuntimeError: CUDA error: out of memory",
        "more noise"])
    assert progress.relevant_lines(log, LINES) == [
        "INFO Starting to load model /models/x...", "ERROR RuntimeError: CUDA error: out of memory"]


def test_history_key_is_short_image_and_profile():
    assert progress.history_key("sha256:" + "ab" * 32, "balanced") == "abababababab/balanced"
