# -*- coding: utf-8 -*-
"""Derive sparkfleet's vLLM fingerprint from the sources of a real vLLM wheel.

The fingerprint is what sparkfleet depends on in one vLLM release: the
``vllm serve`` options (flags, value kinds, choices, negations), how its help
behaves, the ``VLLM_*`` environment variables it knows, the keys of the JSON
configs sparkfleet renders, the health and metric surface the gates read, the
start-up log lines matched, and the hashes of the files the overlay patches.

It is produced by reading the wheel's Python sources with ``ast`` the way
vLLM's own ``EngineArgs.add_cli_args`` / ``make_arg_parser`` and
``_compute_kwargs`` build the parser, so nothing is imported (no torch) and
nothing is typed from memory. ``scripts/vllm-fingerprint`` writes the result
to ``files/vllm/``; a unit test regenerates it and fails on any difference.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re

FINGERPRINT_SCHEMA = 1

ARG_UTILS = "vllm/engine/arg_utils.py"
CLI_ARGS = "vllm/entrypoints/common/cli_args.py"
SERVE = "vllm/entrypoints/cli/serve.py"
ARGPARSE_UTILS = "vllm/utils/argparse_utils.py"
ENVS = "vllm/envs.py"
HEALTH = "vllm/entrypoints/serve/instrumentator/health.py"

# Fields whose int type is parsed with vLLM's human-readable parser
# (mirrors _compute_kwargs; checked against the source below).
_HUMAN_INT_SET = "human_readable_int_args"

# What sparkfleet reads from a running vLLM: metric names and log line texts.
# Each entry says where it is expected (a hint: the whole tree is searched when
# the file moved), the texts it may have (a release may reword a line: the
# first text found wins) and what in sparkfleet reads it, with ``needed`` true
# when that reader cannot work without it. A literal found nowhere is not an
# error of the extractor: it is recorded under ``missing`` with its reader,
# and the release report (scripts/vllm-release) names the consequence.
def _surface(file, read_by, needed, *texts):
    return {"file": file, "read_by": read_by, "needed": needed, "texts": texts}


_LOGGERS = "vllm/v1/metrics/loggers.py"
_SPEC_METRICS = "vllm/v1/spec_decode/metrics.py"
_PROGRESS = "the start-up progress line (phase %s)"
SURFACE_LITERALS = {
    "metrics": {
        "vllm:kv_cache_usage_perc": _surface(_LOGGERS, "status.yml's KV column; the KV cache alert", False),
        "vllm:num_requests_running": _surface(_LOGGERS, "status.yml and the rollout's drain (requests in flight)", True),
        "vllm:num_requests_waiting": _surface(_LOGGERS, "status.yml's queue column; the queue alert", False),
        "vllm:num_preemptions": _surface(_LOGGERS, "the preemption alert", False),
        "vllm:prefix_cache_queries": _surface(_LOGGERS, "the dashboard's prefix cache hit rate", False),
        "vllm:prefix_cache_hits": _surface(_LOGGERS, "the dashboard's prefix cache hit rate", False),
        "vllm:prompt_tokens": _surface(_LOGGERS, "the dashboard's prompt tok/s", False),
        "vllm:generation_tokens": _surface(_LOGGERS, "the dashboard's decode tok/s", False),
        "vllm:request_success": _surface(_LOGGERS, "the dashboard's request rate", False),
        "vllm:time_to_first_token_seconds": _surface(_LOGGERS, "the TTFT alert and graph", False),
        "vllm:inter_token_latency_seconds": _surface(_LOGGERS, "the inter-token latency graph", False),
        "vllm:e2e_request_latency_seconds": _surface(_LOGGERS, "the request latency graph", False),
        "vllm:request_queue_time_seconds": _surface(_LOGGERS, "the queue time graph", False),
        "vllm:spec_decode_num_drafts": _surface(_SPEC_METRICS, "the health gate's MTP acceptance check", True),
        "vllm:spec_decode_num_accepted_tokens": _surface(_SPEC_METRICS, "the health gate's MTP acceptance check",
                                                         True),
        "vllm:spec_decode_num_draft_tokens": _surface(_SPEC_METRICS, "the dashboard's MTP draft tokens", False),
        "vllm:spec_decode_num_accepted_tokens_per_pos": _surface(_SPEC_METRICS, "the MTP acceptance per position",
                                                                 False),
    },
    "log_lines": {
        "kv_cache_size": _surface("vllm/v1/core/kv_cache_utils.py", "the health gate's KV cache size check", True,
                                  "%s KV cache size: %s tokens"),
        "max_concurrency": _surface("vllm/v1/core/kv_cache_utils.py", "the benchmark's concurrency ceiling", False,
                                    "Maximum concurrency for %s tokens per request: %.2fx"),
        "loading_weights_took": _surface(None, "the unit's read-ahead restore (waits for a weights-loaded line)",
                                         False, "Loading weights took"),
        "model_loading_took": _surface(None, "the unit's read-ahead restore (waits for a weights-loaded line)",
                                       False, "Model loading took"),
        "capturing_cuda_graphs": _surface(None, _PROGRESS % "cuda_graphs", False, "Capturing CUDA graphs"),
        "init_engine_took": _surface(None, "the unit's read-ahead restore (waits for a weights-loaded line)", False,
                                     "init engine (profile, create kv cache, warmup model) took"),
        "free_memory_check": _surface("vllm/v1/worker/utils.py", "doctor's free-memory signature", False,
                                      "less than desired GPU memory utilization"),
        "unknown_env": _surface(None, "the launch check's unknown VLLM_* warning (vLLM's own wording)", False,
                                "Unknown vLLM environment variable detected"),
        # Start-up phases the progress report names (head, then worker).
        "head_waits_for_workers": _surface("vllm/v1/executor/multiproc_executor.py", _PROGRESS % "rendezvous",
                                           False, "DP group leader: node_rank=%d"),
        "headless_launch": _surface("vllm/entrypoints/cli/serve.py", _PROGRESS % "rendezvous", False,
                                    "headless multiproc executor, "),
        # The V1 model runner says the first, the V2 runner (vllm/v1/worker/gpu/) the second:
        # 0.33.0 has both (V2 unless a feature needs V1), 0.34.0 only V2.
        "starting_to_load": _surface("vllm/v1/worker/gpu_model_runner.py", _PROGRESS % "loading", False,
                                     "Starting to load model %s...", "Loading model from scratch..."),
        "loading_shards": _surface(None, _PROGRESS % "loading, with the shard count", False,
                                   "Loading safetensors checkpoint shards"),
        "kv_cache_memory": _surface(None, _PROGRESS % "profiling", False, "Available KV cache memory: %s GiB"),
        "graph_capturing_finished": _surface(None, _PROGRESS % "engine_ready", False, "Graph capturing finished in"),
        "api_server_starting": _surface(None, _PROGRESS % "api_starting", False, "Starting vLLM server on %s"),
        # What a SIGTERM makes vLLM say (--shutdown-timeout: 0 aborts, >0 drains).
        "shutdown_triggered": _surface(None, "the simulator's shutdown words (the drain is proven against them)",
                                       False, "[shutdown] API server: shutdown triggered"),
        "shutdown_stopping_engine": _surface(None, "the simulator's shutdown words", False,
                                             "[shutdown] API server: stopping engine client mode=%s timeout=%ss"),
        "shutdown_draining": _surface(None, "the simulator's shutdown words", False,
                                      "[shutdown] EngineCore: draining in-flight requests "),
        "shutdown_aborting": _surface(None, "the simulator's shutdown words", False,
                                      "[shutdown] EngineCore: aborting in-flight requests count=%d"),
    },
}

# Request fields the simulator honours, with the request class and file that
# must declare them in the pinned release (their defaults are recorded).
REQUEST_FIELDS = {
    "chat": ("ChatCompletionRequest", "vllm/entrypoints/openai/chat_completion/protocol.py",
             ("max_tokens", "max_completion_tokens", "min_tokens", "ignore_eos", "stream")),
    "completion": ("CompletionRequest", "vllm/entrypoints/openai/completion/protocol.py",
                   ("max_tokens", "min_tokens", "ignore_eos", "stream")),
}

# Config classes whose keys sparkfleet renders as JSON flags, and the fields
# of each whose allowed values the fingerprint records.
JSON_CONFIGS = {
    "speculative_config": ("SpeculativeConfig", ("method",)),
    "compilation_config": ("CompilationConfig", ("cudagraph_mode", "mode")),
}


class FingerprintError(Exception):
    """The wheel's sources do not have the shape the extractor understands."""


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------- source index

_OTHER_PLATFORMS = ("/cpu/", "/xpu", "/tpu", "/rocm", "/hpu", "/neuron")


class SourceIndex:
    """Module ASTs of a vLLM tree, with class, alias and import lookups."""

    def __init__(self, read_text, names):
        self._read = read_text
        self._names = set(names)
        self._trees = {}
        self._texts = {}
        self._classes = None

    def tree(self, path):
        if path not in self._trees:
            self._trees[path] = ast.parse(self._read(path), filename=path)
        return self._trees[path]

    def text(self, path):
        if path not in self._texts:
            self._texts[path] = self._read(path)
        return self._texts[path]

    def has(self, path):
        return path in self._names

    def find(self, literal, hint=None):
        """The file holding ``literal``: ``hint`` when it does, else the first
        vllm/ source that does (sorted, so the answer is stable), else None."""
        if hint and self.has(hint) and literal in self.text(hint):
            return hint
        # CUDA's code path first: another platform's copy of a line is not the one a Spark logs.
        order = sorted(self._names, key=lambda p: (any(part in p for part in _OTHER_PLATFORMS), p))
        return next((p for p in order if p.startswith("vllm/") and literal in self.text(p)), None)

    def module_path(self, dotted):
        base = dotted.replace(".", "/")
        for candidate in (base + ".py", base + "/__init__.py"):
            if candidate in self._names:
                return candidate
        return None

    def _all_classes(self):
        if self._classes is None:
            self._classes = {}
            for path in sorted(self._names):
                if not (path.startswith("vllm/config/") or path.startswith("vllm/entrypoints/")
                        or path.startswith("vllm/engine/") or path.startswith("vllm/v1/")):
                    continue
                try:
                    tree = self.tree(path)
                except SyntaxError:
                    continue
                for node in tree.body:
                    if isinstance(node, ast.ClassDef):
                        self._classes.setdefault(node.name, []).append((path, node))
        return self._classes

    def resolve(self, name, path, depth=0):
        """Definition of ``name`` as seen from module ``path``: (kind, path, node)."""
        if depth > 8:
            return None
        tree = self.tree(path)
        body = list(tree.body)
        for node in tree.body:
            # `if TYPE_CHECKING: import X  else: X = Any`: what runs is the else branch
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                body = node.orelse + body
        for node in body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return ("class", path, node)
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return ("alias", path, node.value)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name \
                    and node.value is not None:
                return ("alias", path, node.value)
            if getattr(ast, "TypeAlias", None) and isinstance(node, getattr(ast, "TypeAlias")) \
                    and node.name.id == name:
                return ("alias", path, node.value)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or node.level):
                module = node.module or ""
                if node.level:
                    # relative import: from .types import X (inside package P)
                    package = path.rsplit("/", 1)[0].split("/")
                    if not path.endswith("/__init__.py") or node.level > 1:
                        package = package[:len(package) - (node.level - 1)]
                    module = ".".join(package + ([module] if module else []))
                for alias in node.names:
                    if alias.name == "*":
                        target = self.module_path(module)
                        found = self.resolve(name, target, depth + 1) if target else None
                        if found and found[0] in ("class", "alias"):
                            return found
                        continue
                    if (alias.asname or alias.name) == name:
                        target = self.module_path(module)
                        if target is None:
                            return ("external", module, alias.name)
                        found = self.resolve(alias.name, target, depth + 1)
                        if found:
                            return found
                        sub = self.module_path(module + "." + alias.name)
                        if sub:
                            return ("module", sub, None)
        candidates = self._all_classes().get(name, [])
        if len(candidates) == 1:
            return ("class", candidates[0][0], candidates[0][1])
        return None


def _decorator_names(node):
    names = []
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute):
            names.append(target.attr)
        elif isinstance(target, ast.Name):
            names.append(target.id)
    return names


def _is_dataclass(node):
    return any(n in ("config", "dataclass") for n in _decorator_names(node))


def _is_enum(index, path, node, depth=0):
    for base in node.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
        if name in ("Enum", "IntEnum", "StrEnum", "Flag", "IntFlag"):
            return True
        if name and depth < 4:
            found = index.resolve(name, path)
            if found and found[0] == "class" and _is_enum(index, found[1], found[2], depth + 1):
                return True
    return False


def _enum_members(node):
    members = []
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            if not name.startswith("_"):
                members.append(name)
    return members


# ----------------------------------------------------------- type hints

class Hint:
    """One member of a field's flattened type hint."""

    def __init__(self, kind, args=None, cls=None):
        self.kind = kind          # bool int float str none dict list tuple set literal dataclass class any
        self.args = args or []    # literal options, or element hints
        self.cls = cls            # (path, ClassDef) for dataclass/class

    def __repr__(self):
        return "Hint(%s, %r)" % (self.kind, self.args)


_BUILTINS = {"bool": "bool", "int": "int", "float": "float", "str": "str", "dict": "dict", "Dict": "dict",
             "list": "list", "List": "list", "tuple": "tuple", "Tuple": "tuple", "set": "set", "Set": "set",
             "None": "none", "Any": "class", "Mapping": "dict", "Sequence": "list", "Callable": "class",
             "bytes": "any", "object": "any", "type": "any", "Path": "class", "TypedDict": "any"}


def _subscript_parts(node):
    sl = node.slice
    return list(sl.elts) if isinstance(sl, ast.Tuple) else [sl]


def hints_of(index, path, node, depth=0):
    """Flatten an annotation AST into a list of Hint (Union/Optional/Annotated/aliases)."""
    if depth > 12 or node is None:
        return [Hint("any")]
    if isinstance(node, ast.Constant):
        if node.value is None:
            return [Hint("none")]
        if isinstance(node.value, str):
            try:
                return hints_of(index, path, ast.parse(node.value, mode="eval").body, depth + 1)
            except SyntaxError:
                return [Hint("any")]
        return [Hint("any")]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return hints_of(index, path, node.left, depth + 1) + hints_of(index, path, node.right, depth + 1)
    if isinstance(node, ast.Subscript):
        head = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
        parts = _subscript_parts(node)
        if head == "Annotated":
            return hints_of(index, path, parts[0], depth + 1)
        if head in ("Union",):
            out = []
            for p in parts:
                out += hints_of(index, path, p, depth + 1)
            return out
        if head == "Optional":
            return hints_of(index, path, parts[0], depth + 1) + [Hint("none")]
        if head == "Literal":
            options = []
            for p in parts:
                if isinstance(p, ast.Constant):
                    options.append(p.value)
                else:
                    for h in hints_of(index, path, p, depth + 1):
                        if h.kind == "literal":
                            options += h.args
            return [Hint("literal", options)]
        if head in ("ClassVar", "InitVar"):
            return [Hint("classvar")]
        kind = _BUILTINS.get(head)
        if kind in ("list", "tuple", "set"):
            return [Hint(kind, [hints_of(index, path, p, depth + 1) if not (isinstance(p, ast.Constant)
                                                                                 and p.value is Ellipsis)
                                else "..." for p in parts])]
        if kind == "dict":
            return [Hint("dict")]
        if kind:
            return [Hint(kind)]
        return hints_of(index, path, node.value, depth + 1)
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
    if name is None:
        return [Hint("any")]
    if name in _BUILTINS:
        return [Hint(_BUILTINS[name])]
    found = index.resolve(name, path)
    if found is None or found[0] in ("external", "module"):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "torch":
            return [Hint("class", cls=None)]
        return [Hint("class", cls=None)]
    kind, where, target = found
    if kind == "alias":
        return hints_of(index, where, target, depth + 1)
    if _is_dataclass(target):
        return [Hint("dataclass", cls=(where, target))]
    if _is_enum(index, where, target):
        return [Hint("enum", _enum_members(target), cls=(where, target))]
    for base in target.bases:
        base_name = getattr(base, "id", None) or getattr(base, "attr", None)
        if base_name in ("dict", "TypedDict") or (isinstance(base, ast.Subscript)
                                                    and getattr(base.value, "id", "") in ("dict", "Dict")):
            return [Hint("typeddict" if base_name == "TypedDict" else "dict")]
    return [Hint("class", cls=(where, target))]


def dataclass_fields(index, path, node, depth=0):
    """[(name, annotation, path)] of a dataclass, base classes first, like dataclasses.fields."""
    fields = []
    for base in node.bases:
        name = getattr(base, "id", None) or getattr(base, "attr", None)
        if name and depth < 6:
            found = index.resolve(name, path)
            if found and found[0] == "class" and _is_dataclass(found[2]):
                fields += dataclass_fields(index, found[1], found[2], depth + 1)
    seen = {f[0]: i for i, f in enumerate(fields)}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            hint = stmt.annotation
            head = hint.value if isinstance(hint, ast.Subscript) else hint
            head_name = getattr(head, "id", None) or getattr(head, "attr", None)
            if head_name in ("ClassVar", "InitVar"):
                continue
            entry = (stmt.target.id, hint, path)
            if stmt.target.id in seen:
                fields[seen[stmt.target.id]] = entry
            else:
                seen[stmt.target.id] = len(fields)
                fields.append(entry)
    return fields


def field_kwargs(index, cls_path, cls_node, field_name, annotation, path, human_int_names):
    """The argparse kwargs vLLM's _compute_kwargs derives for one field (as a plain dict)."""
    hints = hints_of(index, path, annotation)
    kinds = {h.kind for h in hints}
    optional = "none" in kinds
    spec = {"value": None, "choices": None, "nargs": None, "action": "store", "optional": False}
    dataclass = next((h for h in hints if h.kind == "dataclass"), None)
    literal = next((h for h in hints if h.kind == "literal"), None)
    if dataclass is not None:
        spec["value"] = "json"
        spec["config_class"] = dataclass.cls[1].name
    elif kinds - {"none"} == {"bool", "str"} and optional:
        spec.update(value="str", nargs="?", const=True)
    elif "bool" in kinds:
        spec["action"] = "bool"
    elif literal is not None:
        options = sorted(literal.args, key=lambda v: (str(type(v)), v))
        spec["value"] = type(options[0]).__name__ if options else "str"
        if "str" not in kinds:
            spec["choices"] = options
        else:
            # Shown as the metavar; argparse takes any string and the config
            # class rejects unknown ones later (e.g. "Invalid kv_cache_dtype").
            spec["known_values"] = options
    elif kinds & {"tuple", "list", "set"}:
        coll = next(h for h in hints if h.kind in ("tuple", "list", "set"))
        elems = [e for e in coll.args if e != "..."]
        elem = elems[0] if elems else [Hint("str")]
        elem_kinds = {h.kind for h in elem}
        if len(elem_kinds) > 1:
            spec["value"] = "str"
        else:
            only = elem[0]
            if only.kind == "literal":
                options = sorted(only.args)
                spec["value"] = type(options[0]).__name__
                spec["choices"] = options
            else:
                spec["value"] = only.kind if only.kind in ("int", "float", "str") else "str"
        spec["nargs"] = "+" if coll.kind != "tuple" or "..." in coll.args else len(coll.args)
    elif "int" in kinds:
        if field_name == "max_model_len":
            spec["value"] = "human_int_or_auto"
        elif field_name in human_int_names:
            spec["value"] = "human_int"
        else:
            spec["value"] = "int"
    elif "float" in kinds:
        spec["value"] = "float"
    elif ("dict" in kinds or "typeddict" in kinds) and ("str" in kinds or kinds & {"class", "enum", "typeddict"}):
        spec["value"] = "json_or_str"
    elif "dict" in kinds or "typeddict" in kinds:
        spec["value"] = "json"
    else:
        spec["value"] = "str"
    if optional and "bool" not in kinds:
        spec["optional"] = True
        if spec["choices"] is not None:
            spec["choices"] = spec["choices"] + [None]
    return spec


# ----------------------------------------------------------- parser walk

def _const(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return _NOT_CONST


_NOT_CONST = object()


def _dotted(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return base + "." + node.attr if base else None
    return None


class ParserWalk:
    """Replays the add_argument calls of vLLM's serve parser on plain dicts."""

    def __init__(self, index):
        self.index = index
        self.actions = []
        self.groups = ["positional arguments", "options"]
        self._human_int_names = self._find_human_int_names()

    def _find_human_int_names(self):
        tree = self.index.tree(ARG_UTILS)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == _HUMAN_INT_SET
                                                    for t in node.targets):
                value = _const(node.value)
                if value is not _NOT_CONST:
                    return set(value)
        raise FingerprintError("%s: %s not found; _compute_kwargs changed shape" % (ARG_UTILS, _HUMAN_INT_SET))

    def class_kwargs(self, name, path):
        found = self.index.resolve(name, path)
        if not found or found[0] != "class":
            raise FingerprintError("%s: cannot find config class %s" % (path, name))
        cls_path, cls_node = found[1], found[2]
        out = {}
        for fname, annotation, fpath in dataclass_fields(self.index, cls_path, cls_node):
            out[fname] = field_kwargs(self.index, cls_path, cls_node, fname, annotation, fpath,
                                      self._human_int_names)
        return out

    # -- evaluation of the small expression language add_cli_args uses
    def _kwargs_ref(self, node, env):
        """Resolve ``X_kwargs["field"]`` / ``get_kwargs(C)["f"]`` / a variable to a spec dict."""
        if isinstance(node, ast.Name) and node.id in env and isinstance(env[node.id], dict) \
                and "value" in env[node.id]:
            return env[node.id]
        if isinstance(node, ast.Subscript):
            key = _const(node.slice)
            base = node.value
            if isinstance(base, ast.Name) and base.id in env and isinstance(env[base.id], dict):
                table = env[base.id]
                if key in table:
                    return table[key]
                raise FingerprintError("no field %r in %s" % (key, base.id))
            if isinstance(base, ast.Call) and _dotted(base.func) == "get_kwargs":
                table = self.class_kwargs(_dotted(base.args[0]), env["__path__"])
                return table[key]
        return None

    def _choices(self, node, env):
        value = _const(node)
        if value is not _NOT_CONST:
            return list(value), False
        if isinstance(node, ast.Call) and _dotted(node.func) == "get_args" and node.args:
            hints = hints_of(self.index, env["__path__"], node.args[0])
            options = [o for h in hints if h.kind == "literal" for o in h.args]
            return options, False
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, lopen = self._choices(node.left, env)
            right, ropen = self._choices(node.right, env)
            return (left or []) + (right or []), lopen or ropen
        # Platform-dependent part (e.g. current_platform.device_type): open-ended.
        return [], True

    def _apply_override(self, spec, key, value_node, env):
        if key == "type":
            spec["optional"] = False
            name = _dotted(value_node) or (value_node.func.id if isinstance(value_node, ast.Call)
                                           and isinstance(value_node.func, ast.Name) else None)
            if isinstance(value_node, ast.Call) and _dotted(value_node.func) == "optional_type":
                inner = _dotted(value_node.args[0])
                spec["value"] = "json" if inner == "json.loads" else ("str" if inner == "str" else inner)
                spec["optional"] = True
            elif name == "json.loads":
                spec["value"] = "json"
            elif name in ("int", "float", "str"):
                spec["value"] = name
            elif isinstance(value_node, ast.Lambda):
                text = ast.unparse(value_node)
                spec["value"] = "lower_underscore" if ".lower().replace('-', '_')" in text else "custom"
            elif name:
                spec["value"] = {"parse_reasoning_parser": "str"}.get(name, name)
        elif key == "action":
            name = _dotted(value_node) or _const(value_node)
            if name in ("argparse.BooleanOptionalAction", "BooleanOptionalAction"):
                spec["action"] = "bool"
            elif name in ("store_true", "store_false", "append", "store"):
                spec["action"] = name
            else:
                spec["action"] = "custom"
        elif key == "choices":
            choices, open_ended = self._choices(value_node, env)
            spec["choices"] = choices
            if open_ended:
                spec["choices_open"] = True
        elif key == "nargs":
            spec["nargs"] = _const(value_node)
        elif key == "deprecated":
            spec["deprecated"] = bool(_const(value_node))
        elif key == "dest":
            spec["dest"] = _const(value_node)

    def _new_spec(self):
        return {"value": "str", "choices": None, "nargs": None, "action": "store", "optional": False}

    def add_argument(self, call, env, group):
        flags = [_const(a) for a in call.args]
        if any(f is _NOT_CONST for f in flags):
            raise FingerprintError("%s:%d: add_argument with non-constant names" % (env["__path__"], call.lineno))
        spec = None
        overrides = []
        for kw in call.keywords:
            if kw.arg is None and isinstance(kw.value, ast.Dict):
                # **{**X["field"], "default": ...}: a spread plus overrides
                for key, value in zip(kw.value.keys, kw.value.values):
                    if key is None:
                        ref = self._kwargs_ref(value, env)
                        if ref is None:
                            raise FingerprintError("%s:%d: cannot resolve **%s" % (
                                env["__path__"], call.lineno, ast.unparse(value)))
                        spec = _copy_spec(ref)
                    else:
                        overrides.append((_const(key), value))
            elif kw.arg is None:
                ref = self._kwargs_ref(kw.value, env)
                if ref is None:
                    raise FingerprintError("%s:%d: cannot resolve **%s" % (env["__path__"], call.lineno,
                                                                          ast.unparse(kw.value)))
                spec = _copy_spec(ref)
        if spec is None:
            spec = self._new_spec()
            if not any(kw.arg == "type" for kw in call.keywords) and not any(
                    kw.arg == "action" for kw in call.keywords):
                spec["value"] = "str"
        overrides += [(kw.arg, kw.value) for kw in call.keywords if kw.arg is not None]
        for key, value in overrides:
            if key not in ("help", "default", "metavar", "const", "required"):
                self._apply_override(spec, key, value, env)
        self._record(flags, spec, group)

    def _record(self, flags, spec, group):
        positional = bool(flags) and not flags[0].startswith("-")
        if positional:
            dest = flags[0]
            flags = []
        else:
            long_flags = [f for f in flags if f.startswith("--")]
            dest = spec.get("dest") or (long_flags[0] if long_flags else flags[0]).lstrip("-").replace("-", "_")
        action = spec["action"]
        hidden = []
        visible = list(flags)
        if action == "bool":
            # argparse.BooleanOptionalAction adds --no-X; vLLM registers its
            # EnableDisableAction instead, which pairs --enable-X/--disable-X
            # and keeps --no-X accepted but out of help.
            negated = ["--no-" + f[2:] for f in flags if f.startswith("--")]
            inverses = []
            for f in flags:
                for prefix, inverse in (("--enable-", "--disable-"), ("--disable-", "--enable-")):
                    if f.startswith(prefix):
                        inverses.append(inverse + f[len(prefix):])
            if inverses:
                visible = flags + inverses
                hidden = negated
            else:
                # argparse puts each --no-X right after its --X
                visible = []
                for f in flags:
                    visible += [f, "--no-" + f[2:]] if f.startswith("--") else [f]
            negations = sorted(set(negated) | set(inverses))
        else:
            negations = []
        entry = {
            "flags": visible,
            "hidden_flags": hidden,
            "negations": negations,
            "dest": dest,
            "group": group,
            "action": action,
            "value": None if action in ("bool", "store_true", "store_false") else spec["value"],
            "choices": _jsonable(spec.get("choices")),
            "nargs": 0 if action in ("bool", "store_true", "store_false") else spec.get("nargs"),
            "optional": bool(spec.get("optional")) and action not in ("bool", "store_true", "store_false"),
        }
        if spec.get("choices_open"):
            entry["choices_open"] = True
        if spec.get("deprecated"):
            entry["deprecated"] = True
        if spec.get("known_values") and action == "store":
            entry["known_values"] = list(spec["known_values"])
        if spec.get("config_class"):
            entry["config_class"] = spec["config_class"]
        self.actions.append(entry)

    # -- statements
    def run_function(self, func, path, env, group):
        env = dict(env)
        env["__path__"] = path
        self._run_body(func.body, env, group)

    def _run_body(self, body, env, group):
        for stmt in body:
            group = self._run_stmt(stmt, env, group)
        return group

    def _run_stmt(self, stmt, env, group):
        if isinstance(stmt, ast.If):
            # Both branches can add arguments (e.g. --model is left out of
            # `vllm serve --help` only); a real serve run takes the body.
            self._run_body(stmt.body, env, group)
            return group
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
            if isinstance(target, ast.Name):
                if isinstance(value, ast.Call) and _dotted(value.func) == "get_kwargs":
                    env[target.id] = self.class_kwargs(_dotted(value.args[0]), env["__path__"])
                    return group
                if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
                        and value.func.attr == "add_argument_group":
                    title = None
                    for kw in value.keywords:
                        if kw.arg == "title":
                            title = _const(kw.value)
                            if title is _NOT_CONST:
                                title = env.get("__group_title__")
                    if title is None and value.args:
                        title = _const(value.args[0])
                    env[target.id] = ("group", title)
                    if title not in self.groups:
                        self.groups.append(title)
                    return group
                ref = self._kwargs_ref(value, env)
                if ref is not None:
                    env[target.id] = ref
                    return group
            if isinstance(target, ast.Subscript):
                # X["field"]["key"] = value
                inner = target.value
                key = _const(target.slice)
                spec = self._kwargs_ref(inner, env)
                if spec is not None and key in ("type", "action", "choices", "nargs"):
                    self._apply_override(spec, key, value, env)
                elif spec is not None and key == "default":
                    pass
                return group
            return group
        if isinstance(stmt, ast.Delete):
            for target in stmt.targets:
                if isinstance(target, ast.Subscript):
                    spec = self._kwargs_ref(target.value, env)
                    if spec is not None and _const(target.slice) == "nargs":
                        spec["nargs"] = None
            return group
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            call = stmt.value
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr == "add_argument":
                owner = func.value.id if isinstance(func.value, ast.Name) else None
                entry = env.get(owner)
                this_group = entry[1] if isinstance(entry, tuple) and entry[0] == "group" else None
                self.add_argument(call, env, this_group or ("options" if call.args and
                                                            str(_const(call.args[0])).startswith("-")
                                                            else "positional arguments"))
                return group
            if isinstance(func, ast.Attribute) and func.attr == "remove" and isinstance(func.value, ast.Subscript):
                spec = self._kwargs_ref(func.value.value, env)
                if spec is not None and _const(func.value.slice) == "choices":
                    removed = _const(call.args[0])
                    if removed is _NOT_CONST:
                        removed = self._module_constant(call.args[0], env["__path__"])
                    if removed in (spec.get("choices") or []):
                        spec["choices"] = [c for c in spec["choices"] if c != removed]
                    else:
                        raise FingerprintError("cannot remove %r from choices" % (removed,))
            return group
        if isinstance(stmt, ast.If):
            return group
        return group

    def _module_constant(self, node, path):
        name = _dotted(node)
        found = self.index.resolve(name, path) if name else None
        if found and found[0] == "alias":
            value = _const(found[2])
            if value is not _NOT_CONST:
                return value
        raise FingerprintError("%s: cannot evaluate %s" % (path, ast.unparse(node)))


def _copy_spec(spec):
    out = dict(spec)
    if isinstance(out.get("choices"), list):
        out["choices"] = list(out["choices"])
    return out


def _jsonable(choices):
    if choices is None:
        return None
    return [c for c in choices]


def _find_function(tree, qualname):
    parts = qualname.split(".")
    nodes = tree.body
    found = None
    for part in parts:
        found = next((n for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None)
        if found is None:
            return None
        nodes = found.body
    return found


# ----------------------------------------------------------- fingerprint parts

def serve_options(index):
    """The actions of ``vllm serve``'s parser, in registration order."""
    walk = ParserWalk(index)
    walk.actions.append({"flags": ["-h", "--help"], "hidden_flags": [], "negations": [], "dest": "help",
                         "group": "options", "action": "help", "value": None, "choices": None,
                         "nargs": 0, "optional": False})
    make = _find_function(index.tree(CLI_ARGS), "make_arg_parser")
    if make is None:
        raise FingerprintError("%s: make_arg_parser not found" % CLI_ARGS)
    env = {}
    for stmt in make.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) \
                and isinstance(stmt.value.func, ast.Attribute) and stmt.value.func.attr == "add_argument":
            walk.run_function(ast.Module(body=[stmt], type_ignores=[]), CLI_ARGS, env, None)
        elif isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
            called = _dotted(stmt.value.func)
            if called == "FrontendArgs.add_cli_args":
                _frontend_options(index, walk)
            elif called == "AsyncEngineArgs.add_cli_args":
                engine = _find_function(index.tree(ARG_UTILS), "EngineArgs.add_cli_args")
                walk.run_function(engine, ARG_UTILS, {}, None)
                async_add = _find_function(index.tree(ARG_UTILS), "AsyncEngineArgs.add_cli_args")
                body = [s for s in async_add.body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                        and getattr(s.value.func, "attr", "") == "add_argument"]
                walk.run_function(ast.Module(body=body, type_ignores=[]), ARG_UTILS, {}, None)
            elif called is not None:
                raise FingerprintError("%s: make_arg_parser calls %s; the extractor does not know it"
                                       % (CLI_ARGS, called))
    return walk.actions, walk.groups


def _frontend_options(index, walk):
    """FrontendArgs.add_cli_args: one option per dataclass field, after _customize_cli_kwargs."""
    tree = index.tree(CLI_ARGS)
    frontend = _find_function(tree, "FrontendArgs")
    table = walk.class_kwargs("FrontendArgs", CLI_ARGS)
    env = {"table": table, "__path__": CLI_ARGS}
    for cls_name in ("BaseFrontendArgs", "FrontendArgs"):
        custom = _find_function(tree, cls_name + "._customize_cli_kwargs")
        if custom is None:
            continue
        for stmt in ast.walk(custom):
            if isinstance(stmt, (ast.Assign, ast.Delete)):
                _replay_frontend_edit(walk, stmt, env)
    title = frontend.name.replace("Args", "")
    if title not in walk.groups:
        walk.groups.append(title)
    for name, spec in table.items():
        walk._record(["--" + name.replace("_", "-")], _copy_spec(spec), title)


def _replay_frontend_edit(walk, stmt, env):
    table = env["table"]

    def spec_of(node):
        # frontend_kwargs["field"]
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id == "frontend_kwargs":
            return table.get(_const(node.slice))
        return None

    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Subscript):
        target = stmt.targets[0]
        spec = spec_of(target.value)
        key = _const(target.slice)
        if spec is not None and key in ("type", "action", "nargs", "choices"):
            walk._apply_override(spec, key, stmt.value, env)
    if isinstance(stmt, ast.Delete):
        for target in stmt.targets:
            if isinstance(target, ast.Subscript):
                spec = spec_of(target.value)
                if spec is not None and _const(target.slice) == "nargs":
                    spec["nargs"] = None


def serve_usage(index):
    for node in ast.walk(index.tree(SERVE)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_parser":
            for kw in node.keywords:
                if kw.arg == "usage":
                    return "usage: " + _const(kw.value)
    raise FingerprintError("%s: no usage= in the serve subparser" % SERVE)


def help_behaviour(index):
    """How ``vllm serve --help`` behaves, read from FlexibleArgumentParser.format_help."""
    fmt = _find_function(index.tree(ARGPARSE_UTILS), "FlexibleArgumentParser.format_help")
    if fmt is None:
        return {"plain_lists_options": True, "all_option": "--help"}
    text = ast.unparse(fmt)
    grouped = "Config Groups" in text
    return {
        "plain_lists_options": not grouped,
        "plain_heading": "Config Groups" if grouped else None,
        "all_option": "--help=all" if "'all'" in text else "--help",
        "keyword_search": "_search_keyword" in text,
    }


def known_env(index):
    tree = index.tree(ENVS)
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            target = node.target.id
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
        if target == "environment_variables" and isinstance(node.value, ast.Dict):
            names = sorted(_const(k) for k in node.value.keys if k is not None)
            if not names:
                break
            return names
    raise FingerprintError("%s: environment_variables dict not found" % ENVS)


def json_config_keys(index, walk_cache=None):
    out = {}
    config_index = index.module_path("vllm.config")
    for dest, (cls_name, choice_fields) in sorted(JSON_CONFIGS.items()):
        found = index.resolve(cls_name, config_index)
        if not found or found[0] != "class":
            raise FingerprintError("vllm.config: class %s not found" % cls_name)
        fields = dataclass_fields(index, found[1], found[2])
        keys = sorted(name for name, _, _ in fields)
        choices = {}
        for fname, annotation, fpath in fields:
            if fname in choice_fields:
                values = []
                for hint in hints_of(index, fpath, annotation):
                    if hint.kind == "literal":
                        values += hint.args
                    elif hint.kind == "enum":
                        values += hint.args
                choices[fname] = sorted(set(str(v) for v in values))
        out[dest] = {"class": cls_name, "keys": keys, "choices": choices}
    return out


def method_deprecations(index):
    """Speculative methods the release replaces by another (``deepseek_mtp`` -> ``mtp``).

    Reads ``if self.method in get_args(ALIAS) and self.method != "new": ...
    deprecated ... self.method = "new"`` in SpeculativeConfig.
    """
    path = "vllm/config/speculative.py"
    found = {}
    for node in ast.walk(index.tree(path)):
        if not isinstance(node, ast.If):
            continue
        test = ast.unparse(node.test)
        alias = re.search(r"self\.method in get_args\((\w+)\)", test)
        body = ast.unparse(ast.Module(body=node.body, type_ignores=[]))
        new = re.search(r"self\.method = '([a-z0-9_]+)'", body)
        if not (alias and new and "deprecated" in body):
            continue
        for hint in hints_of(index, path, ast.Name(id=alias.group(1))):
            for old in hint.args if hint.kind == "literal" else []:
                if old != new.group(1):
                    found[old] = new.group(1)
    return dict(sorted(found.items()))


def health_semantics(index):
    path = HEALTH if index.has(HEALTH) else (index.find('"/health"') or HEALTH)  # the router moved
    if not index.has(path):
        raise FingerprintError("no source declares the /health route")
    text = index.text(path)
    tree = index.tree(path)
    dead = "EngineDeadError" in text and re.search(r"status_code\s*=\s*503|HTTP_503|\b503\b", text) is not None
    route = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get" and node.args:
            value = _const(node.args[0])
            if value == "/health":
                route = value
    if route is None or not dead:
        raise FingerprintError("%s: /health or its 503-on-EngineDeadError not found" % path)
    return {"path": "/health", "ok": 200, "engine_dead": 503}


def surface_literals(index):
    """(metrics, log_lines, missing): each literal sparkfleet reads, with the
    file that holds it in this release; what no file holds goes to missing."""
    found = {"metrics": {}, "log_lines": {}}
    missing = {"metrics": {}, "log_lines": {}}
    for kind, entries in sorted(SURFACE_LITERALS.items()):
        for key, entry in sorted(entries.items()):
            texts = entry["texts"] or (key,)
            hits = [(text, path) for text in texts
                    for path in [index.find('"%s"' % text if kind == "metrics" else text, entry["file"])] if path]
            if not hits:
                missing[kind][key] = {"texts": list(texts), "read_by": entry["read_by"], "needed": entry["needed"]}
            elif kind == "metrics":
                found[kind][key] = hits[0][1]
            else:
                found[kind][key] = {"text": hits[0][0], "file": hits[0][1]}
                if len(hits) > 1:
                    # The release can say either (0.33.0 has both model runners): readers match all.
                    found[kind][key]["also"] = [text for text, _ in hits[1:]]
    return found["metrics"], found["log_lines"], missing


def request_fields(index):
    """Defaults of the request fields the simulator honours, per endpoint."""
    out = {}
    for endpoint, (cls_name, path, wanted) in sorted(REQUEST_FIELDS.items()):
        if not index.has(path) or "class %s(" % cls_name not in index.text(path):
            path = index.find("class %s(" % cls_name) or path  # the protocol module moved
        cls = next((node for node in index.tree(path).body
                    if isinstance(node, ast.ClassDef) and node.name == cls_name), None) if index.has(path) else None
        if cls is None:
            raise FingerprintError("%s: class %s not found" % (path, cls_name))
        found = {}
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                    and stmt.target.id in wanted:
                value = stmt.value
                if isinstance(value, ast.Call) and _dotted(value.func) == "Field":
                    value = next((kw.value for kw in value.keywords if kw.arg == "default"),
                                 value.args[0] if value.args else None)
                found[stmt.target.id] = {"default": _const(value) if value is not None else None}
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise FingerprintError("%s.%s lacks %s" % (cls_name, path, ", ".join(missing)))
        out[endpoint] = {"class": cls_name, "file": path, "fields": found}
    return out


def build(wheel, version, overlay_targets=()):
    """The fingerprint of the wheel (a sparkfleet_vllm_release.Wheel)."""
    names = [n for n in wheel.names if n.endswith(".py")]
    index = SourceIndex(wheel.read_text, names)
    options, groups = serve_options(index)
    metrics, log_lines, missing = surface_literals(index)
    files = {}
    missing["files"] = []
    for target in sorted(set(overlay_targets)):
        if target not in wheel.names:  # the overlay's file moved or went: the report names the entry
            missing["files"].append(target)
            continue
        data = wheel.read_bytes(target)
        files[target] = {"sha256": _sha256(data), "size": len(data)}
    return {
        "schema": FINGERPRINT_SCHEMA,
        "release": {"version": version},
        "serve": {
            "usage": serve_usage(index),
            "help": help_behaviour(index),
            "groups": groups,
            "options": options,
        },
        "json_configs": json_config_keys(index),
        "deprecated_values": {"speculative_config.method": method_deprecations(index)},
        "env": known_env(index),
        "health": health_semantics(index),
        "metrics": metrics,
        "log_lines": log_lines,
        "requests": request_fields(index),
        "files": files,
        "missing": missing,
    }


# ------------------------------------------------------- in a sparkfleet checkout

def fingerprint_path(root, version):
    return os.path.join(root, "files", "vllm", "vllm-%s.fingerprint.json" % version)


def fleet_version(root):
    """The release the fleet runs by default (sparkfleet_vllm_version)."""
    import yaml

    with open(os.path.join(root, "group_vars", "all", "fleet.yml"), encoding="utf-8") as handle:
        return str(yaml.safe_load(handle)["sparkfleet_vllm_version"])


def overlay_manifest(root):
    import yaml

    with open(os.path.join(root, "files", "overlay", "manifest.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def generate(root, version):
    """The fingerprint of a pinned release, read from its verified wheel."""
    import sparkfleet_vllm_release as release

    entry = release.pin(version, root)
    targets = [e["target"] for e in overlay_manifest(root).get("entries", [])]
    with release.Wheel(release.wheel_path(version, root)) as wheel:
        result = build(wheel, version, targets)
    result["release"].update({"wheel": entry["wheel"], "sha256": entry["sha256"]})
    return result


def to_json(result):
    return json.dumps(result, indent=1, sort_keys=True) + "\n"
