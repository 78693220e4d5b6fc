"""sparkfleet against every real pinned vLLM release (its wheel, read, never imported).

Each wheel is downloaded once from PyPI into .cache/vllm and checked by sha256;
every test runs once per release files/vllm/releases.yml pins.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

import sparkfleet_vllm_args as vllm_args
import sparkfleet_vllm_check as vllm_check
import vllm_release
from test_vllm_args import HEAD, SERVICE, WORKER, compose, shipped_profiles


# `vllm serve` option strings per release (counted from each release's parser;
# ../shared/reference/vllm-facts.md gives the same figures).
OPTION_STRINGS = {"0.33.0": 485, "0.34.0": 496}


@pytest.fixture(scope="module", params=vllm_release.pinned_releases())
def version(request):
    return request.param


@pytest.fixture(scope="module")
def fingerprint(version):
    return vllm_release.fingerprint(version)


@pytest.fixture(scope="module")
def help_all(version):
    return vllm_release.real_help("all", version)


def test_every_pinned_release_has_its_option_count_here():
    assert sorted(OPTION_STRINGS) == vllm_release.pinned_releases()


def test_fingerprint_is_what_the_pinned_wheel_says(version):
    """Regenerate the fingerprint from the wheel: any difference fails."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "vllm-fingerprint"), "--check",
                             "--version", version],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_fingerprint_holds_what_the_gates_and_the_flag_check_rely_on(fingerprint, version):
    assert fingerprint["release"]["version"] == version
    serve = fingerprint["serve"]
    assert serve["usage"] == "usage: vllm serve [model_tag] [options]"
    assert serve["help"]["plain_lists_options"] is False and serve["help"]["all_option"] == "--help=all"
    flags = {f for o in serve["options"] for f in o["flags"] + o["hidden_flags"]}
    assert len(flags) == OPTION_STRINGS[version]
    assert {"--headless", "--master-addr", "--master-port", "--nnodes", "-n", "--node-rank", "-r",
            "--moe-backend", "--shutdown-timeout", "--no-enable-prefix-caching"} <= flags
    assert "--swap-space" not in flags
    assert fingerprint["health"] == {"path": "/health", "ok": 200, "engine_dead": 503}
    assert "VLLM_TRITON_MLA_SPARSE" not in fingerprint["env"]
    assert "VLLM_SKIP_INIT_MEMORY_CHECK" not in fingerprint["env"]
    assert "VLLM_USE_B12X_MOE" not in fingerprint["env"]
    assert "VLLM_WORKER_MULTIPROC_METHOD" in fingerprint["env"]
    assert fingerprint["deprecated_values"]["speculative_config.method"]["deepseek_mtp"] == "mtp"
    assert "cudagraph_mode" in fingerprint["json_configs"]["compilation_config"]["keys"]
    assert "FULL_AND_PIECEWISE" in fingerprint["json_configs"]["compilation_config"]["choices"]["cudagraph_mode"]


def test_plain_help_of_the_release_lists_no_option_and_the_check_says_so(version):
    text = vllm_release.real_help(None, version)
    assert text.startswith("usage: vllm serve [model_tag] [options]")
    assert "Config Groups" in text
    # The old scan found only --help in the description's "--help=ModelConfig".
    with pytest.raises(vllm_args.LaunchConfigError, match="--help=all"):
        vllm_check.Surface.from_help(text)


def test_help_all_of_the_release_reads_back_to_the_fingerprint(fingerprint, help_all):
    from_help = vllm_check.Surface.from_help(help_all)
    pinned = vllm_check.Surface.from_fingerprint(fingerprint)
    assert set(from_help.by_flag) == set(pinned.by_flag)
    for flag, (option, negated) in pinned.by_flag.items():
        seen, seen_negated = from_help.by_flag[flag]
        assert seen_negated == negated, flag
        assert vllm_check._arity(seen) == vllm_check._arity(option), flag
        if option["choices"] is not None:
            assert seen["choices"] == [str(c) for c in option["choices"]], flag
        assert (seen.get("known_values") or None) == (option.get("known_values") or None), flag


def profile_argvs():
    defaults, profiles = shipped_profiles()
    for name, profile in sorted(profiles.items()):
        composed = compose(defaults, profile)
        for node in (HEAD, WORKER):
            yield name, node["role"], composed, vllm_args.render_serve_args(composed, node, SERVICE)


@pytest.mark.parametrize("name, role, composed, argv", list(profile_argvs()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_profile_passes_the_release_on_both_checks(name, role, composed, argv, fingerprint, help_all):
    pinned = vllm_check.Surface.from_fingerprint(fingerprint)
    assert vllm_check.check_argv(argv, pinned) == ([], []), (name, role)
    assert vllm_check.check_argv(argv, vllm_check.Surface.from_help(help_all)) == ([], []), (name, role)
    assert vllm_check.unknown_env(composed["env"], fingerprint["env"]) == [], name


def test_a_misspelt_flag_is_named_with_the_nearest_real_one(fingerprint):
    defaults, profiles = shipped_profiles()
    composed = compose(defaults, {**profiles["balanced"], "extra_args": ["--max-num-seqz", "8"]})
    argv = vllm_args.render_serve_args(composed, HEAD, SERVICE)
    problems, _ = vllm_check.check_argv(argv, vllm_check.Surface.from_fingerprint(fingerprint))
    assert problems == ["--max-num-seqz is not a `vllm serve` option of vLLM %s (pinned fingerprint); "
                        "nearest: --max-num-seqs" % fingerprint["release"]["version"]]


@pytest.mark.parametrize("argv, expected", [
    (["m", "--swap-space", "4"], "--swap-space is not a `vllm serve` option"),
    (["m", "--kv-cache-dtype", "fp9"], "--kv-cache-dtype: 'fp9' is not one of the values this release knows"),
    (["m", "--moe-backend", "b12x_flashinfer"], "--moe-backend: invalid choice 'b12x_flashinfer'"),
    (["m", "--compilation-config", '{"cudagraph_mod": "FULL"}'],
     "--compilation-config has key 'cudagraph_mod', which CompilationConfig does not know (nearest: cudagraph_mode)"),
    (["m", "--compilation-config", '{"cudagraph_mode": "FULLX"}'], "--compilation-config cudagraph_mode is 'FULLX'"),
    (["m", "--speculative-config", '{"method": "mtp", "num_speculative_token": 2}'],
     "--speculative-config has key 'num_speculative_token'"),
    (["m", "--speculative-config.method", "mtpx"], "--speculative-config method is 'mtpx'"),
    (["m", "--speculative-config", "{method:mtp}"], "--speculative-config: invalid JSON value"),
    (["m", "--max-model-len", "abc"], "--max-model-len: invalid human_int_or_auto value 'abc'"),
    (["m", "--gpu-memory-utilization", "x"], "--gpu-memory-utilization: invalid float value 'x'"),
    (["m", "--enable-prefix-caching=1"], "--enable-prefix-caching takes no value"),
])
def test_the_pinned_release_refuses_what_real_vllm_refuses(argv, expected, fingerprint):
    problems, _ = vllm_check.check_argv(argv, vllm_check.Surface.from_fingerprint(fingerprint))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("argv", [
    ["m", "--max_model_len", "8192"],
    ["m", "--max-model-len", "auto"],
    ["m", "--max-model-len", "200k"],
    ["m", "--no-enable-prefix-caching", "--disable-prefix-caching", "--enable-prefix-caching"],
    ["m", "--speculative-config.method", "mtp", "--speculative-config.num_speculative_tokens", "2"],
    ["m", "--moe-backend", "FlashInfer-B12X"],
    ["m", "-tp", "2", "-n", "2", "-r", "1", "--headless"],
    ["m", "--compilation-config", '{"cudagraph_mode": "full_and_piecewise"}'],
])
def test_the_pinned_release_accepts_the_forms_real_vllm_accepts(argv, fingerprint):
    assert vllm_check.check_argv(argv, vllm_check.Surface.from_fingerprint(fingerprint))[0] == []


def test_deprecated_speculative_method_is_a_warning_naming_the_new_one(fingerprint):
    problems, warnings = vllm_check.check_argv(
        ["m", "--speculative-config", json.dumps({"method": "deepseek_mtp", "num_speculative_tokens": 2})],
        vllm_check.Surface.from_fingerprint(fingerprint))
    assert problems == []
    assert warnings == ["--speculative-config method 'deepseek_mtp' is deprecated in vLLM %s and replaced "
                        "with 'mtp'" % fingerprint["release"]["version"]]


def test_unknown_vllm_variables_are_named_with_the_nearest(fingerprint):
    found = vllm_check.unknown_env({"VLLM_SKIP_INIT_MEMORY_CHECK": "1", "VLLM_WORKER_MULTIPROC_METHD": "spawn",
                                   "NCCL_DEBUG": "INFO", "VLLM_HOST_IP": "1.2.3.4"}, fingerprint["env"])
    assert found[1] == ("VLLM_WORKER_MULTIPROC_METHD", "VLLM_WORKER_MULTIPROC_METHOD")
    assert [name for name, _ in found] == ["VLLM_SKIP_INIT_MEMORY_CHECK", "VLLM_WORKER_MULTIPROC_METHD"]


def test_overlay_targets_in_the_fingerprint_are_the_wheel_files(fingerprint, version):
    import hashlib

    import yaml

    with open(os.path.join(ROOT, "files", "overlay", "manifest.yml"), encoding="utf-8") as handle:
        targets = {e["target"] for e in yaml.safe_load(handle)["entries"]}
    assert set(fingerprint["files"]) == targets
    with vllm_release.wheel(version) as wheel:
        for path, meta in fingerprint["files"].items():
            assert hashlib.sha256(wheel.read_bytes(path)).hexdigest() == meta["sha256"]


def test_what_the_gates_read_is_what_the_release_writes(fingerprint):
    """The health gate's metric names and log patterns, against the release's sources."""
    import sparkfleet_health as health

    lines = fingerprint["log_lines"]
    # vLLM formats the line with the pool name "GPU" on CUDA and comma-grouped tokens.
    kv_line = lines["kv_cache_size"]["text"] % ("GPU", "{:,}".format(3215872))
    assert health.KV_CACHE_LINE.search(kv_line).group(1) == "3,215,872"
    source = open(os.path.join(ROOT, "plugins", "module_utils", "sparkfleet_health.py"), encoding="utf-8").read()
    read = set(__import__("re").findall(r'"(vllm:[a-z_]+)"', source))
    assert read, "the gate reads no vLLM metric?"
    for name in read:
        # prometheus_client adds _total to counters at exposition.
        assert name in fingerprint["metrics"] or name[:-len("_total")] in fingerprint["metrics"], name
    # The unit's read-ahead restore waits for any of these, named by key and
    # taken from the fingerprint, so every load format ends the wait.
    role_vars = open(os.path.join(ROOT, "roles", "spark_service", "vars", "main.yml"), encoding="utf-8").read()
    keys = __import__("re").search(r"spark_service_weights_loaded_lines: >-\n\s+\{\{.*?\[([^\]]+)\]", role_vars).group(1)
    waited = [key.strip().strip("'") for key in keys.split(",")]
    assert waited == ["loading_weights_took", "model_loading_took", "init_engine_took"]
    assert all(key in lines for key in waited)


def test_every_metric_the_simulator_exports_is_one_the_release_declares(fingerprint):
    """The lab's /metrics speaks the release's names (prometheus_client adds _total to counters)."""
    import re

    with open(os.path.join(ROOT, "lab", "vllm_sim", "vllm_sim", "server.py"), encoding="utf-8") as handle:
        exported = set(re.findall(r'metric\("(vllm:[a-z_]+)"', handle.read()))
    assert len(exported) >= 12
    for name in sorted(exported):
        base = name[:-len("_total")] if name.endswith("_total") else name
        assert base in fingerprint["metrics"], "%s: not a metric of vLLM %s" % (name, fingerprint["release"]["version"])


def test_the_simulators_histogram_buckets_are_the_releases(version):
    """The bucket boundaries the simulator's /metrics uses are the release's defaults
    (vllm/v1/metrics/buckets.py), so a TTFT or ITL quantile the alerts and graphs read from the
    lab falls in the buckets a real head would report."""
    import ast  # pylint: disable=import-outside-toplevel

    sys.path.insert(0, os.path.join(ROOT, "lab", "vllm_sim"))
    from vllm_sim import server  # pylint: disable=import-outside-toplevel

    source = vllm_release.wheel(version).read_bytes("vllm/v1/metrics/buckets.py").decode()
    release = {}
    for node in ast.parse(source).body:
        target = getattr(node, "target", None) or (node.targets[0] if getattr(node, "targets", None) else None)
        if isinstance(target, ast.Name) and target.id.endswith("_BUCKETS") and node.value is not None:
            release[target.id] = [float(v) for v in ast.literal_eval(node.value)]
    assert release["REQUEST_LATENCY_BUCKETS"] == server.E2E_BUCKETS
    assert release["TIME_TO_FIRST_TOKEN_BUCKETS"] == server.TTFT_BUCKETS
    assert release["INTER_TOKEN_LATENCY_BUCKETS"] == server.ITL_BUCKETS
