# -*- coding: utf-8 -*-
"""Judging a vLLM endpoint the way a user would: real completions, clean text.

`/v1/models` answering says nothing about whether the model produces sense.
These checks look at actual output for the failure shapes seen on Spark pairs:
drift into CJK script on an English prompt, repetition loops, and tool or
reasoning markup leaking into content.

Pure functions, no Ansible imports: used by the health gate module and tests.
"""

from __future__ import annotations

import re

CJK = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
)
# Markup that belongs in tool-call or reasoning fields, never in user-visible content.
LEAKED_MARKUP = re.compile(
    r"<\s*/?\s*(tool_call|tool_calls|function_calls?|invoke|parameter|think)\b"
    r"|<｜[^｜>]{1,40}｜>"
    r"|<\|[a-z_]{3,40}\|>",
    re.IGNORECASE,
)
KV_CACHE_LINE = re.compile(r"GPU KV cache size:\s*([\d,]+)\s*tokens")


def cjk_ratio(text):
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if CJK.match(c)) / float(len(letters))


def repetition(text, min_ngram=3, max_ngram=12, threshold=4):
    """Longest run of one n-gram repeated back to back, as (phrase, count) or None."""
    words = re.findall(r"\S+", text.lower())
    best = None
    for n in range(min_ngram, max_ngram + 1):
        if len(words) < n * threshold:
            break
        i = 0
        while i + n <= len(words):
            gram = words[i:i + n]
            count = 1
            j = i + n
            while words[j:j + n] == gram:
                count += 1
                j += n
            if count >= threshold and (best is None or count * n > best[1] * len(best[0].split())):
                best = (" ".join(gram), count)
            i = j if count > 1 else i + 1
    return best


def garble_problems(text, english=True, max_cjk_ratio=0.02):
    """Reasons this completion text is not clean output; empty list when clean."""
    problems = []
    if not text or not text.strip():
        return ["empty completion"]
    if english:
        ratio = cjk_ratio(text)
        if ratio > max_cjk_ratio:
            sample = "".join(CJK.findall(text))[:12]
            problems.append(
                "CJK drift on an English prompt: %.0f%% of letters are CJK (%s)" % (ratio * 100, sample)
            )
    rep = repetition(text)
    if rep:
        problems.append("repetition loop: %r repeated %d times" % rep)
    leak = LEAKED_MARKUP.search(text)
    if leak:
        problems.append("leaked tool/reasoning markup in content: %r" % leak.group(0))
    return problems


def models_problems(payload, served_name, max_model_len=None):
    """Check a /v1/models answer names the served model with the profile's context."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not data:
        return ["/v1/models returned no models: %r" % (payload,)]
    ids = [m.get("id") for m in data if isinstance(m, dict)]
    if served_name not in ids:
        return ["/v1/models serves %s, expected %s" % (", ".join(map(str, ids)), served_name)]
    model = [m for m in data if m.get("id") == served_name][0]
    if max_model_len and int(model.get("max_model_len") or 0) != int(max_model_len):
        return [
            "/v1/models reports max_model_len %s for %s, the profile expects %s"
            % (model.get("max_model_len"), served_name, max_model_len)
        ]
    return []


def completion_text(payload):
    """Content of the first choice of a chat or text completion."""
    choices = payload.get("choices") or []
    if not choices:
        return ""
    first = choices[0]
    if "message" in first:
        return first["message"].get("content") or ""
    return first.get("text") or ""


def kv_cache_tokens(log_text):
    """The last ``GPU KV cache size: N tokens`` figure in a start-up log, or None."""
    found = KV_CACHE_LINE.findall(log_text or "")
    if not found:
        return None
    return int(found[-1].replace(",", ""))


def parse_metrics(text):
    """Prometheus text exposition -> {name: summed value over all label sets}."""
    totals = {}
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eE]+|NaN|[+-]Inf)", line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        totals[m.group(1)] = totals.get(m.group(1), 0.0) + value
    return totals


def spec_acceptance(metrics):
    """Accepted draft tokens per draft step, from vLLM's spec-decode counters; None if absent."""
    drafts = metrics.get("vllm:spec_decode_num_drafts_total")
    accepted = metrics.get("vllm:spec_decode_num_accepted_tokens_total")
    if not drafts or accepted is None:
        return None
    return accepted / drafts


class GateFailure(Exception):
    """A health check failed; str() names the check and what was seen."""

    def __init__(self, check, seen):
        Exception.__init__(self, "%s: %s" % (check, seen))
        self.check = check
        self.seen = seen


DEFAULT_PROBES = (
    {"name": "arithmetic", "prompt": "What is 17 + 25? Answer with the number only.", "expect": "42",
     "max_tokens": 16},
)
DEFAULT_CLEAN_PROMPT = (
    "In three plain English sentences, explain why a team would run a language model on two "
    "small computers connected by a fast network cable."
)


class HealthGate:
    """Runs the checks against one head.

    ``transport(method, path, body, timeout)`` returns ``(status, text)`` and
    raises OSError when the server cannot be reached; ``clock`` and ``sleep``
    are injectable so the waiting logic is testable without a server.
    """

    def __init__(self, transport, served_model_name, clock, sleep, max_model_len=None,
                 probes=DEFAULT_PROBES, clean_prompt=DEFAULT_CLEAN_PROMPT, concurrency=4,
                 clean_max_tokens=160, request_timeout=120):
        self.transport = transport
        self.served = served_model_name
        self.clock = clock
        self.sleep = sleep
        self.max_model_len = max_model_len
        self.probes = list(probes or [])
        self.clean_prompt = clean_prompt
        self.concurrency = int(concurrency)
        self.clean_max_tokens = int(clean_max_tokens)
        self.request_timeout = request_timeout
        self.passed = []

    def wait_healthy(self, deadline_s, interval_s=5.0):
        start = self.clock()
        last = "no answer yet"
        while True:
            try:
                status, _ = self.transport("GET", "/health", None, 10)
                if status == 200:
                    self.passed.append("health after %.0fs" % (self.clock() - start))
                    return self.clock() - start
                last = "HTTP %s" % status
            except OSError as exc:
                last = str(exc) or exc.__class__.__name__
            if self.clock() - start >= deadline_s:
                raise GateFailure("health", "/health not ready after %ds (last: %s)" % (deadline_s, last))
            self.sleep(interval_s)

    def _json(self, check, method, path, body=None):
        import json
        try:
            status, text = self.transport(method, path, body, self.request_timeout)
        except OSError as exc:
            raise GateFailure(check, "%s %s failed: %s" % (method, path, exc))
        if status != 200:
            raise GateFailure(check, "%s %s answered HTTP %s: %s" % (method, path, status, text[:300]))
        try:
            return json.loads(text)
        except ValueError:
            raise GateFailure(check, "%s %s returned non-JSON: %r" % (method, path, text[:200]))

    def check_models(self):
        problems = models_problems(self._json("models", "GET", "/v1/models"), self.served, self.max_model_len)
        if problems:
            raise GateFailure("models", "; ".join(problems))
        self.passed.append("models")

    def _chat(self, check, prompt, max_tokens):
        body = {"model": self.served, "temperature": 0, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": prompt}]}
        return completion_text(self._json(check, "POST", "/v1/chat/completions", body))

    def check_probes(self):
        for probe in self.probes:
            check = "completion[%s]" % probe.get("name", probe["prompt"][:20])
            text = self._chat(check, probe["prompt"], int(probe.get("max_tokens", 32)))
            if probe["expect"].lower() not in text.lower():
                raise GateFailure(check, "expected %r in the answer, got %r" % (probe["expect"], text[:300]))
            again = self._chat(check, probe["prompt"], int(probe.get("max_tokens", 32)))
            if again != text:
                raise GateFailure(check, "temperature 0 is not deterministic: %r then %r" % (text[:120], again[:120]))
            self.passed.append(check)

    def check_clean(self):
        import threading
        results = [None] * max(1, self.concurrency)

        def one(i):
            try:
                results[i] = ("ok", self._chat("clean-output", self.clean_prompt, self.clean_max_tokens))
            except GateFailure as exc:
                results[i] = ("error", str(exc))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, (kind, value) in enumerate(results):
            if kind == "error":
                raise GateFailure("concurrent-output", "request %d of %d: %s" % (i + 1, len(results), value))
            problems = garble_problems(value)
            if problems:
                raise GateFailure("clean-output", "request %d of %d: %s; text: %r"
                                  % (i + 1, len(results), "; ".join(problems), value[:200]))
        self.passed.append("clean-output x%d" % len(results))

    def check_kv_cache(self, log_text, minimum):
        tokens = kv_cache_tokens(log_text)
        if tokens is None:
            raise GateFailure("kv-cache", "no 'GPU KV cache size' line in the start-up log")
        if tokens < int(minimum):
            raise GateFailure("kv-cache", "%d tokens, below the profile's floor of %d" % (tokens, int(minimum)))
        self.passed.append("kv-cache %d tokens" % tokens)
        return tokens

    def check_spec_acceptance(self, minimum):
        try:
            status, text = self.transport("GET", "/metrics", None, self.request_timeout)
        except OSError as exc:
            raise GateFailure("spec-decode", "GET /metrics failed: %s" % exc)
        if status != 200:
            raise GateFailure("spec-decode", "GET /metrics answered HTTP %s" % status)
        rate = spec_acceptance(parse_metrics(text))
        if rate is None:
            raise GateFailure("spec-decode", "no speculative-decoding counters in /metrics")
        if rate < float(minimum):
            raise GateFailure("spec-decode", "%.2f accepted tokens per draft step, below the floor of %.2f"
                              % (rate, float(minimum)))
        self.passed.append("spec-decode %.2f" % rate)
        return rate
