"""scripts/vllm-release: the release report, the extractor that bends, and the real 0.33.0 -> 0.34.0 move."""

import copy
import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts", "lib"))

import sparkfleet_vllm_fingerprint as fingerprint  # noqa: E402
import sparkfleet_vllm_release_report as report  # noqa: E402
import vllm_release  # noqa: E402

OVERLAY_DIR = os.path.join(ROOT, "files", "overlay")
SERVICE = {"model": "/models/DeepSeek-V4-Flash", "served_model_name": "deepseek-v4-flash",
           "api_host": "192.0.2.1", "api_port": 8000, "master_port": 29501, "shutdown_timeout": 60}


@pytest.fixture(scope="module")
def old():
    return vllm_release.fingerprint("0.33.0")


@pytest.fixture(scope="module")
def profiles():
    with open(os.path.join(ROOT, "group_vars", "all", "profiles.yml"), encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    return data["sparkfleet_profile_defaults"], data["sparkfleet_profiles"]


def _option(fp, dest):
    return next(o for o in fp["serve"]["options"] if o["dest"] == dest)


def _report(old, new, profiles, overlay=()):
    return report.compare(old, new, profiles[0], profiles[1], SERVICE, list(overlay))


def test_a_removed_option_a_profile_uses_refuses_the_release_and_names_the_nearest(old, profiles):
    new = copy.deepcopy(old)
    seqs = _option(new, "max_num_seqs")
    seqs["flags"] = ["--max-num-sequences"]
    seqs["dest"] = "max_num_sequences"
    result = _report(old, new, profiles)
    assert "--max-num-seqs (nearest now: --max-num-sequences)" in result["options"]["removed"]
    assert "--max-num-sequences" in result["options"]["added"]
    refused = [p for p in result["profiles"] if p["problems"]]
    assert {p["profile"] for p in refused} == set(profiles[1])
    assert any("--max-num-seqs is not a `vllm serve` option" in line and "nearest: --max-num-sequences" in line
               for line in refused[0]["problems"])
    valid, line = report.verdict(result)
    assert not valid and "profiles refused: balanced, latency, long_context_1m, throughput" in line


def test_renamed_spellings_changed_choices_json_keys_and_variables_are_listed(old, profiles):
    new = copy.deepcopy(old)
    option = _option(new, "chat_template_content_format")
    option["choices"] = ["auto", "openai", "string", "tokens"]
    headless = _option(new, "headless")
    headless["flags"] = ["--headless-mode"]
    new["json_configs"]["speculative_config"]["keys"] = \
        [k for k in new["json_configs"]["speculative_config"]["keys"] if k != "num_speculative_tokens"]
    new["env"] = [v for v in new["env"] if v != "VLLM_HOST_IP"] + ["VLLM_NEW_THING"]
    result = _report(old, new, profiles)
    assert "--headless -> --headless-mode" in result["options"]["renamed"]
    assert "--chat-template-content-format: added tokens" in result["options"]["choices"]
    assert result["json_configs"]["speculative_config"]["removed"] == ["num_speculative_tokens"]
    assert result["env"] == {"added": ["VLLM_NEW_THING"], "removed": ["VLLM_HOST_IP"]}
    # Every profile renders --headless on the worker and num_speculative_tokens: refused.
    text, valid = report.render(result)
    assert not valid
    assert "`balanced` worker: REFUSED" in text and "--headless is not a `vllm serve` option" in text


def test_a_gone_literal_says_who_loses_what_and_blocks_only_when_a_gate_needs_it(old, profiles):
    new = copy.deepcopy(old)
    del new["log_lines"]["starting_to_load"]
    new["missing"]["log_lines"]["starting_to_load"] = {"texts": ["Starting to load model %s..."]}
    result = _report(old, new, profiles)
    gone = [f for f in result["surface"] if f["state"] == "gone"]
    assert [f["key"] for f in gone] == ["starting_to_load"]
    assert "the start-up progress line (phase loading) loses it" in gone[0]["detail"]
    assert report.verdict(result)[0] is True
    del new["metrics"]["vllm:num_requests_running"]
    result = _report(old, new, profiles)
    valid, line = report.verdict(result)
    assert not valid and "gone or changed where a gate needs it: vllm:num_requests_running" in line
    assert any("the rollout's drain" in f["detail"] and "stops working" in f["detail"] for f in result["surface"])


def test_a_reworded_line_is_followed_not_an_error(old, profiles):
    new = copy.deepcopy(old)
    new["log_lines"]["starting_to_load"] = {"text": "Loading model from scratch...",
                                            "file": "vllm/v1/worker/gpu/model_runner.py"}
    result = _report(old, new, profiles)
    reworded = [f for f in result["surface"] if f["state"] == "reworded"]
    assert len(reworded) == 1 and "'Loading model from scratch...'" in reworded[0]["detail"]
    assert report.verdict(result)[0] is True


def _mxfp4(version):
    with vllm_release.wheel(version) as wheel:
        return wheel.read_bytes("vllm/model_executor/layers/quantization/mxfp4.py")


def _manifest():
    with open(os.path.join(OVERLAY_DIR, "manifest.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_overlay_entries_apply_are_upstream_conflict_or_lost_their_file():
    import sparkfleet_overlay as overlay

    manifest = _manifest()
    entry = manifest["entries"][0]
    pristine = _mxfp4("0.34.0")
    applies = report.overlay_findings(manifest, OVERLAY_DIR, "0.34.0", lambda path: pristine)
    assert applies[0]["state"] == "applies" and "hunk 1" in applies[0]["detail"]
    # The release already carries the fix: the build's own apply step says so.
    with open(os.path.join(OVERLAY_DIR, entry["source"]), encoding="utf-8") as handle:
        _, hunks = overlay.parse_patch(handle.read(), entry["source"])
    upstream = overlay.apply_hunks(pristine.decode("utf-8"), hunks).encode("utf-8")
    found = report.overlay_findings(manifest, OVERLAY_DIR, "0.34.0", lambda path: upstream)
    assert found[0]["state"] == "already upstream"
    # The call site rewritten: the hunk is named.
    moved = pristine.replace(b"self._setup_kernel(", b"self._setup_moe_kernel(")
    found = report.overlay_findings(manifest, OVERLAY_DIR, "0.34.0", lambda path: moved)
    assert found[0]["state"] == "conflicts" and "hunk 1 (@@" in found[0]["detail"]
    gone = report.overlay_findings(manifest, OVERLAY_DIR, "0.34.0", lambda path: None)
    assert gone[0]["state"] == "target gone"


def test_the_extractor_records_a_moved_or_reworded_literal_and_a_missing_one_instead_of_failing():
    sources = {
        "vllm/v1/metrics/loggers.py": "\n".join('"%s"' % m for m in fingerprint.SURFACE_LITERALS["metrics"]
                                                if m != "vllm:num_preemptions"),
        "vllm/v1/spec_decode/metrics.py": "",
        # A line moved to another file, and one reworded to its second text.
        "vllm/v1/worker/gpu/model_runner.py": 'logger.info("Loading model from scratch...")',
        "vllm/v1/worker/cpu/standalone_model_runner.py": 'logger.info("Loading model from scratch...")',
        "vllm/somewhere_else.py": "\n".join(t for key, e in fingerprint.SURFACE_LITERALS["log_lines"].items()
                                            for t in e["texts"][:1]
                                            if key not in ("starting_to_load", "kv_cache_size")),
    }
    index = fingerprint.SourceIndex(sources.__getitem__, list(sources))
    metrics, lines, missing = fingerprint.surface_literals(index)
    assert "vllm:num_preemptions" not in metrics and "vllm:num_preemptions" in missing["metrics"]
    assert missing["metrics"]["vllm:num_preemptions"]["read_by"] == "the preemption alert"
    # The CUDA runner's copy wins over another platform's.
    assert lines["starting_to_load"] == {"text": "Loading model from scratch...",
                                         "file": "vllm/v1/worker/gpu/model_runner.py"}
    assert lines["free_memory_check"]["file"] == "vllm/somewhere_else.py"
    assert set(missing["log_lines"]) == {"kv_cache_size"} and missing["log_lines"]["kv_cache_size"]["needed"]


def test_vllm_release_reproduces_the_committed_pin_fingerprint_and_report_for_0_34_0():
    """The real move: on this checkout the command changes no committed file and says the fleet is valid."""
    tracked = ["files/vllm/releases.yml", "files/vllm/vllm-0.34.0.fingerprint.json",
               "files/vllm/vllm-0.33.0.fingerprint.json", "docs/vllm-releases/0.34.0.md"]
    before = {path: open(os.path.join(ROOT, path), encoding="utf-8").read() for path in tracked}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "vllm-release"), "0.34.0",
                             "--against", "0.33.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    after = {path: open(os.path.join(ROOT, path), encoding="utf-8").read() for path in tracked}
    changed = [path for path in tracked if before[path] != after[path]]
    for path in changed:  # leave the checkout as it was
        with open(os.path.join(ROOT, path), "w", encoding="utf-8") as handle:
            handle.write(before[path])
    assert result.returncode == 0, result.stdout
    assert changed == [], (changed, result.stdout)
    assert "0.34.0 pinned already; the wheel matches its sha256" in result.stdout
    assert "files/vllm/vllm-0.34.0.fingerprint.json unchanged" in result.stdout
    assert "**VERDICT: vLLM 0.34.0 is valid for this fleet (8 profile launches pass, overlay applies)" in result.stdout
    assert "- --max-num-inflight-kv-loads" in result.stdout
    assert "- VLLM_USE_V2_MODEL_RUNNER" in result.stdout
    assert "`starting_to_load` reworded: 'Starting to load model %s...' is now 'Loading model from scratch...'" \
        in result.stdout


def test_a_release_that_dropped_one_of_several_equivalent_lines_still_serves_the_others(tmp_path):
    """The unit's read-ahead restore waits for any of three lines: one gone leaves two."""
    import json

    sys.path.insert(0, os.path.join(ROOT, "plugins", "filter"))
    import sparkfleet as filters
    from ansible.errors import AnsibleFilterError

    fp = vllm_release.fingerprint("0.34.0")
    del fp["log_lines"]["model_loading_took"]
    path = tmp_path / "fingerprint.json"
    path.write_text(json.dumps(fp))
    keys = ["loading_weights_took", "model_loading_took", "init_engine_took"]
    assert filters.sparkfleet_fingerprint_log_lines(str(path), keys) == [
        "Loading weights took", "init engine (profile, create kv cache, warmup model) took"]
    with pytest.raises(AnsibleFilterError, match="has none of the log lines model_loading_took"):
        filters.sparkfleet_fingerprint_log_lines(str(path), ["model_loading_took"])
