"""A small load generator for the lab's fleet endpoint (tests only).

Sends streaming and non-streaming chat completions from a few worker threads
until stopped, bounded by a request cap and a time cap so it always ends by
itself. Every request must return 200 with a clean, complete answer; anything
else counts as a failure, with the reason kept for the report.
"""

import json
import threading
import time
import urllib.error
import urllib.request

PROMPTS = (
    ("What is 17 + 25? Answer with the number only.", "42"),
    ("What is the capital of France? Answer in one word.", "Paris"),
)


def read_sse(response):
    """The JSON events of an OpenAI server-sent event stream, and whether it ended with [DONE]."""
    events = []
    for raw in response:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return events, True
        events.append(json.loads(data))
    return events, False


class LoadGenerator:
    def __init__(self, base_url, model="deepseek-v4-flash", workers=4, max_requests=5000,
                 max_seconds=1800, timeout=120, api_key=None):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.workers = workers
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.latencies = []
        self.failures = []
        self.sent = 0
        self.threads = []
        self.started = None

    def _request(self, index):
        prompt, expected = PROMPTS[index % len(PROMPTS)]
        stream = index % 2 == 1
        body = {"model": self.model, "temperature": 0, "max_tokens": 24, "stream": stream,
                "messages": [{"role": "user", "content": prompt}]}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = "Bearer %s" % self.api_key
        request = urllib.request.Request(self.base_url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            if response.status != 200:
                raise ValueError("HTTP %d" % response.status)
            if not stream:
                text = json.load(response)["choices"][0]["message"]["content"]
            else:
                events, done = read_sse(response)
                parts = [event["choices"][0].get("delta", {}).get("content") or ""
                         for event in events if event.get("choices")]
                if not done:
                    raise ValueError("stream ended without [DONE]")
                text = "".join(parts)
        if expected not in text:
            raise ValueError("answer %r lacks %r" % (text[:80], expected))

    def _worker(self):
        while not self.stop_event.is_set():
            with self.lock:
                if self.sent >= self.max_requests or time.monotonic() - self.started > self.max_seconds:
                    return
                index = self.sent
                self.sent += 1
            begin = time.monotonic()
            try:
                self._request(index)
                with self.lock:
                    self.latencies.append(time.monotonic() - begin)
            except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                with self.lock:
                    self.failures.append("%s: %s" % (type(exc).__name__, exc))
            time.sleep(0.05)

    def start(self):
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)]
        for thread in self.threads:
            thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=self.timeout + 5)
        return self.summary()

    def summary(self):
        ordered = sorted(self.latencies)

        def pct(p):
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3) if ordered else None

        return {"sent": self.sent, "ok": len(self.latencies), "failed": len(self.failures),
                "p50_s": pct(0.50), "p99_s": pct(0.99), "failures": self.failures[:10],
                "seconds": round(time.monotonic() - self.started, 1)}


class LongStreams:
    """Long answers (tens of seconds to minutes) through the endpoint, each in
    its own thread, as agent traffic sends them: ``ignore_eos`` with a
    ``max_tokens`` makes the answer exactly that long, so an answer that
    arrives whole has exactly ``max_tokens`` tokens (streamed: one content
    delta per token, then ``[DONE]``). Each result records when it started and
    ended, whether it arrived whole, and why not."""

    def __init__(self, base_url, api_key, tokens_per_s, model="deepseek-v4-flash"):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.tokens_per_s = tokens_per_s
        self.model = model
        self.lock = threading.Lock()
        self.results = []
        self.threads = []
        self.origin = time.monotonic()

    def start(self, seconds, stream):
        tokens = int(seconds * self.tokens_per_s)
        result = {"seconds": seconds, "stream": stream, "tokens": tokens, "received": 0, "whole": False,
                  "started_s": round(time.monotonic() - self.origin, 1), "ended_s": None, "error": None}
        with self.lock:
            self.results.append(result)
        thread = threading.Thread(target=self._run, args=(result,), daemon=True)
        thread.start()
        self.threads.append(thread)
        return result

    def _run(self, result):
        body = {"model": self.model, "max_tokens": result["tokens"], "ignore_eos": True, "temperature": 0,
                "stream": result["stream"], "messages": [{"role": "user", "content": "Write a long report."}]}
        if result["stream"]:
            body["stream_options"] = {"include_usage": True}
        request = urllib.request.Request(
            self.base_url + "/v1/chat/completions", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer %s" % self.api_key})
        try:
            with urllib.request.urlopen(request, timeout=result["seconds"] * 4 + 120) as response:
                if not result["stream"]:
                    answer = json.load(response)
                    result["received"] = answer["usage"]["completion_tokens"]
                    result["whole"] = (result["received"] == result["tokens"]
                                       and answer["choices"][0]["finish_reason"] == "length")
                else:
                    events, done = read_sse(response)
                    usage = next((e["usage"]["completion_tokens"] for e in events if e.get("usage")), None)
                    deltas = sum(1 for e in events for c in e.get("choices", []) if c.get("delta", {}).get("content"))
                    result["received"] = deltas
                    result["whole"] = done and deltas == usage == result["tokens"]
                    if not done:
                        result["error"] = "stream ended without [DONE] after %d of %d tokens" % (deltas, result["tokens"])
        except Exception as exc:  # pylint: disable=broad-except  (a cut answer fails in many ways: keep why)
            result["error"] = "%s: %s" % (type(exc).__name__, exc)
        result["ended_s"] = round(time.monotonic() - self.origin, 1)

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            return [dict(r) for r in self.results]
