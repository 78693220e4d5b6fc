"""`vllm` command line: `vllm --version`, `vllm serve MODEL [flags]`."""

import argparse
import json
import os
import sys

from . import VLLM_SIM_VERSION
from . import log

KV_DTYPES = ["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "nvfp4_ds_mla", "bfloat16"]
KNOWN_FAULTS = ("garbled", "repeat", "tool_xml", "crash_after", "slow_start", "fail_start")


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
# argparse types
def json_object(value):
    try:
        obj = json.loads(value)
    except (ValueError, TypeError):
        obj = None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError(
            f"Value {value} cannot be converted to <function loads>.")
    return obj


def human_int(value):
    """Accept 8192, 200k (x1000), 1m (x1e6), 128K (x1024), 1M (x1048576)."""
    v = str(value).strip()
    mult = {"k": 1000, "m": 1000 ** 2, "g": 1000 ** 3,
            "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    try:
        if v and v[-1] in mult:
            return int(float(v[:-1]) * mult[v[-1]])
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: '{value}'")


def mem_util(value):
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: '{value}'")
    if not 0.0 < f <= 1.0:
        raise argparse.ArgumentTypeError(
            f"gpu_memory_utilization must be in the range (0, 1], got {value}")
    return f


def build_serve_parser():
    p = argparse.ArgumentParser(
        prog="vllm serve", add_help=False,
        description="Start the vLLM OpenAI Compatible API server "
                    f"(simulator {VLLM_SIM_VERSION}; a test double, no inference).")
    p.add_argument("model_tag", nargs="?", default=None,
                   help="The model tag to serve (optional if --model is given).")
    a = p.add_argument
    a("--help", "-h", action="help", help="show this help message and exit")
    a("--model", default=None, help="Name or path of the model to use.")
    a("--host", default=None, help="Host name to bind the API server to.")
    a("--port", type=int, default=8000, help="Port number (default: 8000).")
    a("--served-model-name", nargs="+", default=None,
      help="The model name(s) used in the API.")
    a("--api-key", default=None, help="If provided, require this key in the Authorization header.")
    a("--tensor-parallel-size", "-tp", type=int, default=1, help="Number of tensor parallel groups.")
    a("--pipeline-parallel-size", "-pp", type=int, default=1, help="Number of pipeline parallel groups.")
    a("--data-parallel-size", "-dp", type=int, default=1, help="Number of data parallel groups.")
    a("--distributed-executor-backend", choices=["mp", "ray", "uni", "external_launcher"],
      default=None, help="Backend for distributed model workers.")
    a("--nnodes", type=int, default=1, help="Number of nodes for multi-node distributed inference.")
    a("--node-rank", type=int, default=0, help="Rank of this node in multi-node inference.")
    a("--master-addr", default=None, help="Address of the master (rank 0) node.")
    a("--master-port", type=int, default=29501, help="Port of the master node (default: 29501).")
    a("--headless", action="store_true", help="Run in headless mode (no API server).")
    a("--kv-cache-dtype", choices=KV_DTYPES, default="auto", help="Data type for KV cache storage.")
    a("--block-size", type=int, default=None, help="Token block size for contiguous chunks of tokens.")
    a("--max-model-len", type=human_int, default=None,
      help="Model context length (supports k/m/K/M suffixes, e.g. 200k).")
    a("--max-num-seqs", type=int, default=256, help="Maximum number of sequences per iteration.")
    a("--max-num-batched-tokens", type=human_int, default=None,
      help="Maximum number of batched tokens per iteration.")
    a("--gpu-memory-utilization", type=mem_util, default=0.9,
      help="Fraction of GPU memory to use, in (0, 1] (default: 0.9).")
    a("--enable-prefix-caching", dest="enable_prefix_caching", action="store_true", default=None,
      help="Enable automatic prefix caching.")
    a("--no-enable-prefix-caching", dest="enable_prefix_caching", action="store_false",
      help="Disable automatic prefix caching.")
    a("--trust-remote-code", action="store_true", help="Trust remote code from Hugging Face.")
    a("--speculative-config", type=json_object, default=None,
      help="Speculative decoding configuration (JSON).")
    a("--compilation-config", "-cc", type=json_object, default=None,
      help="torch.compile / cudagraph configuration (JSON).")
    a("--override-generation-config", type=json_object, default=None,
      help="Overrides the generation config (JSON).")
    a("--generation-config", default="auto", help="Generation config folder, 'auto' or 'vllm'.")
    a("--tokenizer-mode", default="auto", help="Tokenizer mode.")
    a("--tool-call-parser", default=None, help="Tool call parser name.")
    a("--enable-auto-tool-choice", action="store_true", help="Enable auto tool choice.")
    a("--reasoning-parser", default=None, help="Reasoning parser name.")
    a("--enable-expert-parallel", action="store_true", help="Use expert parallelism for MoE layers.")
    a("--load-format", default="auto", help="Format of the model weights to load.")
    a("--safetensors-load-strategy", default=None, help="Safetensors loading strategy (lazy, eager, ...).")
    a("--enforce-eager", action="store_true", help="Always use eager-mode PyTorch.")
    a("--shutdown-timeout", type=int, default=0,
      help="Seconds to wait for in-flight requests on shutdown (default: 0).")
    a("--download-dir", default=None, help="Directory to download and load the weights.")
    a("--seed", type=int, default=0, help="Random seed.")
    a("--dtype", default="auto", help="Data type for model weights and activations.")
    a("--quantization", "-q", default=None, help="Method used to quantize the weights.")
    a("--swap-space", type=float, default=4, help="CPU swap space size (GiB) per GPU.")
    a("--disable-log-requests", action="store_true", help="Disable logging requests.")
    a("--disable-log-stats", action="store_true", help="Disable logging statistics.")
    a("--uvicorn-log-level", default="info",
      choices=["critical", "error", "warning", "info", "debug", "trace"],
      help="Log level for uvicorn.")
    a("--max-log-len", type=int, default=None, help="Max number of prompt characters printed in logs.")
    a("--hf-overrides", type=json_object, default=None, help="Extra arguments for the HF config (JSON).")
    a("--chat-template", default=None, help="Path to / inline chat template.")
    a("--kv-transfer-config", type=json_object, default=None,
      help="Config for distributed KV cache transfer (JSON).")
    return p


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
        else:
            faults[name] = True
    return faults


def env_float(name, default):
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    return float(v)


def validate(args):
    """Semantic checks; returns list of (exc_type, message) or None."""
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
    if args.nnodes > 1 and not args.master_addr:
        return ("ValueError", "--master-addr is required when --nnodes > 1")
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


def serve_main(argv):
    parser = build_serve_parser()
    args = parser.parse_args(argv)
    model = args.model_tag or args.model
    if not model:
        parser.error("the following arguments are required: model_tag")
    args.model = model
    if args.max_model_len is None:
        args.max_model_len = 8192
    if args.block_size is None:
        args.block_size = 64 if args.kv_cache_dtype == "nvfp4_ds_mla" else 16
    if args.max_num_batched_tokens is None:
        args.max_num_batched_tokens = 8192
    if args.served_model_name is None:
        args.served_model_name = [model]
    if args.distributed_executor_backend is None:
        args.distributed_executor_backend = "mp" if args.nnodes > 1 or \
            args.tensor_parallel_size * args.pipeline_parallel_size > 1 else "uni"

    log.PREFIX = "" if args.headless else f"(APIServer pid={os.getpid()}) "
    src = "api_server.py:1885" if not args.headless else "launcher.py:94"
    log.info("utils.py:253", f"non-default args: {nondefault(parser, args)}")
    log.info(src, f"vLLM API server version {VLLM_SIM_VERSION}")

    err = validate(args)
    if err:
        fatal("arg_utils.py:1420", f"{err[0]}: {err[1]}",
              [("/opt/vllm_sim/vllm/engine/arg_utils.py", 1420, "create_engine_config",
                "self._validate_parallel_config()")])
    try:
        faults = parse_faults(os.environ.get("VLLM_SIM_FAULT", ""))
    except ValueError as e:
        fatal("vllm_sim", f"ValueError: {e}")

    from . import server  # local import keeps `--help` fast
    return server.run(args, faults)


def nondefault(parser, args):
    out = {}
    for action in parser._actions:
        dest = action.dest
        if dest in ("help",) or not hasattr(args, dest):
            continue
        val = getattr(args, dest)
        if val != action.default and val is not None:
            out[dest] = val
    return out


TOP_USAGE = """usage: vllm [-h] [-v] {serve} ...

vLLM CLI (simulator {ver})

positional arguments:
  {{serve}}
    serve        Start the vLLM OpenAI Compatible API server.

options:
  -h, --help     show this help message and exit
  -v, --version  show program's version number and exit
"""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except Exception:
        pass
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(TOP_USAGE.replace("{ver}", VLLM_SIM_VERSION).replace("{{serve}}", "{serve}"))
        return 0 if argv else 2
    if argv[0] in ("-v", "--version"):
        print(VLLM_SIM_VERSION)
        return 0
    if argv[0] != "serve":
        sys.stderr.write("usage: vllm [-h] [-v] {serve} ...\n"
                         f"vllm: error: argument subparser: invalid choice: '{argv[0]}' "
                         "(choose from 'serve')\n")
        return 2
    try:
        return serve_main(argv[1:]) or 0
    except SimExit as e:
        return e.code
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
