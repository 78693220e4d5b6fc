#!/usr/bin/env python3
"""A fake pair head for the endpoint and monitoring scenarios: /health 200, /metrics, chat completions
answering 42 and naming the head; X-Sleep: <s> holds a request (draining tests)."""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1]
PORT = int(sys.argv[2])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server API)
        if self.path == "/health":
            self.reply(200, {})
        elif self.path == "/metrics":
            # One of vLLM's gauges, for the monitoring scenario's Prometheus.
            body = ('# TYPE vllm:num_requests_running gauge\n'
                    'vllm:num_requests_running{engine="0",model_name="deepseek-v4-flash"} 0.0\n').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions":
            self.reply(404, {"error": "not found"})
            return
        time.sleep(float(self.headers.get("X-Sleep") or 0))
        self.reply(200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": request.get("model", ""),
            "served_by": NAME,
            "authorization": self.headers.get("Authorization", ""),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "42 (from %s)" % NAME}}],
        })

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
