"""vLLM-style log lines: ``(APIServer pid=1) INFO 11-22 18:00:00 [api_server.py:1234] message``."""

import sys
import threading
import time

_lock = threading.Lock()
PREFIX = ""  # the process tag vLLM starts each line with, e.g. "(APIServer pid=123) "; set by cli


def _emit(stream, text):
    with _lock:
        try:
            stream.write(text + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass


def log(level, src, msg):
    stamp = time.strftime("%m-%d %H:%M:%S")
    for line in str(msg).splitlines() or [""]:
        _emit(sys.stdout, f"{PREFIX}{level} {stamp} [{src}] {line}")


def info(src, msg):
    log("INFO", src, msg)


def warning(src, msg):
    log("WARNING", src, msg)


def error(src, msg):
    log("ERROR", src, msg)


def raw(msg, stream=None):
    _emit(stream or sys.stdout, msg)


def traceback_lines(frames, exc_line):
    """Write a Python-traceback-looking block to stderr.

    frames: list of (file, line, func, code) tuples.
    """
    out = ["Traceback (most recent call last):"]
    for f, ln, fn, code in frames:
        out.append(f'  File "{f}", line {ln}, in {fn}')
        if code:
            out.append(f"    {code}")
    out.append(exc_line)
    _emit(sys.stderr, "\n".join(out))
