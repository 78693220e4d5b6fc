"""The benchmark client, its figures, the performance gate's verdict and the history's pictures.

The client is measured against the vLLM simulator (its token delay is the
truth the figures must recover), and its definitions against `vllm bench
serve` of the pinned release (the result keys and formulas in its serve.py).
"""

import json
import os
import sys
import time

import numpy
import pytest

import sparkfleet_benchmark as bench
from test_vllm_sim import free_port, procs, sim_env, single_node_args, wait_health  # noqa: F401  (fixture)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.mark.parametrize("share", [0, 1, 37.5, 50, 90, 99, 100])
def test_percentile_is_numpys_linear_interpolation(share):
    values = [0.5, 3.0, 1.25, 9.0, 4.0, 2.0, 7.5]
    assert bench.percentile(values, share) == pytest.approx(numpy.percentile(values, share))


def _serve(procs, port, **env):  # noqa: F811
    proc = procs.start("sim", single_node_args(port, "--max-num-seqs", "4"), env=sim_env(**env))
    wait_health(port, proc)
    return "http://127.0.0.1:%d" % port


def _run(base_url, concurrency=4, single=3, rounds=1, output_len=40, bound=60):
    deadline = time.monotonic() + bound

    def send(left):
        return bench.stream_request(base_url, "dsv4", "", bench.fixed_prompt(32), output_len, min(left, 30))

    one, _ = bench.run_phase(send, 1, single, deadline)
    many, wall = bench.run_phase(send, concurrency, concurrency * rounds, deadline)
    return bench.summarize(one, many, wall, concurrency)


def test_figures_recover_the_simulators_decode_speed(procs):  # noqa: F811
    # 20 ms a token: 50 tok/s a stream; 4 streams at once decode 4 x as much.
    figures = _run(_serve(procs, free_port(), VLLM_SIM_TOKEN_DELAY="0.02"))
    assert figures["failed"] == 0 and figures["requests"] == 7
    assert 40 <= figures["single_stream_tok_s"] <= 52
    assert 140 <= figures["aggregate_tok_s"] <= 205
    assert 15 <= figures["itl_ms_p50"] <= 30
    assert figures["ttft_ms_p50"] < 200 and figures["ttft_ms_p99"] >= figures["ttft_ms_p50"]


def test_slow_decode_fault_is_seen_as_a_slower_pair(procs):  # noqa: F811
    normal = _run(_serve(procs, free_port(), VLLM_SIM_TOKEN_DELAY="0.01"), concurrency=2, output_len=30)
    slow = _run(_serve(procs, free_port(), VLLM_SIM_TOKEN_DELAY="0.01", VLLM_SIM_FAULT="slow_decode=1.67"),
                concurrency=2, output_len=30)
    ratio = slow["single_stream_tok_s"] / normal["single_stream_tok_s"]
    assert 0.5 <= ratio <= 0.7, (normal, slow)
    passed, lines = bench.gate(slow, {"figures": normal, "source": "pair b's last known good"}, 0.9)
    assert not passed and "TOO SLOW" in lines[0] and "last known good" in lines[0]


def test_stall_once_slows_only_the_first_concurrent_round(procs):  # noqa: F811
    """The lab's transient stall: the first run's aggregate falls short, a second run's does not
    (what the rollout's confirming run relies on); single requests never start it."""
    port = free_port()
    proc = procs.start("sim", single_node_args(port, "--max-num-seqs", "8"),
                       env=sim_env(VLLM_SIM_TOKEN_DELAY="0.01", VLLM_SIM_FAULT="stall_once=1.5"))
    wait_health(port, proc)
    base_url = "http://127.0.0.1:%d" % port
    first = _run(base_url, concurrency=8, output_len=40)
    second = _run(base_url, concurrency=8, output_len=40)
    assert 70 <= first["single_stream_tok_s"] and 70 <= second["single_stream_tok_s"], (first, second)
    assert first["aggregate_tok_s"] < 0.6 * second["aggregate_tok_s"], (first, second)
    assert bench.gate(first, {"figures": second, "source": "x"}, 0.9)[0] is False
    assert bench.gate(second, {"figures": second, "source": "x"}, 0.9)[0] is True


def test_the_load_ends_within_its_bound_and_cut_requests_count_as_failed(procs):  # noqa: F811
    base_url = _serve(procs, free_port(), VLLM_SIM_TOKEN_DELAY="0.05")
    started = time.monotonic()
    # 200 tokens at 50 ms = 10 s per answer; the bound is 2 s.
    figures = _run(base_url, concurrency=2, single=1, output_len=200, bound=2)
    took = time.monotonic() - started
    assert took < 4, took
    assert figures["failed"] == figures["requests"] == 3
    assert any("bound" in error for error in figures["errors"])


def test_a_refused_key_is_a_failed_request_with_the_status(procs):  # noqa: F811
    port = free_port()
    proc = procs.start("sim", single_node_args(port, "--api-key", "k" * 20), env=sim_env())
    wait_health(port, proc)
    result = bench.stream_request("http://127.0.0.1:%d" % port, "dsv4", "wrong-key-0000000000",
                                  "hi", 8, 10)
    assert not result["ok"] and result["error"].startswith("HTTP 401")
    result = bench.stream_request("http://127.0.0.1:%d" % port, "dsv4", "k" * 20, "hi", 8, 10)
    assert result["ok"] and result["output_tokens"] == 8


def test_vllm_bench_serve_result_files_give_the_same_figures():
    # Keys as the pinned release's vllm/benchmarks/serve.py writes them with
    # --percentile-metrics ttft,tpot,itl --metric-percentiles 50,99.
    single = {"completed": 3, "failed": 0, "median_tpot_ms": 22.5, "median_ttft_ms": 41.0,
              "output_throughput": 43.0, "max_concurrency": 1, "errors": ["", "", ""]}
    aggregate = {"completed": 8, "failed": 1, "output_throughput": 301.7, "max_concurrency": 8,
                 "median_ttft_ms": 95.0, "p99_ttft_ms": 180.0, "median_itl_ms": 24.0, "p99_itl_ms": 61.5,
                 "errors": ["", "Timeout", "", "", "", "", "", "", ""]}
    figures = bench.from_vllm_bench(single, aggregate)
    assert figures["single_stream_tok_s"] == pytest.approx(1000 / 22.5, abs=0.01)
    assert figures["aggregate_tok_s"] == 301.7 and figures["concurrency"] == 8
    assert (figures["ttft_ms_p50"], figures["ttft_ms_p99"], figures["itl_ms_p50"], figures["itl_ms_p99"]) == (
        95.0, 180.0, 24.0, 61.5)
    assert (figures["requests"], figures["failed"], figures["errors"]) == (12, 1, ["Timeout"])


def test_the_vllm_bench_command_uses_only_options_the_pinned_release_has():
    argv = bench.vllm_bench_command("http://127.0.0.1:8000/", "m", "/model", 256, 128, 8, 24, "/out", "a.json")
    assert argv[:3] == ["vllm", "bench", "serve"]
    # The option strings of `vllm bench serve` in vLLM 0.33.0 (serve.py's
    # add_cli_args and datasets.py's add_dataset_parser).
    known = {"--backend", "--base-url", "--endpoint", "--model", "--tokenizer", "--dataset-name",
             "--random-input-len", "--random-output-len", "--ignore-eos", "--temperature", "--max-concurrency",
             "--num-prompts", "--percentile-metrics", "--metric-percentiles", "--save-result", "--result-dir",
             "--result-filename", "--disable-tqdm"}
    assert {a for a in argv if a.startswith("--")} <= known
    assert "--base-url" in argv and argv[argv.index("--base-url") + 1] == "http://127.0.0.1:8000"
    assert not any("key" in a.lower() for a in argv)


def _record(pair, single, aggregate, when, passed=True, kind="benchmark", profile="balanced", shape=None):
    return {"time": when, "kind": kind, "target": "pair", "pair": pair, "profile": profile, "image_id": "sha256:" + "ab" * 32,
            "passed": passed, "shape": shape or bench.shape_of(256, 128, 8),
            "figures": {"single_stream_tok_s": single, "aggregate_tok_s": aggregate, "ttft_ms_p50": 50.0,
                        "concurrency": 8, "requests": 11, "failed": 0}}


def test_the_reference_is_the_last_passing_record_of_the_pair_profile_and_shape():
    shape = bench.shape_of(256, 128, 8)
    history = [_record("b", 90.0, 600.0, 1000), _record("b", 99.0, 700.0, 2000),
               _record("b", 50.0, 300.0, 3000, passed=False, kind="gate"),
               _record("a", 10.0, 10.0, 4000), _record("b", 1.0, 1.0, 5000, profile="latency"),
               _record("b", 1.0, 1.0, 6000, shape=bench.shape_of(64, 32, 8))]
    ref = bench.reference(history, "b", "balanced", shape, {"aggregate_tok_s": 105.0})
    assert ref["figures"]["single_stream_tok_s"] == 99.0
    assert "pair b's last known good" in ref["source"] and "ababababab" in ref["source"]
    # No history for this shape: the profile's stated figures, only the gated ones.
    ref = bench.reference(history, "c", "balanced", shape, {"aggregate_tok_s": 105.0, "single_stream_tok_s": 0})
    assert ref == {"figures": {"aggregate_tok_s": 105.0}, "source": "profile balanced's stated figures"}
    assert bench.reference([], "c", "balanced", shape, {}) is None


def test_the_gate_names_both_figures_and_the_share():
    ref = {"figures": {"single_stream_tok_s": 100.0, "aggregate_tok_s": 700.0}, "source": "pair b's last known good"}
    passed, lines = bench.gate({"single_stream_tok_s": 95.0, "aggregate_tok_s": 680.0}, ref, 0.9)
    assert passed and lines[0] == ("single-stream decode 95.0 tok/s is 95% of 100.0 tok/s from pair b's last "
                                   "known good (needs 90%)")
    passed, lines = bench.gate({"single_stream_tok_s": 59.0, "aggregate_tok_s": 690.0}, ref, 0.9)
    assert not passed and lines[0].endswith(": TOO SLOW") and "59.0 tok/s is 59% of 100.0" in lines[0]
    passed, lines = bench.gate({"single_stream_tok_s": 59.0}, ref, 0.9, metrics=["aggregate_tok_s"])
    assert not passed and lines == ["aggregate decode 0.0 tok/s is 0% of 700.0 tok/s from pair b's last known good "
                                    "(needs 90%): TOO SLOW"]
    passed, lines = bench.gate({"single_stream_tok_s": 1.0}, None, 0.9)
    assert passed and "baseline" in lines[0]


def test_history_appends_draws_a_png_per_profile_and_writes_the_report(tmp_path):
    path = str(tmp_path / "history.jsonl")
    records = [_record("a", 100.0, 700.0, 1_790_000_000 + i * 600) for i in range(3)]
    records += [_record("b", 99.0, 690.0, 1_790_000_100), _record("b", 60.0, 420.0, 1_790_001_300, passed=False, kind="gate")]
    records[-1]["verdict"] = ["single-stream decode 60.0 tok/s is 61% of 99.0 tok/s (needs 90%): TOO SLOW"]
    bench.append_history(path, records[:2])
    bench.append_history(path, records[2:])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("not json\n")
    history = bench.load_history(path)
    assert len(history) == 5
    png = str(tmp_path / bench.png_name("balanced"))
    bench.draw_profile(history, "balanced", png)
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 20000
    report = bench.report_text(history, "lab")
    assert "![balanced](balanced.png)" in report
    assert "rolled back" in report and "TOO SLOW" in report
    table = [line for line in report.splitlines() if line.startswith("pair ")]
    assert [line.split()[:3] for line in table] == [["pair", "a", "balanced"], ["pair", "b", "balanced"]]


def test_summary_table_lines_up_and_shows_the_bound():
    lines = bench.summary_table([dict(_record("a", 100.0, 700.0, 0), elapsed_s=3.21, bound_s=120),
                                 dict(_record("b", 9.5, 70.0, 0), label="endpoint", elapsed_s=12.0, bound_s=240)])
    assert lines[0].startswith("target") and len({line.index("balanced") for line in lines[1:]}) == 1
    assert lines[1].endswith("3.2 s of 120 s") and lines[2].startswith("endpoint")


def test_module_documentation_parses():
    import yaml
    for name in ("sparkfleet_benchmark", "sparkfleet_benchmark_history"):
        with open(os.path.join(REPO, "plugins", "modules", name + ".py"), encoding="utf-8") as handle:
            text = handle.read()
        doc = yaml.safe_load(text.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])
        assert doc["module"] == name and doc["options"]
    assert json.dumps(bench.request_body("m", "p", 5))


# --- the module's vllm bench probe -------------------------------------------

def _load_benchmark_module():
    import importlib.util

    pytest.importorskip("ansible")
    import ansible.module_utils
    import sparkfleet_benchmark as bench_utils
    import sparkfleet_job_progress as progress_utils
    for name, module in (("sparkfleet_benchmark", bench_utils), ("sparkfleet_job_progress", progress_utils)):
        sys.modules.setdefault("ansible.module_utils." + name, module)
        setattr(ansible.module_utils, name, module)
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    spec = importlib.util.spec_from_file_location(
        "sparkfleet_benchmark_module", os.path.join(root, "plugins", "modules", "sparkfleet_benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vllm_bench_probe_names_the_cpu_platform_like_the_other_gpu_less_checks(monkeypatch):
    """Without VLLM_TARGET_DEVICE, a GPU-less `vllm bench serve --help` exits 1 ("Failed to infer
    device type"), so the probe always fell back to the client."""
    mod = _load_benchmark_module()
    seen = []

    class Done:
        returncode = 0

    def fake_run(argv, **_kw):
        seen.append(argv)
        return Done()

    monkeypatch.setattr(mod.shutil, "which", lambda _name: "/usr/bin/docker")
    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    assert mod.image_has_vllm_bench("sha256:" + "1" * 64)
    argv = seen[0]
    assert argv[argv.index("-e") + 1] == "VLLM_TARGET_DEVICE=cpu"
    assert argv.index("-e") < argv.index("--entrypoint") and "--gpus" not in argv
