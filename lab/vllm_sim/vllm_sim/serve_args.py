"""`vllm serve`'s command line, generated from the pinned release's fingerprint.

The fingerprint (see fingerprint.py) lists every option of the real ``vllm
serve``: visible, hidden and negating option strings, the value kind, choices,
nargs, whether ``None`` is a value, and which JSON options are validated by a
config class while the arguments are parsed. This module turns that list into
an ``argparse`` parser that accepts and refuses what the real one does, with
argparse's own wording and exit codes, and prints help shaped like the real
grouped help. It also reproduces the argv rewriting the real parser does
before argparse sees anything (underscore spellings, ``--model``, dotted JSON
keys, ``--help=KEYWORD``, ``-O3``, ``--config FILE``).

Written for sparkfleet from the fingerprint and from observed behaviour of
vLLM 0.33.0; it contains no vLLM code.
"""

import argparse
import json
import re

# Sub-commands of the real `vllm` (0.33.0), in its order; only `serve` is simulated.
# They appear in the top-level usage that argparse prints for unrecognized arguments.
SUBCOMMANDS = ("chat", "complete", "serve", "launch", "bench", "collect-env",
               "download-kernels", "preload", "run-batch", "snapshot")

# JSON options whose config class the real CLI does NOT apply while parsing
# (it parses them with json.loads only and builds the config later, when the
# engine config is created): a bad key there fails with exit 1, not 2.
DEFERRED_JSON = frozenset({"speculative_config", "watermark_config", "diffusion_config"})

# JSON config values the real config class looks up as an enum member by name
# with no error handling: a wrong name escapes argparse as a KeyError (exit 1).
CRASHING_ENUM_KEYS = {("compilation_config", "cudagraph_mode")}


class ConfigCrash(Exception):
    """An exception the real parser does not turn into a usage error (exit 1, traceback)."""

    def __init__(self, exc_line, frames=None):
        super().__init__(exc_line)
        self.exc_line = exc_line
        self.frames = frames or []


# ---------------------------------------------------------------- value kinds

_SUFFIX = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")


def human_readable_int(value):
    """'8192' -> 8192; k/m/g/t are powers of 1000 (25.6k -> 25600), K/M/G/T of 1024 (2K -> 2048)."""
    text = value.strip()
    match = _SUFFIX.fullmatch(text)
    if match:
        number, suffix = match.groups()
        power = "kmgt".index(suffix.lower()) + 1
        if suffix.islower():
            return int(float(number) * 1000 ** power)
        if "." in number:
            raise argparse.ArgumentTypeError(
                "Decimals are not allowed with binary suffixes like %s: write %s%s for a "
                "decimal multiple" % (suffix, number, suffix.lower()))
        return int(number) * 1024 ** power
    return int(text)


def human_readable_int_or_auto(value):
    """Like human_readable_int; 'auto' (any case) and -1 mean "let vLLM decide" (-1)."""
    text = value.strip()
    if text == "-1" or text.lower() == "auto":
        return -1
    return human_readable_int(text)


def _lower_underscore(value):
    return value.lower().replace("-", "_")


_lower_underscore.__name__ = "<lambda>"


def union_dict_and_str(value):
    """A JSON object when the text looks like one, else the string itself."""
    if not re.match(r"(?s)^\s*{.*}\s*$", value):
        return str(value)
    return _optional(_explained(json.loads))(value)


_BASES = {
    None: str, "str": str, "custom": str, "int": int, "float": float,
    "human_int": human_readable_int, "human_int_or_auto": human_readable_int_or_auto,
    "json": json.loads, "lower_underscore": _lower_underscore,
}


def _explained(base):
    """Conversion failures say which converter refused the text (real: 'Value X cannot be converted to ...')."""
    def convert(value):
        try:
            return base(value)
        except ValueError:
            raise argparse.ArgumentTypeError("Value %s cannot be converted to %r." % (value, base))
    convert.__name__ = getattr(base, "__name__", "convert")
    return convert


def _optional(convert):
    """'' and 'None' mean None."""
    def maybe(value):
        if value in ("", "None"):
            return None
        return convert(value)
    maybe.__name__ = getattr(convert, "__name__", "convert")
    return maybe


def _choosing(convert, choices):
    """Convert, then refuse anything outside `choices` (argparse's 3.11 wording)."""
    def choose(value):
        result = convert(value)
        if result not in choices:
            raise argparse.ArgumentTypeError("invalid choice: %r (choose from %s)"
                                             % (result, ", ".join(repr(c) for c in choices)))
        return result
    choose.__name__ = getattr(convert, "__name__", "convert")
    return choose


# ---------------------------------------------------------------- JSON configs

def _type_name(value):
    return type(value).__name__


def validation_error(cls_name, errors):
    """Text of a pydantic-style ValidationError: errors are (location, message, type, input)."""
    lines = ["%d validation error%s for %s" % (len(errors), "" if len(errors) == 1 else "s", cls_name)]
    for loc, message, kind, value in errors:
        if loc:
            lines.append(loc)
        lines.append("  %s [type=%s, input_value=%r, input_type=%s]" % (message, kind, value, _type_name(value)))
    return "\n".join(lines)


_JSON_STRING = re.compile(r'("(?:[^"\\]|\\.)*")')
_BARE_HUMAN_INT = re.compile(r"\b\d+(?:\.\d+)?[kKmMgGtT]\b")


def expand_human_numbers(text):
    """Replace bare (unquoted) 80m / 2K style numbers in JSON text by plain integers."""
    parts = _JSON_STRING.split(text)
    for i in range(0, len(parts), 2):
        parts[i] = _BARE_HUMAN_INT.sub(lambda m: str(human_readable_int(m.group())), parts[i])
    return "".join(parts)


def config_errors(dest, cls_name, obj, rules):
    """Problems the config class finds in `obj` (a dict): list of validation_error tuples.

    Raises ConfigCrash where the real class crashes instead of reporting.
    """
    errors = []
    if not rules:
        return errors
    keys = set(rules.get("keys") or [])
    for key in obj:
        if keys and key not in keys:
            errors.append((key, "Unexpected keyword argument", "unexpected_keyword_argument", obj[key]))
    for key, allowed in sorted((rules.get("choices") or {}).items()):
        if key not in obj or obj[key] is None:
            continue
        value = obj[key]
        if (dest, key) in CRASHING_ENUM_KEYS:
            if isinstance(value, str) and value.upper() not in allowed:
                raise ConfigCrash("KeyError: %r" % value.upper(), [
                    ("/usr/local/lib/python3.11/dist-packages/vllm/config/compilation.py", 878,
                     "validate_%s_before" % key, "return CUDAGraphMode[value.upper()]"),
                    ("/usr/lib/python3.11/enum.py", 790, "__getitem__", "return cls._member_map_[name]")])
            continue
        if isinstance(value, str) and value.upper() in allowed:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(allowed):
            continue  # enum members by number (e.g. compilation mode 3)
        errors.append((key, "Value error, Invalid %s: %s. Valid values are: %s"
                       % (key, value, ", ".join(allowed)), "value_error", value))
    return errors


def _dataclass_json(option, rules):
    cls_name = option["config_class"]

    def parse_dataclass(value):
        text = expand_human_numbers(value)
        try:
            obj = json.loads(text)
        except ValueError as exc:
            reason = getattr(exc, "msg", str(exc))
            where = " at line %d column %d" % (exc.lineno, exc.colno) if hasattr(exc, "lineno") else ""
            raise argparse.ArgumentTypeError(validation_error(
                cls_name, [("", "Invalid JSON: %s%s" % (reason.lower(), where), "json_invalid", value)]))
        if not isinstance(obj, dict):
            raise argparse.ArgumentTypeError(validation_error(
                cls_name, [("", "Input should be a dictionary or an instance of %s" % cls_name,
                            "dataclass_type", obj)]))
        errors = config_errors(option["dest"], cls_name, obj, rules)
        if errors:
            raise argparse.ArgumentTypeError(validation_error(cls_name, errors))
        return obj
    return parse_dataclass


# ---------------------------------------------------------------- one option

def converter(option, json_configs):
    """The argparse `type` of one fingerprint option, or None (flags)."""
    if option["action"] in ("bool", "store_true", "help"):
        return None
    kind = option.get("value")
    dest = option["dest"]
    if kind == "json" and option.get("config_class") and dest not in DEFERRED_JSON:
        convert = _dataclass_json(option, json_configs.get(dest))
    elif kind == "json_or_str":
        convert = union_dict_and_str
    else:
        base = _BASES.get(kind, str)
        convert = _explained(base) if (option.get("optional") or kind == "json") else base
    if option.get("optional"):
        convert = _optional(convert)
    choices = option.get("choices")
    if choices is not None and not option.get("choices_open"):
        convert = _choosing(convert, list(choices))
    return convert


def metavar(option):
    choices = option.get("choices")
    if choices is not None:
        return "{%s}" % ",".join(str(c) for c in choices)
    known = option.get("known_values")
    if known:
        return str([str(k) for k in known])
    return None


_KIND_HELP = {
    "human_int": "Integer; k/m/g/t multiply by powers of 1000, K/M/G/T by powers of 1024 (200k, 1M).",
    "human_int_or_auto": "Integer with k/m/g/t (x1000) or K/M/G/T (x1024) suffixes, or auto (also -1).",
    "json": "JSON.",
    "json_or_str": "A JSON object or a plain string.",
    "lower_underscore": "Case-insensitive; - and _ are the same.",
}


def help_text(option, defaults):
    parts = []
    if option.get("config_class"):
        parts.append("JSON for %s; a key can also be given alone as %s.KEY VALUE."
                     % (option["config_class"], option["flags"][0]))
    elif option.get("value") in _KIND_HELP:
        parts.append(_KIND_HELP[option["value"]])
    if option.get("choices_open"):
        parts.append("The platform may accept more choices.")
    if option.get("optional"):
        parts.append("None or an empty string leaves it unset.")
    if option["dest"] in defaults and option["action"] != "help":
        parts.append("(default: %s)" % (defaults[option["dest"]],))
    text = " ".join(parts)
    return text.replace("%", "%%") if text else None


class SwitchAction(argparse.Action):
    """A boolean option: its own strings set True, the negating ones set False."""

    def __init__(self, option_strings, dest, negations=(), **kwargs):
        kwargs["nargs"] = 0
        super().__init__(option_strings, dest, **kwargs)
        self.negations = frozenset(negations)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string not in self.negations)


# ---------------------------------------------------------------- help

class SortedHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's layout, options sorted by their option strings (as real vLLM prints them)."""

    def add_arguments(self, actions):
        super().add_arguments(sorted(actions, key=lambda action: action.option_strings))


class ServeParser(argparse.ArgumentParser):
    """The `vllm serve` parser: grouped help with `--help=all|<group>|<keyword>`."""

    grouped_help = False  # True for `vllm serve`; the other sub-commands get argparse's help
    search_keyword = None

    def _json_tip(self):
        return ("JSON options also take one key at a time: --speculative-config.method mtp\n"
                "with --speculative-config.num_speculative_tokens 2 is the same as\n"
                "--speculative-config '{\"method\": \"mtp\", \"num_speculative_tokens\": 2}';\n"
                "KEY+ VALUE appends to a list (VALUE may be comma-separated).\n")

    def format_help(self):
        if not self.grouped_help:
            return super().format_help()
        keyword = self.search_keyword
        if keyword is None:
            return self._format_overview()
        keyword = keyword.lower().replace("_", "-")
        formatter = self._get_formatter()
        if keyword == "all":
            saved = self.epilog
            self.epilog = self._json_tip()
            try:
                return super().format_help()
            finally:
                self.epilog = saved
        for group in self._action_groups:
            if group.title and group.title.lower() == keyword:
                formatter.start_section(group.title)
                formatter.add_arguments(group._group_actions)
                formatter.end_section()
                formatter.add_text(self._json_tip())
                return formatter.format_help()
        matched = [action for group in self._action_groups for action in group._group_actions
                   if any(keyword in string.lower() for string in action.option_strings)]
        if matched:
            formatter.start_section("Arguments matching '%s'" % keyword)
            formatter.add_arguments(matched)
            formatter.end_section()
            formatter.add_text(self._json_tip())
            return formatter.format_help()
        formatter.add_text("No group or arguments matching '%s'.\n"
                           "Plain --help lists the groups; --help=all lists every option.\n" % keyword)
        return formatter.format_help()

    def _format_overview(self):
        formatter = self._get_formatter()
        formatter.add_usage(self.usage, self._actions, self._mutually_exclusive_groups)
        formatter.add_text(self.description)
        formatter.start_section("Config Groups")
        titles = [group.title for group in self._action_groups if group._group_actions and group.title]
        formatter.add_text("\n".join(titles) + "\n")
        formatter.end_section()
        formatter.add_text(
            "Which options to show:\n"
            "every option            vllm serve --help=all\n"
            "one group (any case)    vllm serve --help=ModelConfig\n"
            "names with a word       vllm serve --help=max-model-len  (_ or -)\n")
        return formatter.format_help()


def build_parsers(fp, defaults):
    """(top-level `vllm` parser, `vllm serve` parser) for a fingerprint."""
    version = str(fp["release"]["version"])
    serve_fp = fp["serve"]
    json_configs = fp.get("json_configs") or {}
    top = argparse.ArgumentParser(prog="vllm", description="vLLM CLI (sparkfleet simulator of vLLM %s)"
                                  % version)
    top.add_argument("-v", "--version", action="version", version=version)
    sub = top.add_subparsers(dest="subparser", parser_class=ServeParser)
    usage = serve_fp.get("usage") or "usage: vllm serve [model_tag] [options]"
    if usage.startswith("usage: "):
        usage = usage[len("usage: "):]
    description = ("The sparkfleet simulator of `vllm serve` from vLLM %s: its options are\n"
                   "generated from that release's fingerprint (files/vllm/); it loads no model\n"
                   "and runs no inference." % version)
    serve = None
    for name in SUBCOMMANDS:
        if name == "serve":
            serve = sub.add_parser("serve", usage=usage, description=description,
                                   formatter_class=SortedHelpFormatter, add_help=False,
                                   help="Launch a local OpenAI-compatible API server (simulated).")
        else:
            other = sub.add_parser(name, add_help=False, help="(not simulated)")
            other.add_argument("rest", nargs=argparse.REMAINDER)
    serve.grouped_help = True
    groups = {"positional arguments": serve._positionals, "options": serve._optionals}
    for title in serve_fp.get("groups") or []:
        if title not in groups:
            groups[title] = serve.add_argument_group(title)
    for option in serve_fp["options"]:
        title = option.get("group") or "options"
        if title not in groups:
            groups[title] = serve.add_argument_group(title)
        add_option(groups[title], option, json_configs, defaults)
    return top, serve


def add_option(group, option, json_configs, defaults):
    action = option["action"]
    visible = list(option.get("flags") or [])
    hidden = [f for f in option.get("hidden_flags") or [] if f not in visible]
    negations = [f for f in option.get("negations") or [] if f not in visible and f not in hidden]
    strings = visible + hidden + negations
    kwargs = {"help": help_text(option, defaults)}
    if action == "help":
        group.add_argument(*strings, action="help", help="show this help message and exit")
        return
    if not strings:  # the positional model_tag
        group.add_argument(option["dest"], nargs=option.get("nargs") or None, type=converter(option, json_configs),
                           default=argparse.SUPPRESS, help="The model to serve (or --model).")
        return
    kwargs.update(dest=option["dest"], default=argparse.SUPPRESS)
    if action == "bool":
        registered = group.add_argument(*strings, action=SwitchAction, negations=option.get("negations") or (),
                                        **kwargs)
    elif action == "store_true":
        registered = group.add_argument(*strings, action="store_true", **kwargs)
    else:
        kwargs["type"] = converter(option, json_configs)
        meta = metavar(option)
        if meta:
            kwargs["metavar"] = meta
        nargs = option.get("nargs")
        if nargs == "?":
            kwargs.update(nargs="?", const=True)
        elif nargs not in (None, 0):
            kwargs["nargs"] = nargs
        registered = group.add_argument(*strings, action="append" if action == "append" else "store", **kwargs)
    # Hidden spellings stay accepted but leave help (and error messages).
    registered.option_strings = visible


# ---------------------------------------------------------------- argv rewriting

class ArgvError(Exception):
    """The argv cannot be rewritten: (exit code, message, is_usage_error)."""

    def __init__(self, code, message, usage=True):
        super().__init__(message)
        self.code = code
        self.message = message
        self.usage = usage


class Rewritten:
    def __init__(self):
        self.argv = []
        self.keyword = None
        self.warnings = []  # (log source, message)


_DOTTED = re.compile(r"^--?[A-Za-z][^=]*\.")


def _json_value(text):
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return human_readable_int(text)
    except (ValueError, argparse.ArgumentTypeError):
        return text


def _merge(into, update, prefix=""):
    """Merge nested dict `update` into `into`; lists concatenate. Returns overwritten keys."""
    overwritten = []
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            overwritten += _merge(into[key], value, prefix + key + ".")
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] += value
        else:
            if key in into:
                overwritten.append(prefix + key)
            into[key] = value
    return overwritten


def rewrite(argv, option_strings=()):
    """Rewrite an argv the way the real `vllm` parser does before argparse parses it.

    option_strings: what `vllm serve` accepts (a false boolean in a --config
    file becomes --no-KEY only where that exists).
    """
    out = Rewritten()
    args = list(argv)
    if args[:1] == ["serve"]:
        args = _serve_positional(args, out)
    if "--config" in args:
        args = _pull_config(args, set(option_strings))
    normalised = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--help="):
            out.keyword = arg.split("=", 1)[1].lower()
            normalised.append("--help")
        elif arg.startswith("--"):
            key, sep, value = arg.partition("=")
            head, dot, tail = key[2:].partition(".")
            normalised.append("--" + head.replace("_", "-") + dot + tail + sep + value)
        elif arg.startswith("-O") and arg != "-O":
            normalised += ["--optimization-level", arg[3:] if arg[2:3] == "=" else arg[2:]]
        elif arg == "-O" and i < len(args) and args[i] in ("0", "1", "2", "3"):
            normalised.append("--optimization-level")
        else:
            normalised.append(arg)
    dicts = {}
    seen, duplicates = set(), []
    rest = []
    i = 0
    while i < len(normalised):
        arg = normalised[i]
        i += 1
        if arg.startswith("--") and "." not in arg:
            name = arg.split("=", 1)[0]
            if name in seen and name != "--help":
                duplicates.append(name)
            seen.add(name)
            rest.append(arg)
            continue
        if not _DOTTED.match(arg):
            rest.append(arg)
            continue
        key, sep, value = arg.partition("=")
        if not sep:
            if i >= len(normalised):
                raise ArgvError(2, "argument %s: expected one argument" % key)
            value = normalised[i]
            i += 1
        if key.endswith("+"):
            key = key[:-1]
            value = json.dumps(value.split(","))
        head, *path = key.split(".")
        nested = _json_value(value)
        for part in reversed(path):
            nested = {part: nested}
        duplicates += ["%s.%s" % (head, k) for k in _merge(dicts.setdefault(head, {}), nested)]
    if duplicates:
        out.warnings.append(("argparse_utils.py:406", "Found duplicate keys %s" % ", ".join(duplicates)))
    for head, value in dicts.items():
        rest += [head, json.dumps(value)]
    out.argv = rest
    return out


def _serve_positional(args, out):
    """`--model X` becomes the positional model; --served-model-name needs one."""
    for index, arg in enumerate(args):
        if arg == "--model" or arg.startswith("--model="):
            if arg == "--model":
                if index + 1 >= len(args):
                    raise ArgvError(2, "argument --model: expected one argument")
                model, after = args[index + 1], index + 2
            else:
                model, after = arg[len("--model="):], index + 1
            out.warnings.append(("argparse_utils.py:330",
                                 "`vllm serve --model X` is deprecated: give the model as the positional "
                                 "argument (`vllm serve X ...`) or in a config file."))
            args = ["serve", model] + args[1:index] + args[after:]
            break
    if len(args) > 1 and args[1].startswith("-") \
            and not any(re.match(r"^--config(=.+|$)", a) for a in args) \
            and any(re.match(r"^--served[-_]model[-_]name(=.+|$)", a) for a in args):
        raise ArgvError(1, "ValueError: `model` should be provided as the first positional argument when "
                           "using `vllm serve`. i.e. `vllm serve <model> --<arg> <value>`.", usage=False)
    return args


# --- --config FILE: the simulator reads the flat YAML subset a serve config uses.

def _yaml_scalar(text):
    text = text.strip()
    if not text or text in ("~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE", "yes", "on"):
        return True
    if text in ("false", "False", "FALSE", "no", "off"):
        return False
    if text[0] in "\"'" and text[-1] == text[0] and len(text) >= 2:
        return text[1:-1]
    if text[0] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            raise ArgvError(1, "ValueError: the simulator reads JSON-style flow collections only in "
                               "--config files, not %r" % text, usage=False)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def load_config_file(path, option_strings=frozenset()):
    """A --config YAML file as the argv it stands for (flat keys; lists of scalars; JSON objects)."""
    if path.rsplit(".", 1)[-1] not in ("yaml", "yml"):
        raise ArgvError(1, "ValueError: Config file must be of a yaml/yml type. %s supplied"
                        % path.rsplit(".", 1)[-1], usage=False)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ArgvError(1, "FileNotFoundError: [Errno %d] %s: '%s'" % (exc.errno or 2, exc.strerror, path),
                        usage=False)
    config, current = {}, None
    for raw in lines:
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#") or line.strip() == "---":
            continue
        if line.startswith(" ") or line.startswith("-"):
            item = line.strip()
            if current is None or not item.startswith("- "):
                raise ArgvError(1, "ValueError: the simulator reads flat --config files only "
                                   "(key: value, key: [a, b], key: {json}); cannot read %r" % raw, usage=False)
            if not isinstance(config[current], list):
                config[current] = []
            config[current].append(_yaml_scalar(item[2:]))
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ArgvError(1, "ValueError: cannot read --config line %r" % raw, usage=False)
        current = key.strip()
        config[current] = _yaml_scalar(value) if value.strip() else []
    argv = []
    for key, value in config.items():
        if isinstance(value, bool):
            if value:
                argv.append("--" + key)
            elif "--no-" + key in option_strings:
                argv.append("--no-" + key)
        elif isinstance(value, list):
            if value:
                argv.append("--" + key)
                argv += [str(v) for v in value]
        elif isinstance(value, dict):
            argv += ["--" + key, json.dumps(value)]
        elif value is not None:
            argv += ["--" + key, str(value)]
    return argv


def _pull_config(args, option_strings):
    if args.count("--config") > 1:
        raise ArgvError(1, "AssertionError: More than one config file specified!", usage=False)
    index = args.index("--config")
    if index == len(args) - 1:
        raise ArgvError(1, "ValueError: No config file specified! Please check your command-line arguments.",
                        usage=False)
    from_file = load_config_file(args[index + 1], option_strings)
    if args[0] != "serve":
        return args[:1] + from_file + args[1:index] + args[index + 2:]
    model_in_cli = len(args) > 1 and not args[1].startswith("-")
    if not model_in_cli and "--model" not in from_file:
        raise ArgvError(1, "ValueError: No model specified! Please specify model either as a positional "
                           "argument or in a config file.", usage=False)
    if model_in_cli:
        return args[:2] + from_file + args[2:index] + args[index + 2:]
    return args[:1] + from_file + args[1:index] + args[index + 2:]
