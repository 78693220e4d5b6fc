import json

import pytest

import sparkfleet_vllm_check as vllm_check
import sparkfleet_vllm_profile as vllm_profile
from sparkfleet_vllm_args import LaunchConfigError, render_env, render_serve_args

HEAD = {"pair": "a", "role": "head", "rank": 0, "nnodes": 2, "master_addr": "10.0.0.1"}
WORKER = {"pair": "a", "role": "worker", "rank": 1, "nnodes": 2, "master_addr": "10.0.0.1"}
SERVICE = {"model": "deepseek-ai/DeepSeek-V4-Flash", "served_model_name": "deepseek-v4-flash",
           "api_host": "0.0.0.0", "api_port": 8000, "master_port": 29501, "shutdown_timeout": 60}
PROFILE = {
    "max_model_len": 131072, "max_num_seqs": 8, "gpu_memory_utilization": 0.88,
    "kv_cache_dtype": "fp8", "block_size": 256, "enable_prefix_caching": True,
    "enable_expert_parallel": True,
    "speculative_config": {"method": "mtp", "num_speculative_tokens": 2},
    "compilation_config": {"cudagraph_mode": "FULL_AND_PIECEWISE", "custom_ops": ["all"]},
    "generation": {"temperature": 0.6, "top_p": 0.95},
}


def value_of(args, flag):
    return args[args.index(flag) + 1]


def test_head_args_serve_the_api_and_are_rank_0():
    args = render_serve_args(PROFILE, HEAD, SERVICE)
    assert args[0] == "deepseek-ai/DeepSeek-V4-Flash"
    assert "--headless" not in args
    assert value_of(args, "--node-rank") == "0"
    assert value_of(args, "--nnodes") == "2"
    assert value_of(args, "--master-addr") == "10.0.0.1"
    assert value_of(args, "--distributed-executor-backend") == "mp"
    assert value_of(args, "--port") == "8000"
    assert value_of(args, "--served-model-name") == "deepseek-v4-flash"


def test_worker_args_are_headless_rank_1_without_api():
    args = render_serve_args(PROFILE, WORKER, SERVICE)
    assert "--headless" in args
    assert value_of(args, "--node-rank") == "1"
    assert "--port" not in args and "--served-model-name" not in args


def test_json_flags_are_single_argv_elements_that_parse_back():
    args = render_serve_args(PROFILE, HEAD, SERVICE)
    spec = value_of(args, "--speculative-config")
    assert json.loads(spec) == {"method": "mtp", "num_speculative_tokens": 2}
    assert json.loads(value_of(args, "--compilation-config"))["custom_ops"] == ["all"]
    assert json.loads(value_of(args, "--override-generation-config"))["top_p"] == 0.95
    assert value_of(args, "--generation-config") == "vllm"


def test_enforce_eager_needs_explicit_permission():
    with pytest.raises(LaunchConfigError, match="--enforce-eager disables CUDA graphs"):
        render_serve_args({**PROFILE, "enforce_eager": True}, HEAD, SERVICE)
    args = render_serve_args({**PROFILE, "enforce_eager": True}, HEAD, {**SERVICE, "allow_enforce_eager": True})
    assert "--enforce-eager" in args


@pytest.mark.parametrize("extra", [["--headless"], ["--node-rank", "1"], ["--master-port=1"]])
def test_extra_args_cannot_override_topology(extra):
    with pytest.raises(LaunchConfigError, match="extra_args may not set"):
        render_serve_args({**PROFILE, "extra_args": extra}, HEAD, SERVICE)


def test_rank_must_match_role():
    with pytest.raises(LaunchConfigError, match="rank 1 does not match role head"):
        render_serve_args(PROFILE, {**HEAD, "rank": 1}, SERVICE)
    with pytest.raises(LaunchConfigError, match="outside 0..1"):
        render_serve_args(PROFILE, {**WORKER, "rank": 2, "role": "worker"}, SERVICE)


def test_json_flag_must_be_a_mapping():
    with pytest.raises(LaunchConfigError, match="--speculative-config must be a mapping"):
        render_serve_args({**PROFILE, "speculative_config": '{method:mtp}'}, HEAD, SERVICE)


def test_env_refuses_fork_and_adds_host_ip():
    with pytest.raises(LaunchConfigError, match="ShmRingBuffer"):
        render_env({"VLLM_WORKER_MULTIPROC_METHOD": "fork"})
    env = dict(render_env({"B": 1, "A": True}, "10.0.0.2"))
    assert env == {"A": "1", "B": "1", "VLLM_HOST_IP": "10.0.0.2"}
    with pytest.raises(LaunchConfigError, match="newline"):
        render_env({"A": "x\ny"})
    with pytest.raises(LaunchConfigError, match="not a valid variable name"):
        render_env({"A-B": "x"})


def test_classic_help_listing_is_read_with_arity_and_negations():
    text = """usage: vllm serve [model_tag] [options]

options:
  -h, --help            show this help message and exit
  --host HOST           Host name.
  --port PORT           Port number.
  --enable-prefix-caching, --disable-prefix-caching
  --enforce-eager, --no-enforce-eager
  --headless            Run in headless mode.
  --served-model-name SERVED_MODEL_NAME [SERVED_MODEL_NAME ...]
  --hf-token [HF_TOKEN]
  --moe-backend {auto,triton}
  --kv-cache-dtype ['auto', 'fp8']
                        --not-a-flag mentioned in prose
"""
    surface = vllm_check.Surface.from_help(text)
    assert "--not-a-flag" not in surface.by_flag
    assert surface.by_flag["--no-enable-prefix-caching"][1] is True  # hidden, still accepted
    assert surface.by_flag["--disable-prefix-caching"][1] is True
    assert surface.by_flag["--no-enforce-eager"][1] is True
    problems, _ = vllm_check.check_argv(
        ["m", "--port=1", "--host", "x", "--served-model-name", "a", "b", "--hf-token", "--headless",
         "--no-enable-prefix-caching", "--moe-backend", "triton", "--kv-cache-dtype", "fp8"], surface)
    assert problems == []
    problems, _ = vllm_check.check_argv(["m", "--prot", "1", "--moe-backend", "b12", "--kv-cache-dtype", "fp9",
                                        "--headless", "yes"], surface)
    assert problems[0].startswith("--prot is not a `vllm serve` option") and "nearest: --port" in problems[0]
    assert any("--moe-backend: invalid choice 'b12'" in p for p in problems)
    assert any("'fp9' is not one of the values this release knows" in p for p in problems)
    assert any("unexpected extra positional argument 'yes'" in p for p in problems)


def test_grouped_help_without_options_is_refused_with_the_fix():
    with pytest.raises(LaunchConfigError, match="ask it for `--help=all`"):
        vllm_check.Surface.from_help("usage: vllm serve [model_tag] [options]\n\nConfig Groups:\n  ModelConfig\n")
    with pytest.raises(LaunchConfigError, match="could not read any option"):
        vllm_check.Surface.from_help("no flags here")


def shipped_profiles():
    import os
    import yaml
    path = os.path.join(os.path.dirname(__file__), "..", "..", "group_vars", "all", "profiles.yml")
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    return data["sparkfleet_profile_defaults"], data["sparkfleet_profiles"]


def compose(defaults, profile):
    from sparkfleet_vllm_profile import compose_profile
    return compose_profile(defaults, profile)


def test_shipped_profiles_are_valid_and_render_for_both_ranks():
    from sparkfleet_vllm_profile import profile_errors
    defaults, profiles = shipped_profiles()
    assert set(profiles) == {"latency", "balanced", "throughput", "long_context_1m"}
    for name, profile in profiles.items():
        composed = compose(defaults, profile)
        assert profile_errors(name, composed) == []
        for node in (HEAD, WORKER):
            render_serve_args(composed, node, SERVICE)
        render_env(composed["env"])


@pytest.mark.parametrize("change, message", [
    ({"gpu_memory_utilization": 0.99}, "gpu_memory_utilization is 0.99, above the maximum 0.95"),
    ({"max_num_seqs": "8"}, "max_num_seqs must be int, got '8'"),
    ({"block_size": 100}, "block_size is 100; allowed:"),
    ({"enable_expert_parallel": 1}, "enable_expert_parallel must be bool"),
    ({"max_num_batched_tokens": True}, "max_num_batched_tokens must be int"),
    ({"max_model_len_typo": 1}, "max_model_len_typo is not a profile setting"),
    ({"speculative_config": {"method": "mtp", "num_speculative_tokens": 0}}, "num_speculative_tokens must be 1..8"),
    ({"extra_args": ["--hf-overrides", "{rope_scaling:x}"]}, "extra_args --hf-overrides value '{rope_scaling:x}' is not valid JSON"),
    ({"extra_args": ["--kv-transfer-config=[1]"]}, "value must be a JSON object"),
    ({"model": "fraserprice/DeepSeek-V4-Flash-DSpark"},
     "profile balanced: model is not a profile setting: vLLM always serves the pair's checkpoint from its local mount "
     "(/models/<basename of sparkfleet_model_dir>, offline); name the hub repository the profile needs in "
     "checkpoint: and set sparkfleet_model and sparkfleet_model_dir on the pair"),
    ({"model": "/models/DeepSeek-V4-Flash"}, "profile balanced: model is not a profile setting: vLLM always serves"),
    ({"checkpoint": "/var/lib/sparkfleet/models/DeepSeek-V4-Flash-DSpark"},
     "profile balanced: checkpoint is '/var/lib/sparkfleet/models/DeepSeek-V4-Flash-DSpark'; must be a hub "
     "repository ID, owner/name (the pair's sparkfleet_model must name it)"),
    ({"checkpoint": "DeepSeek-V4-Flash-DSpark"}, "checkpoint is 'DeepSeek-V4-Flash-DSpark'; must be a hub repository ID"),
    ({"checkpoint": "org/name\n"}, "checkpoint is 'org/name\\n'; must be a hub repository ID"),
    ({"checkpoint": 7}, "checkpoint must be str, got 7"),
])
def test_profile_spec_refuses_bad_values_with_the_field(change, message):
    from sparkfleet_vllm_profile import profile_errors
    defaults, profiles = shipped_profiles()
    errors = profile_errors("balanced", {**compose(defaults, profiles["balanced"]), **change})
    assert any(message in e for e in errors), errors


def test_a_profile_names_its_checkpoint_and_never_a_model():
    """A profile says which hub repository it needs; the argv's model is always the mounted local checkpoint."""
    from sparkfleet_vllm_profile import profile_errors
    defaults, profiles = shipped_profiles()
    assert not any("model" in profile for profile in profiles.values())
    assert profiles["long_context_1m"]["checkpoint"] == "fraserprice/DeepSeek-V4-Flash-DSpark"
    composed = compose(defaults, profiles["long_context_1m"])
    assert profile_errors("long_context_1m", composed) == []
    args = render_serve_args(composed, HEAD, dict(SERVICE, model="/models/DeepSeek-V4-Flash-DSpark"))
    assert args[0] == "/models/DeepSeek-V4-Flash-DSpark"
    assert "fraserprice/DeepSeek-V4-Flash-DSpark" not in args


def test_max_answer_tokens_is_vllms_server_wide_max_new_tokens():
    args = render_serve_args(dict(PROFILE, max_answer_tokens=16384), HEAD, SERVICE)
    assert value_of(args, "--generation-config") == "vllm"
    assert json.loads(value_of(args, "--override-generation-config")) == {
        "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 16384}
    with pytest.raises(LaunchConfigError, match="set max_answer_tokens only"):
        render_serve_args(dict(PROFILE, max_answer_tokens=100, generation={"max_new_tokens": 200}), HEAD, SERVICE)


@pytest.mark.parametrize("profile, cap, bound", [
    ({"max_answer_tokens": 16384, "decode_tok_s_per_stream": 44.5}, 900, 399),   # 368.2 s + 30, rounded up
    ({"max_answer_tokens": 16384, "decode_tok_s_per_stream": 10.2}, 900, 900),   # 1607 s + 30: capped
    ({"max_answer_tokens": 12000, "decode_tok_s_per_stream": 100.0}, 150, 150),
    ({"max_answer_tokens": 3000, "decode_tok_s_per_stream": 100.0}, 150, 60),
    ({}, 900, 900),  # no figures: the cap is the bound
])
def test_drain_bound_is_the_longest_answer_at_the_decode_rate_capped(profile, cap, bound):
    assert vllm_profile.drain_bound(profile, cap) == bound


def test_every_shipped_profile_states_its_decode_rate():
    import os
    import yaml
    from conftest import ROOT
    with open(os.path.join(ROOT, "group_vars", "all", "profiles.yml"), encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    for name, profile in data["sparkfleet_profiles"].items():
        composed = dict(data["sparkfleet_profile_defaults"], **profile)
        assert composed.get("decode_tok_s_per_stream") and composed.get("max_answer_tokens"), name
        assert vllm_profile.profile_errors(name, composed) == []
