# -*- coding: utf-8 -*-
"""The launch profile schema (group_vars/all/profiles.yml): each key's type and domain, the
settings refused on a Spark pair, and the drain bound a profile implies.

Pure functions, no Ansible imports: used by the filter plugin, preflight and unit tests.
"""

from __future__ import annotations

import json
import math
import re

from sparkfleet_vllm_args import JSON_FLAGS, LaunchConfigError


# The profile's argument spec: type, allowed values and ranges per field.
# Checked on the controller before any host is touched.
PROFILE_SPEC = {
    "description": {"type": str},
    # The hub repository the profile needs (owner/name), when it needs one
    # checkpoint in particular. It is never put on the command line: vLLM
    # always serves the pair's own checkpoint from its local mount (offline).
    # Preflight refuses a pair whose sparkfleet_model is another one.
    "checkpoint": {"type": str, "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$",
                   "form": "a hub repository ID, owner/name (the pair's sparkfleet_model must name it)"},
    "tensor_parallel_size": {"type": int, "min": 1, "max": 8},
    "pipeline_parallel_size": {"type": int, "min": 1, "max": 8},
    "max_model_len": {"type": int, "min": 1024, "max": 1048576},
    "max_num_seqs": {"type": int, "min": 1, "max": 256},
    "max_num_batched_tokens": {"type": int, "min": 256, "max": 131072},
    "gpu_memory_utilization": {"type": float, "min": 0.1, "max": 0.95},
    # Allowed values of vLLM's own settings come from the pinned release's
    # fingerprint (check_argv), not from a list typed here.
    "kv_cache_dtype": {"type": str},
    "block_size": {"type": int, "choices": (16, 32, 64, 128, 256)},
    "enable_prefix_caching": {"type": bool},
    "trust_remote_code": {"type": bool},
    "enable_expert_parallel": {"type": bool},
    "enable_auto_tool_choice": {"type": bool},
    "enforce_eager": {"type": bool},
    "tokenizer_mode": {"type": str},
    "tool_call_parser": {"type": str},
    "reasoning_parser": {"type": str},
    "load_format": {"type": str},
    "safetensors_load_strategy": {"type": str},
    "moe_backend": {"type": str},
    "speculative_config": {"type": dict},
    "compilation_config": {"type": dict},
    "generation": {"type": dict},
    "env": {"type": dict},
    "extra_args": {"type": list},
    "min_kv_cache_tokens": {"type": int, "min": 0},
    # The longest answer a request gets (vLLM's server-wide max_new_tokens),
    # and how fast one stream decodes on a full pair: together they give the
    # drain bound (drain_bound below).
    "max_answer_tokens": {"type": int, "min": 16, "max": 1048576},
    "decode_tok_s_per_stream": {"type": float, "min": 0.1, "max": 10000.0},
    "min_spec_acceptance": {"type": float, "min": 0.0, "max": 16.0},
    # What the profile's authors measured on real Sparks (sparkfleet's
    # benchmark shape): the rollout's performance gate compares a pair with
    # no benchmark history against these.
    "expected_single_stream_tok_s": {"type": float, "min": 0.0, "max": 100000.0},
    "expected_aggregate_tok_s": {"type": float, "min": 0.0, "max": 1000000.0},
}
# Keys a profile may not carry, with the reason and what to write instead.
PROFILE_REFUSED = {
    # The model argument is always the pair's checkpoint at its local mount,
    # /models/<basename of sparkfleet_model_dir>, loaded with HF_HUB_OFFLINE=1.
    # A hub ID there cannot start offline, and a path there duplicates the
    # mount (derived per host from sparkfleet_model_dir) and drifts from it.
    "model": ("is not a profile setting: vLLM always serves the pair's checkpoint from its local mount "
              "(/models/<basename of sparkfleet_model_dir>, offline); name the hub repository the profile "
              "needs in checkpoint: and set sparkfleet_model and sparkfleet_model_dir on the pair"),
}
JSON_FLAG_NAMES = frozenset(flag for _, flag in JSON_FLAGS) | {
    "--override-generation-config", "--hf-overrides", "--kv-transfer-config", "-cc", "-sc"}


def compose_profile(defaults, profile, overrides=None):
    """A profile over sparkfleet_profile_defaults (then a pair's overrides), merged the way
    group_vars/all/fleet.yml merges them with Ansible's combine(recursive=True)."""
    def merge(base, over):
        out = dict(base)
        for key, value in (over or {}).items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
                else value
        return out
    return merge(merge(defaults, profile), overrides)


def profile_errors(name, profile):
    """Every problem with a composed profile, as messages naming the field."""
    errors = []
    for key in sorted(profile):
        rule = PROFILE_SPEC.get(key)
        value = profile[key]
        where = "profile %s: %s" % (name, key)
        if key in PROFILE_REFUSED:
            errors.append("%s %s" % (where, PROFILE_REFUSED[key]))
            continue
        if rule is None:
            errors.append("%s is not a profile setting (known: %s)" % (where, ", ".join(sorted(PROFILE_SPEC))))
            continue
        if value is None:
            continue
        kind = rule["type"]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            errors.append("%s must be %s, got %r" % (where, kind.__name__, profile[key]))
            continue
        if "pattern" in rule and not re.fullmatch(rule["pattern"], value):
            errors.append("%s is %r; must be %s" % (where, value, rule["form"]))
        if "choices" in rule and value not in rule["choices"]:
            errors.append("%s is %r; allowed: %s" % (where, value, ", ".join(map(str, rule["choices"]))))
        if "min" in rule and value < rule["min"]:
            errors.append("%s is %s, below the minimum %s" % (where, value, rule["min"]))
        if "max" in rule and value > rule["max"]:
            errors.append("%s is %s, above the maximum %s" % (where, value, rule["max"]))
    spec = profile.get("speculative_config")
    if isinstance(spec, dict) and spec:
        # The method's allowed values are the release's (check_argv); the
        # token count is sparkfleet's own bound for a Spark pair.
        tokens = spec.get("num_speculative_tokens")
        if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= 8:
            errors.append("profile %s: speculative_config.num_speculative_tokens must be 1..8, got %r"
                          % (name, tokens))
    extra = profile.get("extra_args") or []
    if isinstance(extra, list):
        for i, arg in enumerate(extra):
            flag = str(arg).split("=", 1)[0]
            if flag in JSON_FLAG_NAMES:
                value = str(arg).split("=", 1)[1] if "=" in str(arg) else (str(extra[i + 1]) if i + 1 < len(extra) else "")
                try:
                    parsed = json.loads(value)
                except ValueError as exc:
                    errors.append("profile %s: extra_args %s value %r is not valid JSON (%s); "
                                  "write it as YAML data in the profile instead" % (name, flag, value, exc))
                    continue
                if not isinstance(parsed, dict):
                    errors.append("profile %s: extra_args %s value must be a JSON object" % (name, flag))
    return errors


# Seconds a request may wait before its first token (queue, prefill) on top
# of its decode time, in the drain bound.
DRAIN_MARGIN_S = 30


def drain_bound(profile, cap, margin=DRAIN_MARGIN_S):
    """Seconds a stop waits for in-flight answers: the longest answer the
    profile allows (max_answer_tokens) at its per-stream decode rate on a full
    pair (decode_tok_s_per_stream), plus a margin, at most ``cap``. Without
    both figures the cap is the bound."""
    cap = int(cap)
    if cap < 1:
        raise LaunchConfigError("the drain cap must be at least 1 s, got %s" % cap)
    tokens, rate = profile.get("max_answer_tokens"), profile.get("decode_tok_s_per_stream")
    if not tokens or not rate:
        return cap
    return int(min(cap, math.ceil(float(tokens) / float(rate)) + int(margin)))
