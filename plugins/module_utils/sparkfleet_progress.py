# -*- coding: utf-8 -*-
"""Where a starting vLLM rank is, read from its own log.

A pair's cold start runs for minutes (8-14 on Sparks): rendezvous, weight
loading, profiling and KV cache allocation, CUDA graph capture, then the API.
``phase_of`` reads one rank's log for the start-up lines of the pinned vLLM
release (``log_lines`` in its fingerprint, files/vllm/) and names the phase
the rank is in, with the shard count while weights load. ``report_line``
turns both ranks' phases into the progress line the play prints;
``relevant_lines`` picks the log lines worth showing when a start fails.

Pure Python, no Ansible imports: used by the sparkfleet_start_progress module
and by the unit tests.
"""

from __future__ import annotations

import re

try:  # inside a module (AnsiballZ bundles it) or beside this file (filters, unit tests)
    from ansible.module_utils.sparkfleet_job_progress import duration_text
except ImportError:
    from sparkfleet_job_progress import duration_text

# (fingerprint log line key, phase key), in start-up order. A rank's phase is
# the one of the last of these lines its log holds.
MARKERS = (
    ("head_waits_for_workers", "rendezvous"),
    ("headless_launch", "rendezvous"),
    ("starting_to_load", "loading"),
    ("loading_shards", "loading"),
    ("loading_weights_took", "profiling"),
    ("model_loading_took", "profiling"),
    ("kv_cache_memory", "profiling"),
    ("kv_cache_size", "kv_cache_ready"),
    ("capturing_cuda_graphs", "cuda_graphs"),
    ("graph_capturing_finished", "engine_ready"),
    ("init_engine_took", "engine_ready"),
    ("api_server_starting", "api_starting"),
)

# What each phase is called in the progress line, by rank role.
PHASE_TEXT = {
    "not_running": "not running",
    "restarting": "restarting after a crash (systemd Restart=on-failure)",
    "starting": "starting (before vLLM's first start-up line)",
    "rendezvous": {"head": "waiting for the worker at rendezvous", "worker": "waiting for the head at rendezvous"},
    "loading": "loading weights",
    "profiling": "profiling and allocating the KV cache",
    "kv_cache_ready": "KV cache allocated, warming up",
    "cuda_graphs": "capturing CUDA graphs",
    "engine_ready": {"head": "engine ready, starting the API", "worker": "engine ready (headless)"},
    "api_starting": "API starting",
    "api_up": "API up, gate checks running",
    "failed": "failed",
}
PHASE_ORDER = ("not_running", "restarting", "starting", "rendezvous", "loading", "profiling", "kv_cache_ready", "cuda_graphs",
               "engine_ready", "api_starting", "api_up")

_PLACEHOLDER = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdifrx%]")
_SHARDS = re.compile(r"(\d+)% Completed \| (\d+)/(\d+)")
_RELEVANT = re.compile(r"\b(ERROR|CRITICAL|WARNING|Traceback|Error|error:|Exception|EADDRINUSE|died|timed out|"
                       r"Timeout|refused)\b")


def marker_texts(log_lines):
    """[(text, phase)] for the markers, the text being the longest fixed part
    of the release's format string (between its % placeholders)."""
    out = []
    for key, phase in MARKERS:
        value = log_lines.get(key)
        if isinstance(value, dict):  # a fingerprint entry: its text and the other wordings it may have
            value = [value.get("text")] + list(value.get("also") or [])
        for text in value if isinstance(value, list) else [value]:
            if text:
                fixed = max(_PLACEHOLDER.split(text), key=lambda part: len(part.strip())).strip()
                if fixed:
                    out.append((fixed, phase))
    return out


def phase_of(log_text, log_lines):
    """(phase key, detail) of one rank from its log since this start.

    ``log_lines`` maps fingerprint keys to texts (or to the fingerprint's
    {"text": ...} entries). Detail is the shard count while loading."""
    markers = marker_texts(log_lines)
    phase, detail, last_at = "starting", "", -1
    for text, marker_phase in markers:
        at = log_text.rfind(text)
        if at > last_at or (at == last_at and at >= 0
                            and PHASE_ORDER.index(marker_phase) > PHASE_ORDER.index(phase)):
            phase, last_at = marker_phase, at
    if phase == "loading":
        shards = _SHARDS.findall(log_text)
        if shards:
            pct, done, total = shards[-1]
            detail = "%s/%s shards, %s%%" % (done, total, pct)
    return phase, detail


def phase_text(phase, role, detail=""):
    text = PHASE_TEXT.get(phase, phase)
    if isinstance(text, dict):
        text = text.get(role, next(iter(text.values())))
    return "%s (%s)" % (text, detail) if detail else text


def report_line(pair, elapsed_s, head, worker=None, expected_s=None):
    """One progress line: elapsed time, each rank's phase, and the expected
    remaining time when an earlier start of the same image and profile was
    recorded. ``head``/``worker``: {"phase", "detail"}."""
    parts = ["pair %s" % pair, duration_text(elapsed_s),
             "head: %s" % phase_text(head["phase"], "head", head.get("detail", ""))]
    if worker is not None:
        parts.append("worker: %s" % phase_text(worker["phase"], "worker", worker.get("detail", "")))
    # Once the API is up the elapsed time may be the head's uptime (a pair
    # that was already serving): no estimate then.
    if expected_s and head["phase"] != "api_up":
        left = expected_s - elapsed_s
        parts.append("about %s left (last start took %s)" % (duration_text(left), duration_text(expected_s)) if left > 0
                     else "slower than the last start (%s)" % duration_text(expected_s))
    return " | ".join(parts)


def failure_report(pair, head, worker, timeout_s):
    """Why a pair's start is over without its API: the last phase of both ranks
    and their last log lines. ``head``/``worker``: sparkfleet_start_progress readings."""
    head, worker = dict(head), dict(worker or {})
    if head.get("stopped"):
        why = "the head's unit is %s" % head.get("active_state")
    elif worker.get("stopped"):
        why = "the worker's unit is %s" % worker.get("active_state")
    else:
        why = "no API after %s s (spark_health_startup_timeout %s s)" % (head.get("elapsed_s"), timeout_s)
    lines = ["pair %s did not come up: %s." % (pair, why),
             "Last phase reached: head %s; worker %s." % (head.get("text", "?"), worker.get("text", "?"))]
    for role, reading in (("head", head), ("worker", worker)):
        lines.append("Last relevant log lines of the %s:" % role)
        lines += ["  " + line for line in (reading.get("last_lines") or ["(none)"])]
    return "\n".join(lines)


def relevant_lines(log_text, log_lines, count=8):
    """The last ``count`` lines worth showing for a failed start: errors,
    warnings and the start-up markers."""
    markers = [text for text, _ in marker_texts(log_lines)]
    picked = [line for line in log_text.splitlines()
              if line.strip() and (_RELEVANT.search(line) or any(text in line for text in markers))]
    return picked[-count:]


def history_key(image_id, profile):
    """Key of a start-time record: the image (short ID) and the profile."""
    image = str(image_id or "").split(":")[-1][:12]
    return "%s/%s" % (image or "unknown-image", profile or "unknown-profile")
