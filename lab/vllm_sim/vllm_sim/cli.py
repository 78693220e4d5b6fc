"""`vllm` command line: `vllm --version`, `vllm serve MODEL [flags]`.

The options of `vllm serve` are not written here: serve_args.py builds them
from the fingerprint of the pinned vLLM release (fingerprint.py). This module
runs what happens after parsing, in the order real vLLM does it: log the
non-default arguments, validate the environment, build the engine config
(semantic checks, speculative config), then start the server (server.py).
"""

import argparse
import json
import os
import re
import sys

from . import fingerprint
from . import log
from . import serve_args

KNOWN_FAULTS = ("garbled", "repeat", "tool_xml", "crash_after", "slow_start", "slow_decode", "stall_once", "fail_start")


class SimExit(Exception):
    """Raised to terminate with an exit code (after messages were printed)."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def fatal(src, exc_line, frames=None, code=1):
    """Log an ERROR line (stdout) and a traceback-ish block (stderr); exit."""
    log.error(src, exc_line)
    log.traceback_lines(frames or [], exc_line)
    raise SimExit(code)


# --------------------------------------------------------------------------
# Defaults of the options the simulator acts on. The fingerprint carries no
# defaults; these are the "(default: ...)" values real `vllm serve --help=all`
# of vLLM 0.33.0 prints. Every other option defaults to None (False for a
# plain switch); the simulator only records it.
SERVE_DEFAULTS = {
    "model": "Qwen/Qwen3-0.6B",
    "host": None,
    "port": 8000,
    "uvicorn_log_level": "info",
    "served_model_name": None,
    "api_key": None,
    "tensor_parallel_size": 1,
    "pipeline_parallel_size": 1,
    "data_parallel_size": 1,
    "distributed_executor_backend": None,
    "nnodes": 1,
    "node_rank": 0,
    "master_addr": "127.0.0.1",
    "master_port": 29501,
    "headless": False,
    "kv_cache_dtype": "auto",
    "block_size": None,
    "max_model_len": None,
    "max_num_seqs": None,
    "max_num_batched_tokens": None,
    "gpu_memory_utilization": 0.92,
    "enable_prefix_caching": None,
    "trust_remote_code": False,
    "speculative_config": None,
    "generation_config": "auto",
    "override_generation_config": {},
    "tokenizer_mode": "auto",
    "tool_call_parser": None,
    "enable_auto_tool_choice": False,
    "reasoning_parser": "",
    "enable_expert_parallel": False,
    "load_format": "auto",
    "enforce_eager": False,
    "shutdown_timeout": 0,
    "seed": 0,
    "dtype": "auto",
    "quantization": None,
    "disable_log_stats": False,
    "enable_log_requests": False,
    "fail_on_environ_validation": False,
}

# What the simulator picks where real vLLM derives a value from the model or
# the GPU (an unset --max-model-len, --max-num-seqs, ...).
SIM_MAX_MODEL_LEN = 8192
SIM_MAX_NUM_SEQS = 256
SIM_MAX_NUM_BATCHED_TOKENS = 8192

ARG_UTILS = "/usr/local/lib/python3.11/dist-packages/vllm/engine/arg_utils.py"
ARGPARSE_UTILS = "/usr/local/lib/python3.11/dist-packages/vllm/utils/argparse_utils.py"


def parse_faults(value):
    """Parse VLLM_SIM_FAULT -> dict. Raises ValueError for unknown modes."""
    faults = {}
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, arg = item.partition("=")
        name = name.strip()
        if name not in KNOWN_FAULTS:
            raise ValueError(f"unknown VLLM_SIM_FAULT mode {name!r}; "
                             f"known: {', '.join(KNOWN_FAULTS)}")
        if name == "crash_after":
            faults[name] = int(arg)
        elif name == "slow_start":
            faults[name] = float(arg)
        elif name == "slow_decode":
            faults[name] = float(arg)
            if faults[name] <= 0:
                raise ValueError(f"VLLM_SIM_FAULT slow_decode={arg} must be a factor above 0")
        elif name == "stall_once":
            faults[name] = float(arg)
            if faults[name] <= 0:
                raise ValueError(f"VLLM_SIM_FAULT stall_once={arg} must be seconds above 0")
        else:
            faults[name] = True
    return faults


def env_float(name, default):
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    return float(v)


def validate(args):
    """Semantic checks; returns (exc_type, message) or None."""
    if args.tensor_parallel_size < 1:
        return ("ValueError", f"tensor_parallel_size must be >= 1, got {args.tensor_parallel_size}")
    if args.pipeline_parallel_size < 1:
        return ("ValueError", f"pipeline_parallel_size must be >= 1, got {args.pipeline_parallel_size}")
    if args.nnodes < 1:
        return ("ValueError", f"nnodes must be >= 1, got {args.nnodes}")
    world = args.tensor_parallel_size * args.pipeline_parallel_size
    if args.nnodes > world:
        return ("ValueError",
                f"nnodes ({args.nnodes}) cannot be larger than the world size "
                f"tensor_parallel_size * pipeline_parallel_size ({world})")
    if args.node_rank < 0 or args.node_rank >= args.nnodes:
        return ("ValueError", f"node_rank ({args.node_rank}) must be in [0, nnodes={args.nnodes})")
    # Simulator-only check: real vLLM would rendezvous on the default
    # 127.0.0.1, which no other node reaches, and hang until its timeout.
    if args.nnodes > 1 and "master_addr" not in args.explicit:
        return ("ValueError", f"--master-addr is required when --nnodes > 1 (the default "
                              f"{args.master_addr} is not reachable from the other nodes)")
    if args.headless and args.node_rank == 0:
        return ("ValueError", "--headless is only valid on node ranks > 0 "
                              "(node rank 0 runs the API server)")
    if args.node_rank > 0 and not args.headless:
        return ("RuntimeError",
                f"node rank {args.node_rank} started without --headless: both nodes would "
                f"bind the API server and the TCPStore at "
                f"{args.master_addr}:{args.master_port}; pass --headless on node ranks > 0")
    if args.max_model_len is not None and args.max_model_len <= 0:
        return ("ValueError", f"max_model_len must be positive, got {args.max_model_len}")
    if args.shutdown_timeout < 0:
        return ("ValueError", "shutdown_timeout must be >= 0")
    util = args.gpu_memory_utilization
    if util is not None and not 0 < util <= 1:
        which = "less than or equal to 1" if util > 1 else "greater than 0"
        return ("pydantic_core._pydantic_core.ValidationError",
                serve_args.validation_error("CacheConfig", [(
                    "gpu_memory_utilization", f"Input should be {which}",
                    "less_than_equal" if util > 1 else "greater_than", util)]))
    known = option_of("kv_cache_dtype").get("known_values")
    if known and args.kv_cache_dtype not in known:
        return ("pydantic_core._pydantic_core.ValidationError",
                serve_args.validation_error("CacheConfig", [(
                    "cache_dtype", f"Value error, Invalid kv_cache_dtype: {args.kv_cache_dtype!r}. "
                                   f"Valid values are: {list(known)}", "value_error", args.kv_cache_dtype)]))
    return check_local_model(args.model)


def check_local_model(model):
    """Like vLLM: a path that is not a checkpoint directory, or a missing shard, fails start-up."""
    if not model.startswith(("/", "./")):
        return None
    if not os.path.isdir(model):
        return ("huggingface_hub.errors.HFValidationError",
                f"Repo id must be in the form 'repo_name' or 'namespace/repo_name': '{model}'. "
                f"Use `repo_type` argument if needed.")
    if not os.path.isfile(os.path.join(model, "config.json")):
        return ("OSError", f"{model} does not appear to have a file named config.json.")
    index = os.path.join(model, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, "r", encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle).get("weight_map", {}).values()))
        for shard in shards:
            if not os.path.isfile(os.path.join(model, shard)):
                return ("FileNotFoundError", f"[Errno 2] No such file or directory: '{os.path.join(model, shard)}'")
    return None


# huggingface_hub's offline switches and cache layout, as huggingface_hub
# 1.31.0 (the floor vLLM 0.33.0's METADATA requires) reads them:
# constants.py (_is_true, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE),
# file_download.py repo_folder_name and REGEX_COMMIT_HASH.
HF_TRUE = ("1", "ON", "YES", "TRUE")
HF_COMMIT = re.compile(r"^[0-9a-f]{40}$")
HF_OFFLINE_MISS = ("Cannot find an appropriate cached snapshot folder for the specified revision on the local "
                   "disk and outgoing traffic has been disabled. To enable repo look-ups and downloads online, "
                   "pass 'local_files_only=False' as input.")
REPO_UTILS = ARG_UTILS.replace("engine/arg_utils.py", "transformers_utils/repo_utils.py")
HF_HUB = "/usr/local/lib/python3.11/dist-packages/huggingface_hub/"


def hf_offline(env=None):
    env = os.environ if env is None else env
    value = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE")
    return bool(value) and value.upper() in HF_TRUE


def hf_hub_cache(env=None):
    env = os.environ if env is None else env
    home = os.path.expandvars(os.path.expanduser(env.get(
        "HF_HOME", os.path.join(env.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
                                "huggingface"))))
    legacy = env.get("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub"))
    return os.path.expandvars(os.path.expanduser(env.get("HF_HUB_CACHE", legacy)))


def offline_snapshot(repo_id, revision=None, env=None):
    """The cached snapshot folder of a hub repo, or None: huggingface_hub 1.31.0
    _snapshot_download.py snapshot_download with local_files_only (a commit hash is used as is,
    a branch or tag through refs/<revision>; the folder snapshots/<commit> must exist)."""
    storage = os.path.join(hf_hub_cache(env), "models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    commit = revision if HF_COMMIT.match(revision) else None
    if commit is None:
        try:
            with open(os.path.join(storage, "refs", revision), encoding="utf-8") as handle:
                commit = handle.read()
        except OSError:
            return None
    folder = os.path.join(storage, "snapshots", commit)
    return folder if os.path.isdir(folder) else None


def resolve_offline(args):
    """HF_HUB_OFFLINE: a hub model ID becomes its cached snapshot, or start-up fails.

    vLLM 0.33.0 engine/arg_utils.py EngineArgs.__post_init__ (run when the serve command builds
    its engine args, before the engine config and the environment check) replaces the model (and
    a given tokenizer) with transformers_utils/repo_utils.py get_model_path: the path itself when
    it exists, else hf_api().snapshot_download(local_files_only=True, ignore_patterns="*"), which
    raises huggingface_hub.errors.LocalEntryNotFoundError (huggingface_hub 1.31.0
    _snapshot_download.py:360) when the snapshot is not in the local cache. Paths that do not
    exist are left to check_local_model (huggingface_hub's repo-ID validation refuses them).
    Returns (exc_type, message, frames) or None.
    """
    if not hf_offline():
        return None
    for dest, rev_dest in (("model", "revision"), ("tokenizer", "tokenizer_revision")):
        repo_id = getattr(args, dest, None)
        if not repo_id or os.path.exists(repo_id) or repo_id.startswith(("/", "./")):
            continue
        folder = offline_snapshot(repo_id, getattr(args, rev_dest, None))
        if folder is None:
            line = 939 if dest == "model" else 949
            code = "self.model = get_model_path(self.model, self.revision)" if dest == "model" else \
                "self.tokenizer = get_model_path(self.tokenizer, self.tokenizer_revision)"
            return ("huggingface_hub.errors.LocalEntryNotFoundError", HF_OFFLINE_MISS, [
                (ARG_UTILS, 1977, "from_cli_args", "engine_args = cls("),
                (ARG_UTILS, line, "__post_init__", code),
                (REPO_UTILS, 301, "get_model_path", "return hf_api().snapshot_download("),
                (HF_HUB + "utils/_validators.py", 88, "_inner_fn", "return fn(*args, **kwargs)"),
                (HF_HUB + "hf_api.py", 6831, "snapshot_download", "return snapshot_download("),
                (HF_HUB + "utils/_validators.py", 88, "_inner_fn", "return fn(*args, **kwargs)"),
                (HF_HUB + "_snapshot_download.py", 360, "snapshot_download", "raise LocalEntryNotFoundError(")])
        log.info("arg_utils.py:941" if dest == "model" else "arg_utils.py:951",
                 f"HF_HUB_OFFLINE is True, replace {'model_id' if dest == 'model' else 'tokenizer_id'} "
                 f"[{repo_id}] to {'model_path' if dest == 'model' else 'tokenizer_path'} [{folder}]")
        setattr(args, dest, folder)
        # ModelConfig names the served model after the (now local) model unless told otherwise.
        if dest == "model" and "served_model_name" not in args.explicit:
            args.served_model_name = [folder]
    return None


# --------------------------------------------------------------------------
# parsing

def option_of(dest):
    for option in fingerprint.load()["serve"]["options"]:
        if option["dest"] == dest:
            return option
    return {}


def option_strings(fp):
    out = set()
    for option in fp["serve"]["options"]:
        out.update(option.get("flags") or [])
        out.update(option.get("hidden_flags") or [])
        out.update(option.get("negations") or [])
    return out


def default_of(option):
    dest = option["dest"]
    if dest in SERVE_DEFAULTS:
        value = SERVE_DEFAULTS[dest]
        return json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value
    return False if option["action"] == "store_true" else None


def namespace(fp, parsed):
    """The full argument namespace: what was given, the rest at its default.

    `explicit` names the options given on the command line.
    """
    given = {k: v for k, v in vars(parsed).items() if k != "subparser"}
    args = argparse.Namespace()
    for option in fp["serve"]["options"]:
        if option["action"] == "help":
            continue
        dest = option["dest"]
        setattr(args, dest, given[dest] if dest in given else default_of(option))
    # An option the simulator reads but this release lacks keeps its value (never settable).
    for dest, value in SERVE_DEFAULTS.items():
        if not hasattr(args, dest):
            setattr(args, dest, default_of({"dest": dest, "action": "store"}))
    args.explicit = frozenset(given)
    return args


def nondefault(args):
    out = {}
    for dest in sorted(args.explicit, key=lambda d: (d != "model_tag", d)):
        value = getattr(args, dest)
        if dest not in SERVE_DEFAULTS or value != SERVE_DEFAULTS[dest]:
            out[dest] = value
    if "model_tag" in out:
        out.setdefault("model", out["model_tag"])
    return out


def parse(argv):
    """Parse a full `vllm ...` argv: returns (subcommand, args, warnings); raises SimExit."""
    fp = fingerprint.load()
    try:
        rewritten = serve_args.rewrite(argv, option_strings(fp))
    except serve_args.ArgvError as exc:
        if exc.usage:
            sys.stderr.write(f"usage: vllm serve [model_tag] [options]\nvllm serve: error: {exc.message}\n")
        else:
            log.traceback_lines([(ARGPARSE_UTILS, 330, "parse_args", None)], exc.message)
        raise SimExit(exc.code)
    top, serve = serve_args.build_parsers(fp, SERVE_DEFAULTS)
    serve.search_keyword = rewritten.keyword
    try:
        parsed = top.parse_args(rewritten.argv)
    except SystemExit as exc:
        raise SimExit(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
    except serve_args.ConfigCrash as exc:
        log.traceback_lines([(ARGPARSE_UTILS, 468, "parse_args",
                              "return super().parse_args(processed_args, namespace)")] + exc.frames, exc.exc_line)
        raise SimExit(1)
    if parsed.subparser is None:
        top.print_help()
        raise SimExit(2)
    if parsed.subparser != "serve":
        sys.stderr.write(f"vllm_sim: `vllm {parsed.subparser}` is not simulated; the simulator "
                         f"implements `vllm serve` and `vllm --version` only\n")
        raise SimExit(1)
    return namespace(fp, parsed), rewritten.warnings


# --------------------------------------------------------------------------
# engine config

def validate_environ(args, fp):
    """Unknown VLLM_* variables: a warning each, or an error with --fail-on-environ-validation."""
    known = fp.get("env")
    if known is None:
        return
    known = set(known)
    for name in os.environ:
        # VLLM_SIM_* are the simulator's own knobs, not vLLM's.
        if not name.startswith("VLLM_") or name.startswith("VLLM_SIM_") or name in known:
            continue
        if args.fail_on_environ_validation:
            fatal("arg_utils.py:2261", f"ValueError: Unknown vLLM environment variable detected: {name}",
                  [(ARG_UTILS, 2261, "create_engine_config",
                    "current_platform.validate_environ(self.fail_on_environ_validation)"),
                   (ARG_UTILS.replace("engine/arg_utils.py", "platforms/interface.py"), 1465,
                    "validate_environ", "raise ValueError(")])
        log.warning("interface.py:1469", f"Unknown vLLM environment variable detected: {name}")


def speculative_config(args, fp):
    """Build the speculative config like the engine does: key and method checks, deprecations."""
    spec = args.speculative_config
    for flag, key, dest in (("--spec-method", "method", "spec_method"),
                            ("--spec-model", "model", "spec_model"),
                            ("--spec-tokens", "num_speculative_tokens", "spec_tokens")):
        value = getattr(args, dest, None)
        if value is None:
            continue
        if spec is None:
            spec = {}
        if isinstance(spec, dict) and key in spec:
            return ("ValueError", f"{flag} and --speculative-config['{key}'] are mutually exclusive")
        spec[key] = value
    if spec is None:
        args.speculative_config = None
        return None
    if not isinstance(spec, dict):
        return ("AttributeError", f"'{type(spec).__name__}' object has no attribute 'items'")
    spec = {str(k).replace("-", "_"): v for k, v in spec.items()}
    rules = (fp.get("json_configs") or {}).get("speculative_config") or {}
    errors = []
    keys = set(rules.get("keys") or [])
    for key in spec:
        if keys and key not in keys:
            errors.append((key, "Unexpected keyword argument", "unexpected_keyword_argument", spec[key]))
    methods = (rules.get("choices") or {}).get("method")
    method = spec.get("method")
    if methods and method is not None and method not in methods:
        listed = [repr(m) for m in methods]
        errors.append(("method", "Input should be " + ", ".join(listed[:-1]) + " or " + listed[-1],
                       "literal_error", method))
    if errors:
        return ("pydantic_core._pydantic_core.ValidationError",
                serve_args.validation_error("SpeculativeConfig", errors))
    replaced = (fp.get("deprecated_values") or {}).get("speculative_config.method") or {}
    if method in replaced:
        log.warning("speculative.py:1247", f"method `{method}` is deprecated and replaced with "
                                           f"{replaced[method]}.")
        spec["method"] = replaced[method]
    args.speculative_config = spec
    return None


def resolve(args):
    """Values real vLLM derives from the model or the GPU, picked by the simulator."""
    model = getattr(args, "model_tag", None) or args.model or SERVE_DEFAULTS["model"]
    args.model = model
    if args.max_model_len in (None, -1):
        args.max_model_len = SIM_MAX_MODEL_LEN
    if args.block_size is None:
        args.block_size = 64 if args.kv_cache_dtype == "nvfp4_ds_mla" else 16
    if args.max_num_batched_tokens is None:
        args.max_num_batched_tokens = SIM_MAX_NUM_BATCHED_TOKENS
    if args.max_num_seqs is None:
        args.max_num_seqs = SIM_MAX_NUM_SEQS
    if not args.served_model_name:
        args.served_model_name = [model]
    if args.distributed_executor_backend is None:
        args.distributed_executor_backend = "mp" if args.nnodes > 1 or \
            args.tensor_parallel_size * args.pipeline_parallel_size > 1 else "uni"
    # --api-key takes one or more keys; without it VLLM_API_KEY is the key.
    keys = [k for k in (args.api_key or [os.environ.get("VLLM_API_KEY")]) if k]
    args.api_keys = keys
    if args.override_generation_config is None:
        args.override_generation_config = {}


def serve_main(argv):
    fp = fingerprint.load()
    args, warnings = parse(argv)
    log.PREFIX = "" if args.headless else f"(APIServer pid={os.getpid()}) "
    for src, message in warnings:
        log.warning(src, message)
    log.info("startup.py:96", f"non-default args: {nondefault(args)}")
    resolve(args)
    src = "api_server.py:1885" if not args.headless else "launcher.py:94"
    log.info(src, f"vLLM API server version {fingerprint.release_version()}")

    offline = resolve_offline(args)
    if offline:
        fatal("arg_utils.py:939", f"{offline[0]}: {offline[1]}", offline[2])
    validate_environ(args, fp)
    err = validate(args) or speculative_config(args, fp)
    if err:
        fatal("arg_utils.py:1420", f"{err[0]}: {err[1]}",
              [(ARG_UTILS, 1420, "create_engine_config", "self._validate_parallel_config()")])
    try:
        faults = parse_faults(os.environ.get("VLLM_SIM_FAULT", ""))
    except ValueError as e:
        fatal("vllm_sim", f"ValueError: {e}")

    from . import server  # local import keeps `--help` fast
    return server.run(args, faults)


def platform():
    """The platform vLLM 0.33.0 would detect here: "cuda", "cpu" or None.

    vllm/platforms/__init__.py: the CPU plugin answers when VLLM_TARGET_DEVICE
    is "cpu"; the CUDA plugin when NVML initialises and counts a GPU, which in
    a container happens once NVIDIA's prestart hook injected the devices and
    the driver library: `docker run --gpus` is what asks for that, and it sets
    NVIDIA_VISIBLE_DEVICES in the container (seen on a lab node). Neither: the
    UnspecifiedPlatform, and DeviceConfig raises (config/device.py).
    """
    if os.environ.get("VLLM_TARGET_DEVICE", "cuda").lower() == "cpu":
        return "cpu"
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip().lower()
    if visible and visible not in ("void", "none"):
        return "cuda"
    return None


# config/device.py DeviceConfig.__post_init__, raised while the CLI builds its
# parsers (every sub-command's, --help and --version included): exit 1, empty stdout.
NO_PLATFORM = ("RuntimeError: Failed to infer device type, please set the environment variable "
               "`VLLM_LOGGING_LEVEL=DEBUG` to turn on verbose logging to help debug the issue.")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except Exception:
        pass
    if platform() is None:
        sys.stderr.write("Traceback (most recent call last):\n  File \"/usr/local/bin/vllm\", line 10, in <module>\n"
                         "    sys.exit(main())\n  File \"vllm/config/device.py\", line 55, in __post_init__\n"
                         "%s\n" % NO_PLATFORM)
        return 1
    try:
        if argv[:1] != ["serve"]:
            fingerprint.load()
            parse(argv)  # --version, --help, usage errors; other sub-commands are refused
            return 0
        return serve_main(argv) or 0
    except fingerprint.FingerprintError as e:
        sys.stderr.write(f"vllm_sim: error: {e}\n")
        return 1
    except SimExit as e:
        return e.code
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
