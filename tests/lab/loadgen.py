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
                parts, done = [], False
                for raw in response:
                    line = raw.decode("utf-8").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    delta = json.loads(data)["choices"][0].get("delta", {})
                    parts.append(delta.get("content") or "")
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
