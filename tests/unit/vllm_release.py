"""The pinned vLLM release for tests: its wheel, fingerprint and real help output.

``real_help`` builds `vllm serve`'s options from the fingerprint into vLLM's
own FlexibleArgumentParser (vllm/utils/argparse_utils.py, loaded from the
pinned wheel with a stand-in for vllm.logger), so the help text the flag check
is fed is formatted by the release's own code: plain `--help` grouped, and
`--help=all` listing every option.
"""

import argparse
import importlib.util
import logging
import os
import sys
import types

import yaml

from conftest import ROOT

import sparkfleet_vllm_check as vllm_check
import sparkfleet_vllm_release as release


def pinned_version():
    with open(os.path.join(ROOT, "group_vars", "all", "fleet.yml"), encoding="utf-8") as handle:
        return str(yaml.safe_load(handle)["sparkfleet_vllm_version"])


def pinned_releases():
    """Every release files/vllm/releases.yml pins (the fidelity tests run against each)."""
    return sorted(release.load_releases(ROOT), key=lambda v: tuple(int(p) for p in v.split(".")))


def fingerprint_path(version=None):
    return os.path.join(ROOT, "files", "vllm", "vllm-%s.fingerprint.json" % (version or pinned_version()))


def fingerprint(version=None):
    return vllm_check.load_fingerprint(fingerprint_path(version))


def wheel(version=None):
    return release.Wheel(release.wheel_path(version or pinned_version(), ROOT))


def _argparse_utils(source):
    """vLLM's argparse_utils module, executed from the wheel's source."""
    saved = {name: sys.modules.get(name) for name in ("vllm", "vllm.logger", "regex")}
    try:
        vllm_pkg = types.ModuleType("vllm")
        vllm_pkg.__path__ = []
        logger_mod = types.ModuleType("vllm.logger")
        logger_mod.init_logger = logging.getLogger
        sys.modules["vllm"] = vllm_pkg
        sys.modules["vllm.logger"] = logger_mod
        try:
            import regex  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
        except ImportError:
            import re
            sys.modules["regex"] = re
        spec = importlib.util.spec_from_loader("vllm_argparse_utils_pinned", loader=None)
        module = importlib.util.module_from_spec(spec)
        exec(compile(source, "vllm/utils/argparse_utils.py", "exec"), module.__dict__)  # noqa: S102
        return module
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value


def real_parser(fp=None):
    fp = fp or fingerprint()
    with wheel(fp["release"]["version"]) as w:
        utils = _argparse_utils(w.read_text("vllm/utils/argparse_utils.py"))
    parser = utils.FlexibleArgumentParser(prog="vllm serve", usage=fp["serve"]["usage"][len("usage: "):],
                                          description="sparkfleet test: vLLM %s serve options"
                                          % fp["release"]["version"])
    groups = {}
    for title in fp["serve"]["groups"]:
        if title not in ("positional arguments", "options"):
            groups[title] = parser.add_argument_group(title=title, description=title + " options.")
    for option in fp["serve"]["options"]:
        if option["action"] == "help":
            continue
        target = groups.get(option["group"], parser)
        kwargs = {"dest": option["dest"], "help": option["dest"]}
        negations = set(option["negations"])
        names = [f for f in option["flags"] if f not in negations]
        if option["action"] == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif option["action"] == "store_true":
            kwargs["action"] = "store_true"
        elif option["action"] == "append":
            kwargs["action"] = "append"
        else:
            if option["nargs"] is not None:
                kwargs["nargs"] = option["nargs"]
            if option["choices"] is not None:
                kwargs["choices"] = option["choices"]
            elif option.get("known_values"):
                kwargs["metavar"] = option["known_values"]
        if not names:
            target.add_argument(option["dest"], nargs=option["nargs"], help=option["dest"])
            continue
        target.add_argument(*names, **kwargs)
    return parser, utils


def real_help(keyword=None, version=None):
    """`vllm serve --help` (keyword None) or `--help=<keyword>` as the release formats it."""
    parser, utils = real_parser(fingerprint(version))
    utils.FlexibleArgumentParser._search_keyword = keyword  # what parse_args sets for --help=KEYWORD
    try:
        return parser.format_help()
    finally:
        utils.FlexibleArgumentParser._search_keyword = None
