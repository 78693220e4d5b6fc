"""Engine simulation + OpenAI-compatible HTTP API (head node only)."""

import json
import math
import select
import os
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import fingerprint
from . import log
from . import nccl
from . import rendezvous
from . import textgen
from .cli import SimExit, env_float, fatal

# KV cache model: tokens = BASE + SLOPE * (util - 0.85), scaled by dtype.
KV_BASE_FP8 = 360858
KV_SLOPE_FP8 = (612341 - 360858) / 0.05
KV_DTYPE_FACTOR = {"fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0,
                   "nvfp4_ds_mla": 3_200_000 / KV_BASE_FP8, "auto": 0.5, "bfloat16": 0.5, "float16": 0.5}
KV_BYTES_PER_FP8_TOKEN = 28672
STALL_AT_RUNNING = 6

# Bucket boundaries of vLLM's histograms (vllm/v1/metrics/buckets.py:
# REQUEST_LATENCY_BUCKETS for e2e and queue time, TIME_TO_FIRST_TOKEN_BUCKETS,
# INTER_TOKEN_LATENCY_BUCKETS), read from the pinned wheels.
E2E_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
               10.0, 20.0, 40.0, 80.0]


def kv_cache_tokens(args):
    """Returns (tokens, gib) deterministic from utilization and kv dtype."""
    base = KV_BASE_FP8 + KV_SLOPE_FP8 * (args.gpu_memory_utilization - 0.85)
    gib = max(base, 0) * KV_BYTES_PER_FP8_TOKEN / 2 ** 30
    tokens = int(round(base * KV_DTYPE_FACTOR.get(args.kv_cache_dtype, 1.0)))
    override = os.environ.get("VLLM_SIM_KV_TOKENS")
    if override:
        tokens = int(float(override))
    return tokens, gib


class Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, v, times=1):
        self.sum += v * times
        self.count += times
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += times

    def render(self, name, labels):
        out = []
        for b, c in zip(self.buckets, self.counts):
            out.append(f'{name}_bucket{{{labels},le="{b}"}} {float(c)}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {float(self.count)}')
        out.append(f"{name}_sum{{{labels}}} {self.sum}")
        out.append(f"{name}_count{{{labels}}} {float(self.count)}")
        return out


class Engine:
    def __init__(self, args, faults, kv_tokens):
        self.args = args
        self.faults = faults
        self.kv_tokens = max(kv_tokens, 1)
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(max(1, args.max_num_seqs))
        self.running = 0
        self.waiting = 0
        self.inflight = 0
        self.inflight_tokens = 0
        self.prompt_tokens = 0
        self.gen_tokens = 0
        self.success = {"stop": 0, "length": 0, "abort": 0}
        self.e2e = Histogram(E2E_BUCKETS)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.queue = Histogram(E2E_BUCKETS)
        self.served = 0
        self.draining = False
        # slow_decode=F: every token takes F times as long (a configuration
        # that answers correctly but slower, for the performance gate).
        self.token_delay = env_float("VLLM_SIM_TOKEN_DELAY", 0.01) * float(faults.get("slow_decode", 1.0))
        # A pair whose NCCL fell back to sockets decodes slower (nccl.py says
        # why and by how much); intra-node TP needs no network and keeps pace.
        if getattr(args, "nccl_net", None) == "Socket":
            self.token_delay *= nccl.SOCKET_DECODE_FACTOR
        # stall_once=S: the first time STALL_AT_RUNNING requests run at once
        # (a benchmark's concurrent round, more than the health gate's 4
        # requests), tokens take 3x as long for S seconds: a transient stall
        # that a second benchmark run no longer sees.
        self.stall_s = float(faults.get("stall_once", 0.0))
        self.stall_until = None
        spec = args.speculative_config
        self.spec_k = int(spec.get("num_speculative_tokens", 1)) if spec else 0
        self.spec_accept = env_float("VLLM_SIM_SPEC_ACCEPT", 0.73)
        self.spec_drafts = 0
        self.spec_draft_tokens = 0
        self.spec_accepted = 0
        self.spec_accepted_pos = [0] * self.spec_k
        self._spec_frac = 0.0
        self.last_stats = (0, 0)

    # request lifecycle -------------------------------------------------
    def begin(self, prompt_tokens):
        with self.lock:
            self.inflight += 1
            self.waiting += 1
        queued_at = time.monotonic()
        self.slots.acquire()
        with self.lock:
            self.queue.observe(time.monotonic() - queued_at)
            self.waiting -= 1
            self.running += 1
            self.inflight_tokens += prompt_tokens
            if self.stall_s and self.stall_until is None and self.running >= STALL_AT_RUNNING:
                self.stall_until = time.monotonic() + self.stall_s

    def token_pause(self):
        """Seconds the next token takes (3x inside the stall_once window)."""
        if self.stall_until is not None and time.monotonic() < self.stall_until:
            return self.token_delay * 3
        return self.token_delay

    def progress(self, n=1):
        with self.lock:
            self.inflight_tokens += n

    def finish(self, prompt_tokens, gen_tokens, reason, ttft, e2e):
        with self.lock:
            self.running -= 1
            self.inflight -= 1
            self.inflight_tokens -= prompt_tokens + gen_tokens
            self.prompt_tokens += prompt_tokens
            self.gen_tokens += gen_tokens
            self.success[reason] = self.success.get(reason, 0) + 1
            self.e2e.observe(e2e)
            self.ttft.observe(ttft)
            # vLLM observes every gap between two output tokens; the
            # simulator's tokens are evenly spaced, so each gap is the mean.
            if gen_tokens > 1:
                self.itl.observe((e2e - ttft) / (gen_tokens - 1), times=gen_tokens - 1)
            if reason != "abort":
                self.served += 1
            if self.spec_k and gen_tokens:
                self._account_spec(gen_tokens)
            served = self.served
        self.slots.release()
        return served

    def _account_spec(self, n):
        k, a = self.spec_k, self.spec_accept
        per_step = 1.0 + k * a
        drafts = max(1, math.ceil(n / per_step))
        exact = drafts * k * a + self._spec_frac
        accepted = min(int(exact), drafts * k)
        self._spec_frac = exact - accepted
        self.spec_drafts += drafts
        self.spec_draft_tokens += drafts * k
        self.spec_accepted += accepted
        # per-position acceptance decays geometrically; split accepted over positions
        weights = [a ** (i + 1) for i in range(k)]
        tot = sum(weights) or 1.0
        left = accepted
        for i in range(k):
            share = left if i == k - 1 else int(round(accepted * weights[i] / tot))
            share = min(share, left)
            self.spec_accepted_pos[i] += share
            left -= share

    # metrics -------------------------------------------------------------
    def metrics_text(self):
        name = self.args.served_model_name[0]
        lb = f'engine="0",model_name="{name}"'
        out = []

        def metric(n, typ, help_, samples):
            out.append(f"# HELP {n} {help_}")
            out.append(f"# TYPE {n} {typ}")
            out.extend(samples)

        with self.lock:
            metric("vllm:num_requests_running", "gauge",
                   "Number of requests in model execution batches.",
                   [f"vllm:num_requests_running{{{lb}}} {float(self.running)}"])
            metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
                   [f"vllm:num_requests_waiting{{{lb}}} {float(self.waiting)}"])
            usage = min(1.0, max(0, self.inflight_tokens) / self.kv_tokens)
            metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
                   [f"vllm:kv_cache_usage_perc{{{lb}}} {usage}"])
            metric("vllm:num_preemptions_total", "counter", "Cumulative number of preemption from the engine.",
                   [f"vllm:num_preemptions_total{{{lb}}} 0.0"])
            metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
                   [f"vllm:prompt_tokens_total{{{lb}}} {float(self.prompt_tokens)}"])
            metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
                   [f"vllm:generation_tokens_total{{{lb}}} {float(self.gen_tokens)}"])
            metric("vllm:request_success_total", "counter", "Count of successfully processed requests.",
                   [f'vllm:request_success_total{{{lb},finished_reason="{r}"}} {float(c)}'
                    for r, c in sorted(self.success.items())])
            metric("vllm:e2e_request_latency_seconds", "histogram",
                   "Histogram of e2e request latency in seconds.",
                   self.e2e.render("vllm:e2e_request_latency_seconds", lb))
            metric("vllm:time_to_first_token_seconds", "histogram",
                   "Histogram of time to first token in seconds.",
                   self.ttft.render("vllm:time_to_first_token_seconds", lb))
            metric("vllm:inter_token_latency_seconds", "histogram",
                   "Histogram of inter-token latency in seconds.",
                   self.itl.render("vllm:inter_token_latency_seconds", lb))
            metric("vllm:request_queue_time_seconds", "histogram",
                   "Histogram of time spent in WAITING phase for request.",
                   self.queue.render("vllm:request_queue_time_seconds", lb))
            if self.spec_k:
                metric("vllm:spec_decode_num_drafts_total", "counter", "Number of spec decoding drafts.",
                       [f"vllm:spec_decode_num_drafts_total{{{lb}}} {float(self.spec_drafts)}"])
                metric("vllm:spec_decode_num_draft_tokens_total", "counter", "Number of draft tokens.",
                       [f"vllm:spec_decode_num_draft_tokens_total{{{lb}}} {float(self.spec_draft_tokens)}"])
                metric("vllm:spec_decode_num_accepted_tokens_total", "counter", "Number of accepted tokens.",
                       [f"vllm:spec_decode_num_accepted_tokens_total{{{lb}}} {float(self.spec_accepted)}"])
                metric("vllm:spec_decode_num_accepted_tokens_per_pos_total", "counter",
                       "Accepted tokens per draft position.",
                       [f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{lb},position="{i}"}} {float(c)}'
                        for i, c in enumerate(self.spec_accepted_pos)])
        return "\n".join(out) + "\n"

    def stats_loop(self, interval=10.0):
        last = (0, 0, 0, 0)
        while True:
            time.sleep(interval)
            with self.lock:
                cur = (self.prompt_tokens, self.gen_tokens, self.spec_drafts, self.spec_accepted)
                running, waiting = self.running, self.waiting
                usage = 100.0 * min(1.0, max(0, self.inflight_tokens) / self.kv_tokens)
                dtoks = self.spec_draft_tokens
            if cur == last and running == 0:
                continue
            log.info("loggers.py:127",
                     f"Engine 000: Avg prompt throughput: {(cur[0] - last[0]) / interval:.1f} tokens/s, "
                     f"Avg generation throughput: {(cur[1] - last[1]) / interval:.1f} tokens/s, "
                     f"Running: {running} reqs, Waiting: {waiting} reqs, "
                     f"GPU KV cache usage: {usage:.1f}%, Prefix cache hit rate: 0.0%")
            if self.spec_k and cur[2] > last[2]:
                d_drafts, d_acc = cur[2] - last[2], cur[3] - last[3]
                log.info("metrics.py:96",
                         f"SpecDecoding metrics: Mean acceptance length: {1 + d_acc / d_drafts:.2f}, "
                         f"Accepted: {d_acc} tokens, Drafted: {d_drafts * self.spec_k} tokens, "
                         f"Avg Draft acceptance rate: {100.0 * cur[3] / max(1, dtoks):.1f}%")
            last = cur


# ---------------------------------------------------------------------------
# HTTP layer

def _client_gone(conn):
    """True once the client closed its connection (readable, and a peek reads nothing)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _error(message, type_, code):
    return {"error": {"message": message, "type": type_, "code": code}}


def _content_text(content):
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text":
                parts.append(str(p.get("text", "")))
            elif isinstance(p, str):
                parts.append(p)
        return "\n".join(parts)
    return str(content)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    app = None  # set on the subclass

    # logging in uvicorn style
    def log_request(self, code="-", size="-"):
        if self.app.args.uvicorn_log_level in ("critical", "error", "warning"):
            return
        try:
            from http import HTTPStatus
            phrase = HTTPStatus(int(code)).phrase
        except Exception:
            phrase = ""
        log.raw(f'INFO:     {self.client_address[0]}:{self.client_address[1]} - '
                f'"{self.requestline}" {code} {phrase}')

    def log_message(self, fmt, *a):
        pass

    # helpers
    def _send_json(self, code, obj, extra_headers=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_text(self, code, text, ctype="text/plain; charset=utf-8"):
        body = text.encode()
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        return raw

    def _check_auth(self):
        keys = self.app.args.api_keys  # --api-key KEY [KEY ...], else VLLM_API_KEY
        if not keys or not self.path.startswith("/v1"):
            return True
        if self.headers.get("authorization", "") in [f"Bearer {key}" for key in keys]:
            return True
        self._send_json(401, {"error": "Unauthorized"})
        return False

    def _draining(self):
        if self.app.engine.draining:
            self._send_json(503, _error("The server is shutting down.", "ServiceUnavailableError", 503),
                            {"connection": "close"})
            self.close_connection = True
            return True
        return False

    # routes
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if self._draining():
            return
        if path in ("/health", "/ping"):
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
        elif path == "/version":
            self._send_json(200, {"version": fingerprint.release_version()})
        elif path == "/metrics":
            self._send_text(200, self.app.engine.metrics_text(),
                            "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/v1/models":
            if not self._check_auth():
                return
            self._send_json(200, self.app.models_payload())
        elif path in ("/v1/chat/completions", "/v1/completions"):
            self._send_json(405, {"detail": "Method Not Allowed"})
        else:
            self._send_json(404, {"detail": "Not Found"})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        if self._draining():
            return
        if path not in ("/v1/chat/completions", "/v1/completions", "/ping"):
            if path in ("/health", "/metrics", "/v1/models", "/version"):
                self._send_json(405, {"detail": "Method Not Allowed"})
            else:
                self._send_json(404, {"detail": "Not Found"})
            return
        if path == "/ping":
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if not self._check_auth():
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("request body must be a JSON object")
        except ValueError as e:
            self._send_json(400, _error(f"Invalid JSON body: {e}", "BadRequestError", 400))
            return
        model = body.get("model")
        names = self.app.args.served_model_name
        if model is not None and model not in names:
            self._send_json(404, _error(f"The model `{model}` does not exist.", "NotFoundError", 404))
            return
        self.app.complete(self, path == "/v1/chat/completions", body, model or names[0])


class App:
    def __init__(self, args, faults, engine):
        self.args = args
        self.faults = faults
        self.engine = engine
        self.created = int(time.time())
        self.crashing = False

    def models_payload(self):
        return {"object": "list", "data": [
            {"id": n, "object": "model", "created": self.created, "owned_by": "vllm",
             "root": self.args.model, "parent": None, "max_model_len": self.args.max_model_len,
             "permission": []}
            for n in self.args.served_model_name]}

    def complete(self, h, chat, body, model):
        args, engine = self.args, self.engine
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                h._send_json(400, _error("messages must be a non-empty list", "BadRequestError", 400))
                return
            question = ""
            parts = []
            for m in messages:
                if not isinstance(m, dict):
                    continue
                text = _content_text(m.get("content"))
                parts.append(f"{m.get('role', 'user')}: {text}")
                if m.get("role") == "user":
                    question = text
            prompts = ["\n".join(parts)]
            questions = [question]
            prompt_tokens = [textgen.count_tokens(prompts[0]) + 4 * len(messages)]
        else:
            p = body.get("prompt")
            if isinstance(p, str):
                prompts = [p]
            elif isinstance(p, list) and p and all(isinstance(x, str) for x in p):
                prompts = list(p)
            elif isinstance(p, list) and p and all(isinstance(x, int) for x in p):
                prompts = [" ".join(str(x) for x in p)]
            else:
                h._send_json(400, _error("prompt must be a string or a list of strings",
                                         "BadRequestError", 400))
                return
            questions = prompts
            prompt_tokens = [max(1, textgen.count_tokens(x)) for x in prompts]
        # Request defaults are the pinned release's (its ChatCompletionRequest /
        # CompletionRequest fields, recorded in the fingerprint).
        defaults = fingerprint.request_defaults("chat" if chat else "completion")
        max_tokens = body.get("max_completion_tokens") if chat else None
        if max_tokens is None:
            max_tokens = body.get("max_tokens", defaults["max_tokens"])
        ptoks = max(prompt_tokens)
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 1):
            h._send_json(400, _error("max_tokens must be at least 1, got "
                                     f"{max_tokens}.", "BadRequestError", 400))
            return
        if max_tokens is not None and ptoks + max_tokens > args.max_model_len:
            h._send_json(400, _error(
                f"This model's maximum context length is {args.max_model_len} tokens. However, you "
                f"requested {ptoks + max_tokens} tokens ({ptoks} in the messages, {max_tokens} in "
                f"the completion). Please reduce the length of the messages or completion.",
                "BadRequestError", 400))
            return
        # vLLM's get_max_tokens: the smallest of what is left of the context,
        # the request's max_tokens and the server-wide max_new_tokens of
        # --override-generation-config.
        server_cap = (args.override_generation_config or {}).get("max_new_tokens")
        max_tokens = min(v for v in (args.max_model_len - ptoks, max_tokens, server_cap) if v is not None)
        min_tokens = body.get("min_tokens", defaults["min_tokens"])
        if not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or min_tokens < 0:
            h._send_json(400, _error("min_tokens must be greater than or equal to 0, got "
                                     f"{min_tokens}.", "BadRequestError", 400))
            return
        if min_tokens > max_tokens:
            h._send_json(400, _error(f"min_tokens must be less than or equal to max_tokens={max_tokens}, "
                                     f"got {min_tokens}.", "BadRequestError", 400))
            return
        ignore_eos = bool(body.get("ignore_eos", defaults["ignore_eos"]))
        temperature = body.get("temperature")
        if temperature is None and args.override_generation_config:
            temperature = args.override_generation_config.get("temperature")
        try:
            temperature = float(temperature or 0.0)
        except (TypeError, ValueError):
            h._send_json(400, _error("temperature must be a number", "BadRequestError", 400))
            return
        seed = body.get("seed")
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        reasoning = None
        content_budget = max_tokens
        kwargs = body.get("chat_template_kwargs") or {}
        if chat and args.reasoning_parser and (kwargs.get("thinking") or kwargs.get("enable_thinking")):
            reasoning = textgen.tokenize(textgen.reasoning_text(questions[0]))[:max_tokens]
            content_budget = max_tokens - len(reasoning)
        results = [textgen.generate(q, p, content_budget, temperature, seed, self.faults,
                                    min_tokens=max(0, min_tokens - (len(reasoning) if reasoning else 0)),
                                    ignore_eos=ignore_eos)
                   for q, p in zip(questions, prompts)]

        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        total_prompt = sum(prompt_tokens)
        if args.enable_log_requests:
            log.info("logger.py:41", f"Received request {rid}: max_tokens={max_tokens}, "
                                     f"temperature={temperature}, stream={stream}")
        t0 = time.monotonic()
        engine.begin(total_prompt)
        ttft = None
        gen = 0
        reason = "abort"
        try:
            if not stream:
                ntok = sum(len(t) for t, _ in results) + (len(reasoning) if reasoning else 0)
                # Decode time, watching the client: vLLM aborts a request whose
                # client went away instead of finishing it for nobody.
                done_at = t0 + engine.token_pause() * max(1, ntok)
                while time.monotonic() < done_at:
                    if _client_gone(h.connection):
                        raise ConnectionResetError("client disconnected")
                    time.sleep(min(0.25, max(0.0, done_at - time.monotonic())))
                ttft = min(engine.token_delay, time.monotonic() - t0)
                gen = ntok
                engine.progress(gen)
                choices = []
                for i, (toks, fin) in enumerate(results):
                    text = "".join(toks).lstrip()
                    if chat:
                        msg = {"role": "assistant", "content": text, "tool_calls": []}
                        if reasoning is not None:
                            msg["reasoning_content"] = "".join(reasoning).lstrip()
                        choices.append({"index": i, "message": msg, "logprobs": None,
                                        "finish_reason": fin, "stop_reason": None})
                    else:
                        choices.append({"index": i, "text": text, "logprobs": None,
                                        "finish_reason": fin, "stop_reason": None})
                resp = {"id": rid, "object": "chat.completion" if chat else "text_completion",
                        "created": created, "model": model, "choices": choices,
                        "usage": {"prompt_tokens": total_prompt, "completion_tokens": gen,
                                  "total_tokens": total_prompt + gen}}
                h._send_json(200, resp)
                reason = results[0][1]
            else:
                h.send_response(200)
                h.send_header("content-type", "text/event-stream; charset=utf-8")
                h.send_header("cache-control", "no-cache")
                h.send_header("transfer-encoding", "chunked")
                h.end_headers()
                obj = "chat.completion.chunk" if chat else "text_completion"

                def emit(payload):
                    data = b"data: " + (payload if isinstance(payload, bytes)
                                        else json.dumps(payload).encode()) + b"\n\n"
                    h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    h.wfile.flush()

                def chunk(i, delta=None, text=None, fin=None):
                    c = {"index": i, "logprobs": None, "finish_reason": fin}
                    if chat:
                        c["delta"] = delta if delta is not None else {}
                    else:
                        c["text"] = text or ""
                    if fin:
                        c["stop_reason"] = None
                    return {"id": rid, "object": obj, "created": created, "model": model,
                            "choices": [c]}

                for i, (toks, fin) in enumerate(results):
                    if chat:
                        emit(chunk(i, {"role": "assistant", "content": ""}))
                        for j, t in enumerate(reasoning or []):
                            time.sleep(engine.token_pause())
                            ttft = ttft if ttft is not None else time.monotonic() - t0
                            gen += 1
                            engine.progress()
                            emit(chunk(i, {"reasoning_content": t.lstrip() if j == 0 else t}))
                    for j, t in enumerate(toks):
                        time.sleep(engine.token_pause())
                        ttft = ttft if ttft is not None else time.monotonic() - t0
                        gen += 1
                        engine.progress()
                        piece = t.lstrip() if j == 0 else t
                        emit(chunk(i, {"content": piece}) if chat else chunk(i, text=piece))
                    emit(chunk(i, {}, fin=fin) if chat else chunk(i, text="", fin=fin))
                if include_usage:
                    emit({"id": rid, "object": obj, "created": created, "model": model,
                          "choices": [], "usage": {"prompt_tokens": total_prompt,
                                                   "completion_tokens": gen,
                                                   "total_tokens": total_prompt + gen}})
                emit(b"[DONE]")
                h.wfile.write(b"0\r\n\r\n")
                h.wfile.flush()
                reason = results[0][1]
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
            log.info("async_llm.py:959", f"Aborted request(s) {rid}.")
        finally:
            e2e = time.monotonic() - t0
            served = engine.finish(total_prompt, gen, reason,
                                   ttft if ttft is not None else e2e, e2e)
        n = self.faults.get("crash_after")
        if n is not None and served >= n and not self.crashing:
            self.crashing = True
            threading.Thread(target=self.crash, args=(served,), daemon=True).start()

    def crash(self, served):
        time.sleep(0.2)
        log.error("core.py:710", "EngineCore encountered a fatal error.")
        log.error("core.py:710", "RuntimeError: CUDA error: an illegal memory access was encountered "
                                 f"(simulated crash_after={self.faults.get('crash_after')}, "
                                 f"served={served})")
        log.error("core_client.py:564", "Engine core proc EngineCore_DP0 died unexpectedly, "
                                        "shutting down client.")
        log.error("async_llm.py:480", "AsyncLLM output_handler failed.")
        log.traceback_lines([("/opt/vllm_sim/vllm/v1/engine/async_llm.py", 439, "output_handler",
                              "outputs = await engine_core.get_output_async()")],
                            "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an "
                            "issue. See stack trace (above) for the root cause.")
        _hard_exit(1)


def _hard_exit(code):
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


# ---------------------------------------------------------------------------
# startup sequence

def _fork_failure():
    log.error("core.py:718", "EngineCore failed to start.")
    frames = [
        ("/opt/vllm_sim/vllm/v1/executor/multiproc_executor.py", 94, "_init_executor",
         "self.rpc_broadcast_mq = MessageQueue(self.world_size, self.world_size)"),
        ("/opt/vllm_sim/vllm/distributed/device_communicators/shm_broadcast.py", 255, "__init__",
         "self.buffer = ShmRingBuffer(n_reader, max_chunk_bytes, max_chunks)"),
        ("/opt/vllm_sim/vllm/distributed/device_communicators/shm_broadcast.py", 190, "__del__",
         "if hasattr(self, \"shared_memory\"): self.shared_memory.close()"),
    ]
    log.traceback_lines(frames, "AttributeError: 'ShmRingBuffer' object has no attribute "
                                "'shared_memory'")
    log.error("core.py:718", "AttributeError: 'ShmRingBuffer' object has no attribute 'shared_memory'")
    raise SimExit(1)


def _simulate_load(args, faults, stop_event, delay):
    shards = 46

    def wait(t):
        if stop_event.wait(max(0.0, t)):
            log.info("launcher.py:110", "Shutting down during model loading.")
            raise SimExit(0)

    t_start = time.monotonic()
    log.info("gpu_model_runner.py:2602", fingerprint.log_text("starting_to_load", args.model))
    load_t, compile_t, graph_t = 0.6 * delay, 0.25 * delay, 0.15 * delay
    steps = [0, 12, 23, 35, 46]
    for i, done in enumerate(steps):
        if i:
            wait(load_t / (len(steps) - 1))
        pct = int(round(100 * done / shards))
        log.raw(fingerprint.log_line("loading_shards") + f": {pct:3d}% Completed | {done}/{shards} "
                f"[00:{int(time.monotonic() - t_start):02d}<?, ?it/s]")
        if faults.get("fail_start") and done >= shards // 2:
            log.error("core.py:718", "EngineCore failed to start.")
            fatal("core.py:718", "RuntimeError: CUDA error: out of memory\nCUDA kernel errors "
                  "might be asynchronously reported at some other API call, so the stacktrace "
                  "below might be incorrect.",
                  [("/opt/vllm_sim/vllm/model_executor/model_loader/default_loader.py", 269,
                    "load_weights", "model.load_weights(self.get_all_weights(model_config, model))")])
    log.info("default_loader.py:268", fingerprint.log_line("loading_weights_took") + f" {load_t:.2f} seconds")
    log.info("gpu_model_runner.py:2653", fingerprint.log_line("model_loading_took") + f" 75.33 GiB and {load_t + 0.4:.6f} seconds")
    if not args.enforce_eager:
        wait(compile_t)
        log.info("backends.py:548", f"Dynamo bytecode transform time: {compile_t * 0.4:.2f} s")
        log.info("monitor.py:34", f"torch.compile takes {compile_t:.2f} s in total")
    kv, gib = kv_cache_tokens(args)
    if kv <= 0:
        fatal("core.py:718", "ValueError: No available memory for the cache blocks. Try increasing "
                             "`gpu_memory_utilization` when initializing the engine.")
    log.info("gpu_worker.py:298", fingerprint.log_line("kv_cache_memory") % f"{gib:.2f}")
    log.info("kv_cache_utils.py:1147", f"GPU KV cache size: {kv:,} tokens, Maximum concurrency for "
                                       f"{args.max_model_len:,} tokens per request: "
                                       f"{kv / args.max_model_len:.2f}x")
    if kv < args.max_model_len:
        fatal("core.py:718",
              f"ValueError: To serve at least one request with the models's max seq len "
              f"({args.max_model_len}), the KV cache must hold {args.max_model_len} tokens, "
              f"which is larger than the available KV cache ({kv} tokens). Based on the available "
              f"memory, the estimated maximum model length is {kv}. Try increasing "
              f"`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.")
    if not args.enforce_eager:
        wait(graph_t)
        log.raw(fingerprint.log_line("capturing_cuda_graphs") + " (mixed prefill-decode, PIECEWISE): 100%|##########| 67/67")
        log.info("gpu_model_runner.py:3480", fingerprint.log_line("graph_capturing_finished") + f" {graph_t:.0f} secs, took 0.49 GiB")
    log.info("core.py:210", fingerprint.log_line("init_engine_took")
             + f" {time.monotonic() - t_start:.2f} seconds")
    return kv


def run(args, faults):
    stop_event = threading.Event()
    state = {"stopping": False, "signal": None}

    def on_signal(signum, frame):
        state["signal"] = signal.Signals(signum).name
        stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    delay = env_float("VLLM_SIM_START_DELAY", 3.0) + float(faults.get("slow_start", 0.0))
    rdv_timeout = env_float("VLLM_SIM_RENDEZVOUS_TIMEOUT", 600.0)

    log.info("model.py:547", "Resolved architecture: DeepseekV4ForCausalLM")
    log.info("model.py:1510", f"Using max model len {args.max_model_len}")
    if args.speculative_config:
        log.info("config.py:413", f"Speculative config: {json.dumps(args.speculative_config)}")
    log.info("core.py:77",
             f"Initializing a V1 LLM engine (v{fingerprint.release_version()}) with config: model='{args.model}', "
             f"speculative_config={args.speculative_config}, dtype={args.dtype}, "
             f"max_seq_len={args.max_model_len}, tensor_parallel_size={args.tensor_parallel_size}, "
             f"pipeline_parallel_size={args.pipeline_parallel_size}, "
             f"data_parallel_size={args.data_parallel_size}, quantization={args.quantization}, "
             f"enforce_eager={args.enforce_eager}, kv_cache_dtype={args.kv_cache_dtype}, "
             f"seed={args.seed}, served_model_name={','.join(args.served_model_name)}, "
             f"enable_prefix_caching={args.enable_prefix_caching}, "
             f"distributed_executor_backend={args.distributed_executor_backend}, "
             f"nnodes={args.nnodes}, node_rank={args.node_rank}")

    if os.environ.get("VLLM_WORKER_MULTIPROC_METHOD", "") == "fork":
        log.warning("multiproc_executor.py:720",
                    "VLLM_WORKER_MULTIPROC_METHOD=fork is set; workers will be forked.")
        _fork_failure()

    def on_peer_lost(peer, reason):
        if state["stopping"]:
            return
        if args.headless:
            msg = (f"RuntimeError: lost connection to head node (node rank 0) at "
                   f"{args.master_addr}:{args.master_port}: {reason}")
        else:
            msg = (f"RuntimeError: Worker proc on headless node rank {peer.rank} "
                   f"({peer.addr[0]}) died unexpectedly: {reason}")
        log.error("multiproc_executor.py:154", msg)
        log.error("multiproc_executor.py:154", "Shutting down; exiting with status 1.")
        log.traceback_lines([("/opt/vllm_sim/vllm/v1/executor/multiproc_executor.py", 154,
                              "monitor_workers", "raise RuntimeError(msg)")], msg)
        _hard_exit(1)

    if args.nnodes > 1:
        # What the pinned release logs before torch.distributed's rendezvous.
        world = args.tensor_parallel_size * args.pipeline_parallel_size
        if args.headless:
            log.info("serve.py:224", "Launching vLLM (v%s) " % fingerprint.release_version()
                     + fingerprint.log_line("headless_launch")
                     + f"with head node address {args.master_addr}:{args.master_port} for "
                       "torch.distributed process group.")
        else:
            log.info("multiproc_executor.py:167", fingerprint.log_line("head_waits_for_workers") % args.node_rank
                     + f", node_rank_within_dp=0, master_addr={args.master_addr}, "
                       f"mq_connect_ip={args.master_addr} (local), world_size={world}, "
                       f"local_world_size={max(1, world // args.nnodes)}")
    if args.nnodes > 1:
        if args.headless:
            peers = [rendezvous.worker_rendezvous(args, stop_event, rdv_timeout)]
        else:
            peers = rendezvous.head_rendezvous(args, stop_event, rdv_timeout)
        for p in peers:
            rendezvous.start_heartbeat(p, on_peer_lost)

    kv = _simulate_load(args, faults, stop_event, delay)

    if args.headless:
        log.info("launcher.py:94", f"Running in headless mode: node rank {args.node_rank} "
                                   "serves no API; waiting for the head node.")
        while not stop_event.wait(0.5):
            pass
        state["stopping"] = True
        log.info("launcher.py:110", f"Received {state['signal']}; shutting down headless node.")
        _hard_exit(0)

    engine = Engine(args, faults, kv)
    app = App(args, faults, engine)
    handler = type("SimHandler", (Handler,), {"app": app})
    host = args.host or "0.0.0.0"
    try:
        httpd = ThreadingHTTPServer((host, args.port), handler)
    except OSError as e:
        fatal("api_server.py:1850", f"OSError: [Errno {e.errno}] error while attempting to bind "
                                    f"on address ('{host}', {args.port}): {e.strerror}")
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                     daemon=True).start()
    if not args.disable_log_stats:
        threading.Thread(target=engine.stats_loop, daemon=True).start()
    log.info("entry.py:139", fingerprint.log_line("api_server_starting") % f"http://{host}:{args.port}")
    log.info("launcher.py:34", "Available routes are: /health, /ping, /version, /metrics, "
                               "/v1/models, /v1/chat/completions, /v1/completions")
    log.raw(f"INFO:     Started server process [{os.getpid()}]")
    log.raw("INFO:     Waiting for application startup.")
    log.raw("INFO:     Application startup complete.")

    while not stop_event.wait(0.5):
        pass
    state["stopping"] = True
    engine.draining = True
    # vLLM 0.33.0's shutdown: --shutdown-timeout 0 aborts what is in flight,
    # a positive value drains it for at most that long (launcher.py, core.py).
    timeout = int(args.shutdown_timeout or 0)
    mode = "abort" if timeout == 0 else "drain"
    log.info("launcher.py:256", fingerprint.log_line("shutdown_triggered"))
    log.info("launcher.py:272", fingerprint.log_line("shutdown_stopping_engine") % (mode, timeout))
    log.info("core.py:1712", f"[shutdown] EngineCore: start mode={mode} timeout={timeout}s")
    if engine.inflight and timeout:
        log.info("core.py:1730", fingerprint.log_line("shutdown_draining")
                 + f"count={engine.inflight} timeout={timeout}s")
    deadline = time.monotonic() + timeout
    while engine.inflight > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    if engine.inflight:
        log.info("core.py:1722", fingerprint.log_line("shutdown_aborting") % engine.inflight)
    log.raw("INFO:     Shutting down")
    log.raw("INFO:     Application shutdown complete.")
    log.raw(f"INFO:     Finished server process [{os.getpid()}]")
    _hard_exit(0)
