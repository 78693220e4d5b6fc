# -*- coding: utf-8 -*-
"""A bounded serving benchmark through the OpenAI API, its history, and the performance gate.

The figures and their definitions follow `vllm bench serve` of the pinned
release (vllm/benchmarks/serve.py, lib/endpoint_request_func.py), so either
tool can produce them and they compare:

- TTFT: from sending the request to the first streamed chunk with content.
- ITL: the gap between successive content chunks (one chunk can carry several
  tokens with speculative decoding, as in vLLM's own benchmark).
- TPOT: (latency - TTFT) / (output tokens - 1); single-stream decode tok/s is
  1 / median TPOT of requests sent one at a time.
- Aggregate tok/s: output tokens of completed requests / the phase's wall
  time (vLLM's output_throughput), at the profile's max_num_seqs.

Every request asks for exactly `output_len` tokens (ignore_eos) with a fixed
prompt, so runs compare. The whole run is bounded: no request starts after the
bound and requests still running at it are cut and counted as failed.

Pure Python, no Ansible imports: used by the modules and the unit tests.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import math
import ssl
import threading
import time
import urllib.parse

# Figures the gate can compare: higher is better for all of them.
GATE_METRICS = ("single_stream_tok_s", "aggregate_tok_s")
FIGURE_LABELS = {
    "single_stream_tok_s": "single-stream decode",
    "aggregate_tok_s": "aggregate decode",
}

# A plain English filler: the same words every run, so a prompt of N words is
# the same prompt on every pair and in every run.
_WORDS = ("the fleet serves one model across many pairs and every pair answers the same "
          "question with the same care while the operators measure how fast it decodes").split()


def fixed_prompt(input_len):
    """A deterministic prompt of about `input_len` tokens (one word is about one token)."""
    words = [_WORDS[i % len(_WORDS)] for i in range(max(1, int(input_len)))]
    return "Repeat nothing; write a long essay. " + " ".join(words)


def request_body(model, prompt, output_len):
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": int(output_len),
        "min_tokens": int(output_len),
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def percentile(values, share):
    """Linear interpolation between closest ranks (numpy's default, which vllm bench uses)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * share / 100.0
    low, high = int(math.floor(rank)), int(math.ceil(rank))
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _content_of(chunk):
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    return (delta.get("content") or "") + (delta.get("reasoning_content") or delta.get("reasoning") or "")


def stream_request(base_url, model, api_key, prompt, output_len, timeout, clock=time.monotonic,
                   validate_certs=True):
    """One streamed chat completion; a dict with ok, error, ttft, itl, latency, output_tokens."""
    url = urllib.parse.urlsplit(base_url.rstrip("/") + "/v1/chat/completions")
    extra = {}
    if url.scheme == "https":
        conn_class = http.client.HTTPSConnection
        # The endpoint benchmarks its own listener on loopback, where a
        # certificate issued for the public name cannot match.
        extra["context"] = ssl.create_default_context() if validate_certs else ssl._create_unverified_context()
    else:
        conn_class = http.client.HTTPConnection
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer %s" % api_key
    result = {"ok": False, "error": "", "ttft": 0.0, "itl": [], "latency": 0.0, "output_tokens": 0}
    start = clock()
    conn = None
    try:
        conn = conn_class(url.hostname, url.port, timeout=max(timeout, 0.1), **extra)
        conn.request("POST", url.path, body=json.dumps(request_body(model, prompt, output_len)), headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            result["error"] = "HTTP %d: %s" % (response.status, response.read(300).decode("utf-8", "replace"))
            return result
        last = None
        chunks = 0
        usage_tokens = None
        while True:
            if clock() - start > timeout:
                raise TimeoutError("no answer within %.0f s" % timeout)
            line = response.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            now = clock()
            if _content_of(chunk):
                if last is None:
                    result["ttft"] = now - start
                else:
                    result["itl"].append(now - last)
                last = now
                chunks += 1
            if chunk.get("usage"):
                usage_tokens = chunk["usage"].get("completion_tokens")
        result["latency"] = clock() - start
        result["output_tokens"] = int(usage_tokens if usage_tokens is not None else chunks)
        if last is None:
            result["error"] = "the stream carried no tokens"
            return result
        result["ok"] = True
    except (OSError, ValueError, http.client.HTTPException) as exc:
        result["error"] = "%s: %s" % (type(exc).__name__, exc)
        result["latency"] = clock() - start
    finally:
        if conn is not None:
            conn.close()
    return result


def run_phase(send, concurrency, requests, deadline, clock=time.monotonic, on_result=None):
    """Send `requests` requests, `concurrency` at a time, none after `deadline`.

    `send(timeout)` performs one request and returns stream_request's dict.
    Returns (results, wall seconds). Requests never started because the bound
    was reached are reported as failed with that reason.
    """
    results = []
    lock = threading.Lock()
    queue = list(range(int(requests)))
    started = clock()

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                queue.pop()
            left = deadline - clock()
            if left <= 0:
                outcome = {"ok": False, "error": "not sent: the benchmark's bound was reached",
                           "ttft": 0.0, "itl": [], "latency": 0.0, "output_tokens": 0}
            else:
                outcome = send(left)
                if not outcome["ok"] and clock() >= deadline:
                    outcome["error"] = "cut at the benchmark's bound (%s)" % outcome["error"]
            with lock:
                results.append(outcome)
                if on_result:
                    on_result(outcome)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, int(concurrency)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, clock() - started


def tpot(result):
    """Seconds per output token after the first (vllm bench's TPOT), or None."""
    if not result["ok"] or result["output_tokens"] < 2:
        return None
    return (result["latency"] - result["ttft"]) / (result["output_tokens"] - 1)


def summarize(single, aggregate, aggregate_wall, concurrency):
    """The benchmark's figures from both phases' request results."""
    single_tpots = [t for t in (tpot(r) for r in single) if t]
    done = [r for r in aggregate if r["ok"]]
    ttfts = [r["ttft"] * 1000 for r in done]
    itls = [gap * 1000 for r in done for gap in r["itl"]]
    everything = list(single) + list(aggregate)
    errors = sorted({r["error"] for r in everything if not r["ok"]})
    return {
        "single_stream_tok_s": round(1.0 / percentile(single_tpots, 50), 2) if single_tpots else 0.0,
        "single_ttft_ms_p50": round(percentile([r["ttft"] * 1000 for r in single if r["ok"]], 50), 1),
        "aggregate_tok_s": round(sum(r["output_tokens"] for r in done) / aggregate_wall, 2)
        if aggregate_wall > 0 and done else 0.0,
        "concurrency": int(concurrency),
        "ttft_ms_p50": round(percentile(ttfts, 50), 1),
        "ttft_ms_p99": round(percentile(ttfts, 99), 1),
        "itl_ms_p50": round(percentile(itls, 50), 2),
        "itl_ms_p99": round(percentile(itls, 99), 2),
        "requests": len(everything),
        "failed": len(everything) - sum(1 for r in everything if r["ok"]),
        "errors": errors[:5],
    }


def from_vllm_bench(single_result, aggregate_result):
    """The same figures from the two `--save-result` JSON files of `vllm bench serve`
    (a --max-concurrency 1 run and a --max-concurrency max_num_seqs run)."""
    single_tpot = float(single_result.get("median_tpot_ms") or 0.0)
    requests = 0
    failed = 0
    for run in (single_result, aggregate_result):
        requests += int(run.get("completed", 0)) + int(run.get("failed", 0))
        failed += int(run.get("failed", 0))
    errors = sorted({e for run in (single_result, aggregate_result) for e in (run.get("errors") or []) if e})
    return {
        "single_stream_tok_s": round(1000.0 / single_tpot, 2) if single_tpot > 0 else 0.0,
        "single_ttft_ms_p50": round(float(single_result.get("median_ttft_ms") or 0.0), 1),
        "aggregate_tok_s": round(float(aggregate_result.get("output_throughput") or 0.0), 2),
        "concurrency": int(aggregate_result.get("max_concurrency") or 0),
        "ttft_ms_p50": round(float(aggregate_result.get("median_ttft_ms") or 0.0), 1),
        "ttft_ms_p99": round(float(aggregate_result.get("p99_ttft_ms") or 0.0), 1),
        "itl_ms_p50": round(float(aggregate_result.get("median_itl_ms") or 0.0), 2),
        "itl_ms_p99": round(float(aggregate_result.get("p99_itl_ms") or 0.0), 2),
        "requests": requests,
        "failed": failed,
        "errors": errors[:5],
    }


def vllm_bench_command(base_url, model, tokenizer, input_len, output_len, concurrency, requests,
                       result_dir, result_filename):
    """argv of `vllm bench serve` (the pinned release's options) for one phase. The API key
    goes in the OPENAI_API_KEY variable, which that release reads; never in argv (ps shows it)."""
    argv = ["vllm", "bench", "serve", "--backend", "openai-chat", "--base-url", base_url.rstrip("/"),
            "--endpoint", "/v1/chat/completions", "--model", model, "--tokenizer", tokenizer,
            "--dataset-name", "random", "--random-input-len", str(int(input_len)),
            "--random-output-len", str(int(output_len)), "--ignore-eos", "--temperature", "0",
            "--max-concurrency", str(int(concurrency)), "--num-prompts", str(int(requests)),
            "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", "50,99",
            "--save-result", "--result-dir", result_dir, "--result-filename", result_filename,
            "--disable-tqdm"]
    return argv


# -- the gate ---------------------------------------------------------------

def shape_of(input_len, output_len, concurrency):
    return {"input_len": int(input_len), "output_len": int(output_len), "concurrency": int(concurrency)}


def reference(history, pair, profile, shape, expected=None, profile_name=None):
    """What a pair must reach: its last passing record for this profile and shape,
    else the profile's stated figures, else None (nothing to compare)."""
    for record in reversed(history or []):
        if (record.get("pair") == pair and record.get("profile") == profile and record.get("passed")
                and record.get("target", "pair") == "pair" and record.get("shape") == shape):
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(record.get("time", 0))))
            image = str(record.get("image_id") or "?").replace("sha256:", "")[:12]
            return {"figures": record["figures"],
                    "source": "pair %s's last known good (%s, image %s)" % (pair, when, image)}
    stated = {k: float(v) for k, v in (expected or {}).items() if k in GATE_METRICS and v}
    if stated:
        return {"figures": stated, "source": "profile %s's stated figures" % (profile_name or profile)}
    return None


def gate(figures, ref, share, metrics=GATE_METRICS):
    """(passed, lines): each gated figure against `share` of the reference's."""
    if ref is None:
        return True, ["no history and no stated figures for this profile: nothing to compare (recorded as the baseline)"]
    passed = True
    lines = []
    for metric in metrics:
        want = ref["figures"].get(metric)
        if not want:
            continue
        got = float(figures.get(metric) or 0.0)
        ratio = got / float(want)
        ok = ratio >= share
        passed = passed and ok
        lines.append("%s %.1f tok/s is %d%% of %.1f tok/s from %s (needs %d%%)%s" % (
            FIGURE_LABELS.get(metric, metric), got, int(round(ratio * 100)), float(want), ref["source"],
            int(round(share * 100)), "" if ok else ": TOO SLOW"))
    if not lines:
        lines.append("%s names none of the gated figures (%s)" % (ref["source"], ", ".join(metrics)))
    return passed, lines


# -- history ----------------------------------------------------------------

def load_history(path):
    """Every record of the history file (JSON lines); a line that does not parse is skipped."""
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return records


def append_history(path, records):
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def summary_table(records):
    """A fixed-width table of benchmark records, one row each."""
    header = ("target", "profile", "single tok/s", "aggregate tok/s", "conc", "TTFT p50/p99 ms",
              "ITL p50/p99 ms", "failed", "took")
    rows = [header]
    for record in records:
        f = record.get("figures", {})
        rows.append((
            record.get("label") or ("endpoint" if record.get("target") == "endpoint" else "pair %s" % record.get("pair")),
            str(record.get("profile", "")),
            "%.1f" % f.get("single_stream_tok_s", 0.0),
            "%.1f" % f.get("aggregate_tok_s", 0.0),
            str(f.get("concurrency", "")),
            "%.0f / %.0f" % (f.get("ttft_ms_p50", 0.0), f.get("ttft_ms_p99", 0.0)),
            "%.1f / %.1f" % (f.get("itl_ms_p50", 0.0), f.get("itl_ms_p99", 0.0)),
            "%d of %d" % (f.get("failed", 0), f.get("requests", 0)),
            "%.1f s of %d s" % (record.get("elapsed_s", 0.0), record.get("bound_s", 0)),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


# -- pictures and report (controller side) -----------------------------------
# One PNG per profile: decode tok/s over time (single stream solid, aggregate
# dashed, one colour per pair and one for the endpoint) above TTFT p50; each
# rollout's performance gate is a vertical line, green where it kept the new
# configuration and red where it rolled the pair back. matplotlib is imported
# only when drawing (a controller dependency in pyproject.toml).

def _target(record):
    return "endpoint" if record.get("target") == "endpoint" else "pair %s" % record.get("pair")


def _when(record):
    return datetime.datetime.fromtimestamp(float(record.get("time", 0)), tz=datetime.timezone.utc)


def profiles_of(history):
    return sorted({str(r.get("profile")) for r in history if r.get("profile")})


def png_name(profile):
    return "%s.png" % "".join(c if c.isalnum() or c in "-_" else "_" for c in profile)


def draw_profile(history, profile, path):
    """Write the PNG of one profile's history to `path`: single-stream tok/s, aggregate tok/s and
    TTFT p50 over time, one line per target through the figures that served (passing records);
    figures a gate rejected are red crosses; each rollout gate is a vertical line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.lines as mlines
    import matplotlib.pyplot as plt

    records = [r for r in history if r.get("profile") == profile and r.get("figures")]
    panels = (("single_stream_tok_s", "single-stream\ndecode tok/s"), ("aggregate_tok_s", "aggregate\ndecode tok/s"),
              ("ttft_ms_p50", "TTFT p50 (ms)"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 7.5), sharex=True)
    colours = plt.get_cmap("tab10")
    for index, target in enumerate(sorted({_target(r) for r in records})):
        mine = sorted((r for r in records if _target(r) == target), key=lambda r: r.get("time", 0))
        kept = [r for r in mine if r.get("passed", True)]
        rejected = [r for r in mine if not r.get("passed", True)]
        for axis, (metric, _) in zip(axes, panels):
            axis.plot([_when(r) for r in kept], [r["figures"].get(metric, 0) for r in kept], "-o",
                      color=colours(index % 10), markersize=4, label=target)
            if rejected:
                axis.plot([_when(r) for r in rejected], [r["figures"].get(metric, 0) for r in rejected], "X",
                          color="tab:red", markersize=9, markeredgecolor=colours(index % 10))
    for record in records:
        if record.get("kind") == "gate":
            for axis in axes:
                axis.axvline(_when(record), color="tab:green" if record.get("passed") else "tab:red",
                             alpha=0.35, linewidth=1.2)
    for axis, (_, label) in zip(axes, panels):
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    handles, _ = axes[0].get_legend_handles_labels()
    handles += [mlines.Line2D([], [], color="tab:green", alpha=0.5, label="rollout gate: kept"),
                mlines.Line2D([], [], color="tab:red", alpha=0.5, label="rollout gate: rolled back"),
                mlines.Line2D([], [], color="tab:red", marker="X", linestyle="", label="figures rolled back")]
    axes[0].legend(handles=handles, fontsize=7, loc="lower left", ncol=3)
    axes[0].set_title("sparkfleet benchmark history, profile %s" % profile)
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=datetime.timezone.utc))
    fig.autofmt_xdate()
    fig.text(0.01, 0.01, "times UTC; lines join the figures that served, crosses are figures a gate rejected",
             fontsize=7, color="0.4")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def report_text(history, fleet):
    """report.md: per profile its picture, the latest figures per target and each gate's verdict."""
    lines = ["# sparkfleet benchmark report: %s" % fleet, "",
             "Each picture plots one profile's history, one line per pair and one for the endpoint: "
             "single-stream decode tok/s, aggregate decode tok/s at the profile's max_num_seqs, and time to "
             "first token. Vertical lines are rollouts' performance gates: green kept the new configuration, "
             "red rolled it back; red crosses are the figures it rejected.", ""]
    for profile in profiles_of(history):
        records = [r for r in history if r.get("profile") == profile and r.get("figures")]
        latest = {}
        for record in sorted(records, key=lambda r: r.get("time", 0)):
            if record.get("passed", True):
                latest[_target(record)] = record
        lines += ["## Profile %s" % profile, "", "![%s](%s)" % (profile, png_name(profile)), "",
                  "Latest figures that serve (rejected ones are under Rollout gates):", "", "```"]
        lines += summary_table([dict(r, label=t) for t, r in sorted(latest.items())])
        lines += ["```", ""]
        gates = [r for r in records if r.get("kind") == "gate"]
        if gates:
            lines += ["Rollout gates:", ""]
            for record in gates:
                lines.append("- %s, %s, image %s: **%s**. %s" % (
                    _when(record).strftime("%Y-%m-%d %H:%M:%S UTC"), _target(record),
                    str(record.get("image_id") or "?").replace("sha256:", "")[:12],
                    "kept" if record.get("passed") else "rolled back",
                    "; ".join(record.get("verdict") or [])))
            lines.append("")
    return "\n".join(lines) + "\n"
