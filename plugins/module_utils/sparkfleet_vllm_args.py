# -*- coding: utf-8 -*-
"""Render the exact ``vllm serve`` argv and environment for one node of a pair.

Arguments are produced as a list (one element per argv entry) and handed to
``docker run`` without any shell in between, so JSON-valued flags keep their
quotes. JSON values are generated from YAML data and parsed back before they
are accepted. Settings known to break a Spark pair are refused with the reason.

Pure functions, no Ansible imports: used by the filter plugin and unit tests.
"""

from __future__ import annotations

import json
import re

# Profile keys rendered as plain ``--flag value`` pairs.
VALUE_FLAGS = (
    ("max_model_len", "--max-model-len"),
    ("max_num_seqs", "--max-num-seqs"),
    ("max_num_batched_tokens", "--max-num-batched-tokens"),
    ("gpu_memory_utilization", "--gpu-memory-utilization"),
    ("kv_cache_dtype", "--kv-cache-dtype"),
    ("block_size", "--block-size"),
    ("tokenizer_mode", "--tokenizer-mode"),
    ("tool_call_parser", "--tool-call-parser"),
    ("reasoning_parser", "--reasoning-parser"),
    ("load_format", "--load-format"),
    ("safetensors_load_strategy", "--safetensors-load-strategy"),
    ("moe_backend", "--moe-backend"),
)
# Profile keys rendered as switches when true.
SWITCH_FLAGS = (
    ("enable_prefix_caching", "--enable-prefix-caching"),
    ("trust_remote_code", "--trust-remote-code"),
    ("enable_expert_parallel", "--enable-expert-parallel"),
    ("enable_auto_tool_choice", "--enable-auto-tool-choice"),
    ("enforce_eager", "--enforce-eager"),
)
# Profile keys rendered as JSON-valued flags.
JSON_FLAGS = (
    ("speculative_config", "--speculative-config"),
    ("compilation_config", "--compilation-config"),
)
# Flags sparkfleet derives from the inventory; a profile may not set them.
MANAGED_FLAGS = frozenset(
    (
        "--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp",
        "--distributed-executor-backend", "--nnodes", "--node-rank",
        "--master-addr", "--master-port", "--headless", "--host", "--port",
        "--served-model-name", "--api-key", "--model", "--generation-config",
        "--override-generation-config", "--shutdown-timeout",
    )
)
# Environment settings that are known to break a pair, with the reason.
FORBIDDEN_ENV = {
    ("VLLM_WORKER_MULTIPROC_METHOD", "fork"): (
        "fork breaks the multiproc executor on a Spark pair: the engine dies at start with "
        "\"'ShmRingBuffer' object has no attribute 'shared_memory'\"; use spawn"
    ),
}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LaunchConfigError(ValueError):
    """A launch setting is invalid or known to break the pair."""


def json_flag_value(flag, value):
    """Serialise a mapping for a JSON-valued flag and prove it parses back."""
    if not isinstance(value, dict):
        raise LaunchConfigError("%s must be a mapping, got %r" % (flag, value))
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if json.loads(text) != value:
        raise LaunchConfigError("%s does not survive a JSON round trip: %r" % (flag, value))
    return text


def _flag_names(args):
    return [a.split("=", 1)[0] for a in args if isinstance(a, str) and a.startswith("-")]


def render_serve_args(profile, node, service):
    """Return the argv after ``vllm serve`` for one node.

    ``profile``: the chosen launch profile (see group_vars/all/profiles.yml).
    ``node``: topology view from sparkfleet_topology.node_view.
    ``service``: model, served_model_name, api_host, api_port, master_port,
    shutdown_timeout, allow_enforce_eager.
    """
    role = node["role"]
    if role not in ("head", "worker"):
        raise LaunchConfigError("unknown node role %r" % role)
    rank = int(node["rank"])
    if (role == "head") != (rank == 0):
        raise LaunchConfigError(
            "rank %d does not match role %s: the head is rank 0, the worker rank 1" % (rank, role)
        )
    nnodes = int(node["nnodes"])
    if not 0 <= rank < nnodes:
        raise LaunchConfigError("node rank %d is outside 0..%d" % (rank, nnodes - 1))

    if profile.get("enforce_eager") and not service.get("allow_enforce_eager"):
        raise LaunchConfigError(
            "--enforce-eager disables CUDA graphs (decode drops from ~44 to ~25 tok/s); "
            "set spark_service_allow_enforce_eager: true to use it on purpose"
        )

    args = [str(service["model"])]
    tp = int(profile.get("tensor_parallel_size", nnodes))
    args += [
        "--tensor-parallel-size", str(tp),
        "--pipeline-parallel-size", str(int(profile.get("pipeline_parallel_size", 1))),
        "--distributed-executor-backend", "mp",
        "--nnodes", str(nnodes),
        "--node-rank", str(rank),
        "--master-addr", str(node["master_addr"]),
        "--master-port", str(int(service["master_port"])),
    ]
    if role == "worker":
        args.append("--headless")
    else:
        args += [
            "--host", str(service["api_host"]),
            "--port", str(int(service["api_port"])),
            "--served-model-name", str(service["served_model_name"]),
        ]
    for key, flag in VALUE_FLAGS:
        if profile.get(key) not in (None, ""):
            args += [flag, str(profile[key])]
    for key, flag in SWITCH_FLAGS:
        if profile.get(key):
            args.append(flag)
    for key, flag in JSON_FLAGS:
        if profile.get(key):
            args += [flag, json_flag_value(flag, profile[key])]
    generation = dict(profile.get("generation") or {})
    if profile.get("max_answer_tokens"):
        if "max_new_tokens" in generation and generation["max_new_tokens"] != profile["max_answer_tokens"]:
            raise LaunchConfigError("generation.max_new_tokens and max_answer_tokens disagree; set "
                                    "max_answer_tokens only (the drain bound is derived from it)")
        # vLLM's server-wide output limit (get_max_tokens): the longest answer
        # any request gets, so the drain bound derived from it holds.
        generation["max_new_tokens"] = int(profile["max_answer_tokens"])
    if generation:
        # Sampling defaults decide whether output stays clean; vLLM's own
        # generation config plus an explicit override is the known-good shape.
        args += ["--generation-config", "vllm",
                 "--override-generation-config",
                 json_flag_value("--override-generation-config", generation)]
    if service.get("shutdown_timeout"):
        args += ["--shutdown-timeout", str(int(service["shutdown_timeout"]))]

    extra = [str(a) for a in (profile.get("extra_args") or [])]
    clash = sorted(set(_flag_names(extra)) & MANAGED_FLAGS)
    if clash:
        raise LaunchConfigError(
            "extra_args may not set %s: sparkfleet derives these from the inventory "
            "and the profile" % ", ".join(clash)
        )
    args += extra

    headless = "--headless" in args
    if role == "head" and headless:
        raise LaunchConfigError("--headless on the head: rank 0 must serve the API")
    if role == "worker" and not headless:
        raise LaunchConfigError("the worker must run --headless or both nodes bind the TCPStore port")
    return args


def render_env(env, node_ip=None):
    """Validate and order the container environment; return ``[(name, value)]``."""
    merged = dict(env or {})
    if node_ip:
        merged.setdefault("VLLM_HOST_IP", node_ip)
    out = []
    for name in sorted(merged):
        value = merged[name]
        if not ENV_NAME.match(str(name)):
            raise LaunchConfigError("environment name %r is not a valid variable name" % name)
        if isinstance(value, bool):
            value = "1" if value else "0"
        value = "" if value is None else str(value)
        if "\n" in value or "\r" in value:
            raise LaunchConfigError("environment value of %s contains a newline" % name)
        reason = FORBIDDEN_ENV.get((name, value))
        if reason:
            raise LaunchConfigError("%s=%s is refused: %s" % (name, value, reason))
        out.append((str(name), value))
    return out


def flags_in_args(args):
    """The ``--flags`` named in an argv (values excluded)."""
    return sorted(set(f for f in _flag_names(args) if f.startswith("--")))


# ------------------------------------------------------------------ surface
# What one vLLM release's `vllm serve` accepts: from the pinned release's
# fingerprint (files/vllm/, derived from the wheel) on the controller, or from
# the image's own `vllm serve --help=all` on a host.
