# -*- coding: utf-8 -*-
"""Render the exact ``vllm serve`` argv and environment for one node of a pair.

Arguments are produced as a list (one element per argv entry) and handed to
``docker run`` without any shell in between, so JSON-valued flags keep their
quotes. JSON values are generated from YAML data and parsed back before they
are accepted. Settings known to break a Spark pair are refused with the reason.

Pure functions, no Ansible imports: used by the filter plugin and unit tests.
"""

from __future__ import annotations

import ast
import json
import math
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

class Surface:
    """Option strings a `vllm serve` accepts, with arity, choices and value kinds."""

    def __init__(self, options, json_configs=None, deprecated=None, version=None, source="vLLM"):
        self.options = options
        self.json_configs = json_configs or {}
        self.deprecated = deprecated or {}
        self.version = version
        self.source = source
        self.by_flag = {}
        for option in options:
            for flag in option.get("flags", []) + option.get("hidden_flags", []):
                self.by_flag[flag] = (option, flag in option.get("negations", []))
            for flag in option.get("negations", []):
                self.by_flag[flag] = (option, True)

    @classmethod
    def from_fingerprint(cls, fingerprint):
        release = fingerprint.get("release", {}).get("version")
        return cls(fingerprint["serve"]["options"], fingerprint.get("json_configs"),
                   fingerprint.get("deprecated_values"), release, "vLLM %s (pinned fingerprint)" % release)

    @classmethod
    def from_help(cls, help_text, source="the image's vLLM"):
        """Parse `vllm serve --help=all` (or a classic full `--help`)."""
        options = parse_help_options(help_text)
        if not options:
            if "Config Groups" in help_text:
                raise LaunchConfigError(
                    "%s printed the grouped `vllm serve --help`, which lists no options: "
                    "ask it for `--help=all`" % source)
            raise LaunchConfigError("could not read any option from `vllm serve --help=all` of %s" % source)
        return cls(options, source=source)

    def nearest(self, flag):
        import difflib

        names = sorted(f for f in self.by_flag if f.startswith("--"))
        close = difflib.get_close_matches(flag, names, n=1, cutoff=0.6)
        return close[0] if close else None


_HELP_OPTION_LINE = re.compile(r"^  (-{1,2}[A-Za-z0-9][^ ]*.*)$")
_OPTION_START = re.compile(r"(?:^|, )(-{1,2}[A-Za-z0-9][A-Za-z0-9_.-]*)")


def parse_help_options(help_text):
    """Options of an argparse help listing: [{flags, negations, hidden_flags, nargs, choices, ...}].

    Reads the invocation part of each option line (``--flag META, -f META``,
    ``--x, --no-x``, ``--enable-x, --disable-x``, ``--flag {a,b}``); prose in
    the help column never starts an option line.
    """
    options = []
    for line in help_text.splitlines():
        match = _HELP_OPTION_LINE.match(line)
        if not match:
            continue
        invocation = re.split(r"\s{2,}", match.group(1).strip(), maxsplit=1)[0]
        starts = list(_OPTION_START.finditer(invocation))
        if not starts:
            continue
        parts = []
        for i, start in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(invocation)
            flag = start.group(1)
            meta = invocation[start.end():end].strip()
            parts.append((flag, meta))
        flags = [flag for flag, _ in parts]
        meta = parts[0][1]
        option = {"flags": flags, "hidden_flags": [], "negations": [], "choices": None,
                  "value": "str", "nargs": None, "action": "store", "dest": flags[0].lstrip("-")}
        if flags in (["-h", "--help"], ["--help", "-h"]):
            option.update(action="help", nargs=0, value=None)
        elif not meta:
            option.update(nargs=0, value=None)
            originals, negations = [], []
            for flag in flags:
                if any(flag == "--no-" + g[2:] or flag == _inverse(g) for g in originals if g.startswith("--")):
                    negations.append(flag)
                else:
                    originals.append(flag)
            if negations:
                # --x, --no-x (BooleanOptionalAction) or --enable-x, --disable-x
                # (vLLM's EnableDisableAction, which still accepts the hidden
                # --no- form of the original flag).
                option["action"] = "bool"
                option["negations"] = list(negations)
                for g in originals:
                    if g.startswith("--") and _inverse(g) in negations:
                        option["hidden_flags"].append("--no-" + g[2:])
                        option["negations"].append("--no-" + g[2:])
            else:
                option["action"] = "store_true"
        else:
            choice = re.match(r"^\{([^{}\s]*)\}( \[\{[^{}\s]*\} \.\.\.\])?$", meta)
            if choice:
                option["choices"] = choice.group(1).split(",")
                if choice.group(2):
                    option["nargs"] = "+"
            elif meta.startswith("['") and meta.endswith("]"):
                # vLLM shows a Literal that also takes any string as its metavar;
                # the config class rejects values outside it later.
                try:
                    option["known_values"] = [str(v) for v in ast.literal_eval(meta)]
                except (ValueError, SyntaxError):
                    pass
            elif meta.startswith("[") and meta.endswith("]"):
                option["nargs"] = "?"
            elif meta.endswith("...]"):
                option["nargs"] = "+"
        options.append(option)
    return options


def _inverse(flag):
    for prefix, inverse in (("--enable-", "--disable-"), ("--disable-", "--enable-")):
        if flag.startswith(prefix):
            return inverse + flag[len(prefix):]
    return None


def _arity(option):
    if option.get("action") in ("bool", "store_true", "store_false", "help") or option.get("nargs") == 0:
        return 0
    return option.get("nargs")


def _value_problem(option, value):
    """Why ``value`` is not a valid value of ``option`` (None when it is)."""
    kind = option.get("value")
    text = str(value)
    if option.get("optional") and text in ("", "None"):
        return None
    choices = option.get("choices")
    if choices is not None and not option.get("choices_open"):
        allowed = [str(c) for c in choices]
        if kind == "lower_underscore":
            text = text.lower().replace("-", "_")
        if text not in allowed:
            return "invalid choice %r (choose from %s)" % (str(value), ", ".join(a for a in allowed if a != "None"))
        return None
    try:
        if kind == "int":
            int(text)
        elif kind == "float":
            float(text)
        elif kind in ("human_int", "human_int_or_auto"):
            if not (kind == "human_int_or_auto" and text.lower() in ("auto", "-1")) and \
                    not re.match(r"^-?\d+(\.\d+)?[kKmMgGtT]?$", text):
                raise ValueError(text)
        elif kind == "json":
            json.loads(text)
    except ValueError:
        return "invalid %s value %r" % ({"json": "JSON"}.get(kind, kind), text)
    known = option.get("known_values")
    if known and text not in [str(k) for k in known]:
        return "%r is not one of the values this release knows (%s)" % (text, ", ".join(map(str, known)))
    return None


def _json_problems(option, value, surface):
    """Unknown keys and bad values inside a JSON config flag, as the config class checks them."""
    dest = option.get("dest")
    rules = surface.json_configs.get(dest)
    if not rules:
        return [], []
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return [], []
    if not isinstance(parsed, dict):
        return ["%s must be a JSON object" % option["flags"][0]], []
    problems, warnings = [], []
    import difflib

    for key in sorted(parsed):
        if key not in rules["keys"]:
            close = difflib.get_close_matches(key, rules["keys"], n=1)
            problems.append("%s has key %r, which %s does not know%s" % (
                option["flags"][0], key, rules["class"], " (nearest: %s)" % close[0] if close else ""))
    for key, allowed in sorted(rules.get("choices", {}).items()):
        if key in parsed and parsed[key] is not None:
            value_text = str(parsed[key])
            if value_text.upper() in allowed and value_text not in allowed:
                value_text = value_text.upper()
            if value_text not in allowed:
                problems.append("%s %s is %r; allowed: %s" % (option["flags"][0], key, parsed[key], ", ".join(allowed)))
    replaced = surface.deprecated.get("%s.method" % dest, {})
    if parsed.get("method") in replaced:
        warnings.append("%s method %r is deprecated in vLLM %s and replaced with %r" % (
            option["flags"][0], parsed["method"], surface.version or "", replaced[parsed["method"]]))
    return problems, warnings


def _normalise(arg):
    """vLLM's FlexibleArgumentParser spelling: underscores become dashes before the first dot."""
    if not arg.startswith("--"):
        return arg
    key, sep, value = arg.partition("=")
    head, dot, tail = key[2:].partition(".")
    return "--" + head.replace("_", "-") + dot + tail + sep + value


def check_argv(args, surface):
    """Problems (and warnings) with a `vllm serve` argv against a surface.

    Reads the argv the way vLLM's FlexibleArgumentParser does: underscore
    spellings, ``--flag=value``, dotted JSON keys (``--speculative-config.method
    mtp``), negations and ``--model``. Returns (problems, warnings), each a list
    of one-line sentences naming the flag.
    """
    problems, warnings = [], []
    dotted = {}
    i = 0
    args = [str(a) for a in args]
    positional_seen = False
    while i < len(args):
        raw = args[i]
        i += 1
        if not raw.startswith("-") or raw == "-":
            if positional_seen:
                problems.append("unexpected extra positional argument %r" % raw)
            positional_seen = True
            continue
        arg = _normalise(raw)
        name, has_eq, inline = arg.partition("=")
        if name.startswith("--") and "." in name:
            base = name.split(".", 1)[0]
            entry = surface.by_flag.get(base)
            if entry is None:
                problems.append(_unknown(base, surface))
            if not has_eq and i < len(args):
                inline = args[i]
                i += 1
            key_path = name.split(".")[1:]
            if key_path and key_path[-1].endswith("+"):
                key_path[-1] = key_path[-1][:-1]
            dotted.setdefault(base, {})[key_path[0] if key_path else ""] = inline
            continue
        entry = surface.by_flag.get(name)
        if entry is None:
            problems.append(_unknown(name, surface))
            # Its values (if any) are not positionals of their own.
            while not has_eq and i < len(args) and not args[i].startswith("-"):
                i += 1
            continue
        option, _negated = entry
        arity = _arity(option)
        if arity == 0:
            if has_eq:
                problems.append("%s takes no value, got %r" % (name, inline))
            continue
        values = []
        if has_eq:
            values = [inline]
        elif arity == "?":
            if i < len(args) and not args[i].startswith("-"):
                values = [args[i]]
                i += 1
        elif arity == "+":
            while i < len(args) and not (args[i].startswith("-") and len(args[i]) > 1 and not _is_number(args[i])):
                values.append(args[i])
                i += 1
            if not values:
                problems.append("%s expects at least one value" % name)
        else:
            count = arity if isinstance(arity, int) else 1
            values = args[i:i + count]
            i += len(values)
            if len(values) < count or any(v.startswith("--") for v in values):
                problems.append("%s expects %s value%s" % (name, count, "s" if count > 1 else ""))
                continue
        for value in values:
            why = _value_problem(option, value)
            if why:
                problems.append("%s: %s" % (name, why))
        if option.get("value") == "json" and values:
            more, warn = _json_problems(option, values[-1], surface)
            problems += ["%s" % m for m in more]
            warnings += warn
    for base, keys in sorted(dotted.items()):
        entry = surface.by_flag.get(base)
        if entry is None:
            continue
        more, warn = _json_problems(entry[0], {k: _json_scalar(v) for k, v in keys.items()}, surface)
        problems += more
        warnings += warn
    return problems, warnings


def _json_scalar(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _unknown(flag, surface):
    near = surface.nearest(flag)
    return "%s is not a `vllm serve` option of %s%s" % (
        flag, surface.source, "; nearest: %s" % near if near else "")


def unknown_env(env_names, known):
    """``VLLM_*`` names the release does not know, each with the nearest known name."""
    import difflib

    known = set(known)
    out = []
    for name in sorted(env_names):
        if name.startswith("VLLM_") and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            out.append((name, close[0] if close else None))
    return out


def load_fingerprint(path):
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


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
