# -*- coding: utf-8 -*-
"""Check a rendered ``vllm serve`` argv and environment against a vLLM release's surface.

The surface is the pinned release's fingerprint (on the controller, before any
host is touched) or an image's own ``vllm serve --help=all`` (before a pair is
stopped). Every unknown, misspelt, removed or mistyped option is one problem
line naming the nearest real option.

Pure functions, no Ansible imports: used by the filter plugin and unit tests.
"""

from __future__ import annotations

import ast
import json
import re

from sparkfleet_vllm_args import LaunchConfigError


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
