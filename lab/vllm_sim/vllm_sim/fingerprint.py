"""The fingerprint of the vLLM release the simulator imitates.

sparkfleet pins one vLLM release and derives a fingerprint of it from the real
wheel (``files/vllm/vllm-<version>.fingerprint.json``, written by
``scripts/vllm-fingerprint``): every ``vllm serve`` option with its value kind,
choices and negations, the JSON config keys, the ``VLLM_*`` environment
variables the release knows, and so on. The simulator builds its command line
from that file at run time instead of from a hand-typed list.

Where the file is read from, first match wins:

1. ``$VLLM_SIM_FINGERPRINT``;
2. ``fingerprint.json`` next to the simulator (``/opt/vllm_sim/fingerprint.json``
   in the lab image, which the image build copies there);
3. in a sparkfleet checkout, ``files/vllm/vllm-<sparkfleet_vllm_version>.fingerprint.json``
   (the version read from ``group_vars/all/fleet.yml``).
"""

import json
import os
import re

ENV_VAR = "VLLM_SIM_FINGERPRINT"
SIM_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_loaded = {}


class FingerprintError(Exception):
    """No usable fingerprint: the simulator cannot build its command line."""


def _checkout_candidate():
    repo = os.path.dirname(os.path.dirname(SIM_ROOT))  # lab/vllm_sim -> repository root
    fleet = os.path.join(repo, "group_vars", "all", "fleet.yml")
    try:
        with open(fleet, "r", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    match = re.search(r"^sparkfleet_vllm_version:\s*[\"']?([^\"'\s#]+)", text, re.MULTILINE)
    if not match:
        return None
    return os.path.join(repo, "files", "vllm", "vllm-%s.fingerprint.json" % match.group(1))


def locate():
    """Path of the fingerprint to use (raises FingerprintError when there is none)."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        if not os.path.isfile(explicit):
            raise FingerprintError("%s=%s: no such file" % (ENV_VAR, explicit))
        return explicit
    tried = []
    for candidate in (os.path.join(SIM_ROOT, "fingerprint.json"), _checkout_candidate()):
        if candidate:
            tried.append(candidate)
            if os.path.isfile(candidate):
                return candidate
    raise FingerprintError("no vLLM fingerprint found (tried %s); set %s to a "
                           "files/vllm/vllm-<version>.fingerprint.json"
                           % (", ".join(tried) or "nothing", ENV_VAR))


def load(path=None):
    """The fingerprint as a dict (read once per path)."""
    path = path or locate()
    if path not in _loaded:
        try:
            with open(path, "r", encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as exc:
            raise FingerprintError("cannot read the vLLM fingerprint %s: %s" % (path, exc))
        serve = data.get("serve") if isinstance(data, dict) else None
        if not isinstance(serve, dict) or not isinstance(serve.get("options"), list) \
                or not (data.get("release") or {}).get("version"):
            raise FingerprintError("%s is not a vLLM fingerprint (needs serve.options and "
                                   "release.version)" % path)
        _loaded[path] = data
    return _loaded[path]


def release_version():
    """The vLLM version the simulator reports (``vllm --version``, ``/version``, logs)."""
    return str(load()["release"]["version"])


def request_defaults(endpoint):
    """Defaults of the request fields the simulator honours ("chat" or "completion"),
    as the release's request classes declare them."""
    try:
        fields = load()["requests"][endpoint]["fields"]
    except KeyError:
        raise FingerprintError("the vLLM fingerprint has no request fields for %s; regenerate it with "
                               "scripts/vllm-fingerprint" % endpoint)
    return {name: spec.get("default") for name, spec in fields.items()}


def log_text(key, *values):
    """A log line of the release filled in the way vLLM fills it: the text's
    own %-placeholders take ``values`` (a release that reworded the line
    without one, as 0.34.0's "Loading model from scratch...", takes none)."""
    text = log_line(key)
    wanted = len(re.findall(r"%[-#0 +]*\d*(?:\.\d+)?[sdifrx]", text))
    return text % tuple(values[:wanted]) if wanted else text


def log_line(key):
    """A log text of the release (log_lines in the fingerprint), e.g. "Loading weights took"."""
    try:
        return load()["log_lines"][key]["text"]
    except KeyError:
        raise FingerprintError("the vLLM fingerprint has no log line %r; regenerate it with "
                               "scripts/vllm-fingerprint" % key)
