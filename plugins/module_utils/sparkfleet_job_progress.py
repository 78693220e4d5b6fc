# -*- coding: utf-8 -*-
"""Progress of long jobs that run as async Ansible tasks: image builds and transfers.

The job (a module running with ``async``/``poll: 0``) writes a small JSON
progress file as it goes (``ProgressFile``); a watcher task
(sparkfleet_job_progress, in the job_progress role's loop) reads it at a
steady interval and the play prints ``progress_line``; when the job ends the
play prints ``total_line``. Each run carries a random ``run`` id, so a
watcher never mistakes the file of an earlier run for this one.

Pure Python, no Ansible imports: used by the modules and the unit tests.
"""

from __future__ import annotations

import json
import os
import re
import time

# A progress file is rewritten at most this often (seconds): the watcher reads
# it every 15-30 s, and a 149 GB stream must not spend its time in rename().
WRITE_INTERVAL = 1.0

# The wait between lines stretches with the job's age (a tenth of it, at most
# 10 minutes): a 6-hour download prints about 75 lines, not 1,440.
STRETCH = 10
MAX_WAIT_S = 600

# The time left is given once this share is done and this long has passed.
ESTIMATE_AFTER_SHARE = 0.05
ESTIMATE_AFTER_S = 5.0

# BuildKit (`--progress=plain`: "#7 [3/6] RUN ...", "#7 [stage 2/4] COPY ...")
# and the classic builder ("Step 3/6 : RUN ...").
_BUILDKIT_STEP = re.compile(r"^#\d+ \[(?:[^\]\s]+ )?(\d+)/(\d+)\] (.*)$")
_CLASSIC_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


class ProgressFile(object):
    """Writes one job's progress as JSON, atomically, at most every WRITE_INTERVAL seconds."""

    def __init__(self, path, run, kind, label, clock=time.time, **fields):
        self.path = path
        self.clock = clock
        self.state = dict(fields, run=run, kind=kind, label=label, started=clock(), finished=False)
        self._written = 0.0
        if path:
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, mode=0o755, exist_ok=True)
            self._write()

    def update(self, force=False, **fields):
        self.state.update(fields)
        if self.path and (force or self.clock() - self._written >= WRITE_INTERVAL):
            self._write()

    def finish(self, ok, **fields):
        self.update(force=True, finished=True, ok=bool(ok), **fields)

    def _write(self):
        self.state["updated"] = self.clock()
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.state, handle, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)
        self._written = self.state["updated"]


def read(path, run):
    """The progress of run `run` from `path`, or None before that run has written it."""
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    return state if state.get("run") == run else None


def watch_wait(interval, elapsed):
    """Seconds the next round waits: the interval, or a tenth of the job's age when longer (at most
    MAX_WAIT_S). An interval of 0 (a plain read) is never stretched."""
    if interval <= 0:
        return 0
    return int(min(max(interval, elapsed / STRETCH), max(MAX_WAIT_S, interval)))


def build_step(line):
    """(step, steps, instruction) from one line of `docker build` output, or None."""
    line = line.strip()
    for pattern in (_BUILDKIT_STEP, _CLASSIC_STEP):
        match = pattern.match(line)
        if match:
            return int(match.group(1)), int(match.group(2)), match.group(3).strip()
    return None


def size_text(count):
    """Bytes in binary units, one decimal: 812.3 MiB, 148.9 GiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024.0
    return "%d B" % count


def duration_text(seconds):
    """95 s, 3 min 12 s, 2 h 05 min: seconds up to two minutes, minutes up to two hours."""
    seconds = int(round(seconds))
    if seconds < 120:
        return "%d s" % seconds
    if seconds < 7200:
        return "%d min %02d s" % (seconds // 60, seconds % 60)
    return "%d h %02d min" % (seconds // 3600, (seconds % 3600) // 60)


def _elapsed(state, now):
    return max(float(state.get("updated", now) if state.get("finished") else now) - float(state["started"]), 0.0)


def _transfer_figures(state, now):
    done = int(state.get("bytes", 0))
    total = int(state.get("total_bytes") or 0)
    elapsed = _elapsed(state, now)
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [size_text(done)]
    if total and state.get("finished") and state.get("total_is_estimate"):
        pass  # the estimate has served its purpose: the bytes moved say it all
    elif total:
        # An image's size is what `docker image inspect` reports; the saved
        # stream is a little larger, hence "~" and the cap below 100%.
        approx = "~" if state.get("total_is_estimate") else ""
        share = min(100.0 * done / total, 100.0 if state.get("finished") else 99.0)
        parts = ["%s of %s%s (%d%%)" % (size_text(done), approx, size_text(total), share)]
    if state.get("files_total"):
        parts.append("%d of %d file(s)" % (state.get("files_done", 0), state["files_total"]))
    parts.append("%s/s" % size_text(rate))
    if state.get("wire_bytes") is not None and state.get("compression") not in (None, "none"):
        parts.append("%s on the wire (%s)" % (size_text(state["wire_bytes"]), state["compression"]))
    return parts, elapsed, rate, done, total


def progress_line(state, now=None):
    """The line the play prints while the job runs."""
    now = time.time() if now is None else now
    if state is None:
        return "starting"
    label = state.get("label", state.get("kind", "job"))
    if state.get("kind") == "build":
        elapsed = _elapsed(state, now)
        step, steps = state.get("step", 0), state.get("steps", 0)
        where = "step %d of %d" % (step, steps) if step else "sending the build context"
        text = ": %s" % _shorten(state["instruction"]) if state.get("instruction") and step else ""
        return "%s: %s, %s%s" % (label, where, duration_text(elapsed), text)
    if state.get("kind") == "benchmark":
        return "%s: %s phase, %s" % (label, state.get("phase", "starting"), _benchmark_figures(state, now))
    parts, elapsed, rate, done, total = _transfer_figures(state, now)
    line = "%s: %s, %s" % (label, ", ".join(parts), duration_text(elapsed))
    # A rate is only worth extrapolating once the bytes flow: `docker save`
    # prepares its layers for a while before the first of them streams.
    if total and rate > 0 and done < total and done >= total * ESTIMATE_AFTER_SHARE and elapsed >= ESTIMATE_AFTER_S:
        line += "; about %s left" % duration_text((total - done) / rate)
    return line


def total_line(state, now=None):
    """The line the play prints when the job has ended."""
    now = time.time() if now is None else now
    if state is None:
        return "no progress was recorded"
    label = state.get("label", state.get("kind", "job"))
    outcome = "done" if state.get("ok", True) else "FAILED"
    elapsed = _elapsed(state, now)
    if state.get("kind") == "build":
        cached = state.get("cached", 0)
        return "%s: %s, %d step(s)%s in %s" % (label, outcome, state.get("steps", 0),
                                               " (%d from cache)" % cached if cached else "", duration_text(elapsed))
    if state.get("kind") == "benchmark":
        if not state.get("ok", True):
            return "%s: FAILED after %s: %s" % (label, duration_text(elapsed), state.get("error", "?"))
        return "%s: done, %s" % (label, _benchmark_figures(state, now))
    parts, elapsed, rate, done, total = _transfer_figures(state, now)
    return "%s: %s, %s in %s" % (label, outcome, ", ".join(parts), duration_text(elapsed))


def _benchmark_figures(state, now):
    elapsed = _elapsed(state, now)
    return "%d of %d request(s), %d failed, %s of its %s bound" % (
        state.get("done", 0), state.get("total", 0), state.get("failed", 0), duration_text(elapsed),
        duration_text(state.get("bound_s", 0)))


def _shorten(text, limit=72):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
