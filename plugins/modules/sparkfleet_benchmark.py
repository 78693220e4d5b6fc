#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Bounded serving benchmark of one OpenAI-compatible API (a pair's head or the endpoint)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sparkfleet_benchmark
short_description: Benchmark a vLLM head or the fleet endpoint through the OpenAI API, within a bound
description:
  - Two phases with a fixed prompt and exactly O(output_len) tokens per answer (ignore_eos)
    so runs compare. First O(single_requests) requests one at a time (single-stream decode
    tok/s, from the median time per output token); then O(concurrency) requests at a time,
    O(rounds) each (aggregate tok/s, TTFT and inter-token latency p50/p99).
  - Uses C(vllm bench serve) from O(image) when that image has it (O(tool)=auto), otherwise
    sparkfleet's own client, which computes the same figures the same way.
  - No request starts after O(max_seconds); requests still running then are cut and counted
    as failed, so the load on a serving pair ends within its bound.
  - Reads only. In check mode nothing is sent.
options:
  base_url: {description: API root as seen from this host., type: str, required: true}
  served_model_name: {description: Model name to request., type: str, required: true}
  api_key: {description: Bearer token., type: str, default: "", no_log: true}
  validate_certs: {description: Verify an https API's certificate., type: bool, default: true}
  input_len: {description: Prompt length in words (about tokens)., type: int, default: 256}
  output_len: {description: Tokens per answer., type: int, default: 128}
  single_requests: {description: Requests of the single-stream phase., type: int, default: 3}
  concurrency: {description: Requests in flight in the aggregate phase (the profile's max_num_seqs)., type: int, required: true}
  rounds: {description: Requests per slot in the aggregate phase., type: int, default: 1}
  max_seconds: {description: Bound on the whole benchmark., type: int, default: 120}
  request_timeout: {description: Seconds per request at most., type: int, default: 120}
  tool: {description: Which client runs the load., type: str, choices: [auto, client, vllm_bench], default: auto}
  image: {description: Serving image that may hold C(vllm bench serve)., type: str, default: ""}
  tokenizer_dir: {description: Checkpoint directory on this host (C(vllm bench serve) tokenizes with it)., type: path}
  progress_file: {description: JSON progress for the job_progress role., type: path}
  progress_run: {description: Run id written into O(progress_file)., type: str, default: ""}
  label: {description: What is benchmarked, for progress lines., type: str, default: benchmark}
"""

RETURN = r"""
figures: {description: The benchmark's figures (tok/s, ms, counts)., type: dict, returned: always}
tool: {description: Which client produced them and why., type: str, returned: always}
elapsed_s: {description: Wall time of the whole benchmark., type: float, returned: always}
bound_s: {description: O(max_seconds)., type: int, returned: always}
within_bound: {description: Whether the load ended within the bound., type: bool, returned: always}
"""

import json
import os
import shutil
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils import sparkfleet_benchmark as bench
from ansible.module_utils.sparkfleet_job_progress import ProgressFile


# The benchmark's containers run without GPUs, like the other one-off checks
# of the image (spark_service_check_env): vLLM's CLI needs a platform to build
# its parser and otherwise exits 1 with "Failed to infer device type", so the
# probe would always fail and the client would always be the fallback.
CHECK_ENV = ("-e", "VLLM_TARGET_DEVICE=cpu")


def image_has_vllm_bench(image):
    if not image or not shutil.which("docker"):
        return False
    probe = subprocess.run(["docker", "run", "--rm", "--network", "none"] + list(CHECK_ENV)
                           + ["--entrypoint", "vllm", image, "bench", "serve", "--help"],
                           capture_output=True, text=True, timeout=300)
    return probe.returncode == 0


def run_vllm_bench(p, deadline, progress):
    """Both phases with the image's own `vllm bench serve`; the figures from its result files."""
    out = tempfile.mkdtemp(prefix="sparkfleet-bench-")
    os.chmod(out, 0o777)
    env = dict(os.environ, OPENAI_API_KEY=p["api_key"] or "")
    results = []
    phases = (("single", 1, p["single_requests"]), ("aggregate", p["concurrency"], p["concurrency"] * p["rounds"]))
    try:
        for name, concurrency, requests in phases:
            progress.update(force=True, phase=name)
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("the bound of %d s was reached before the %s phase" % (p["max_seconds"], name))
            argv = ["docker", "run", "--rm", "--network", "host", "-e", "OPENAI_API_KEY"] + list(CHECK_ENV) + [
                    "-v", "%s:/sparkfleet-bench" % out, "-v", "%s:/model:ro" % p["tokenizer_dir"],
                    "--entrypoint", "vllm", p["image"]] + bench.vllm_bench_command(
                        p["base_url"], p["served_model_name"], "/model", p["input_len"], p["output_len"],
                        concurrency, requests, "/sparkfleet-bench", name + ".json")[1:]
            try:
                run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=left)
            except subprocess.TimeoutExpired:
                raise RuntimeError("vllm bench serve ran past the bound of %d s in the %s phase"
                                   % (p["max_seconds"], name))
            if run.returncode != 0:
                raise RuntimeError("vllm bench serve failed in the %s phase (rc %d): %s"
                                   % (name, run.returncode, run.stderr.strip()[-800:]))
            with open(os.path.join(out, name + ".json"), encoding="utf-8") as handle:
                results.append(json.load(handle))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return bench.from_vllm_bench(results[0], results[1])


def run_client(p, deadline, progress):
    prompt = bench.fixed_prompt(p["input_len"])
    total = p["single_requests"] + p["concurrency"] * p["rounds"]
    counts = {"done": 0, "failed": 0}

    def send(left):
        return bench.stream_request(p["base_url"], p["served_model_name"], p["api_key"], prompt,
                                    p["output_len"], min(left, p["request_timeout"]),
                                    validate_certs=p["validate_certs"])

    def count(outcome):
        counts["done"] += 1
        counts["failed"] += 0 if outcome["ok"] else 1
        progress.update(done=counts["done"], failed=counts["failed"], total=total)

    progress.update(force=True, phase="single", total=total)
    single, _ = bench.run_phase(send, 1, p["single_requests"], deadline, on_result=count)
    progress.update(force=True, phase="aggregate")
    aggregate, wall = bench.run_phase(send, p["concurrency"], p["concurrency"] * p["rounds"], deadline,
                                      on_result=count)
    return bench.summarize(single, aggregate, wall, p["concurrency"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            base_url=dict(type="str", required=True),
            served_model_name=dict(type="str", required=True),
            api_key=dict(type="str", default="", no_log=True),
            validate_certs=dict(type="bool", default=True),
            input_len=dict(type="int", default=256),
            output_len=dict(type="int", default=128),
            single_requests=dict(type="int", default=3),
            concurrency=dict(type="int", required=True),
            rounds=dict(type="int", default=1),
            max_seconds=dict(type="int", default=120),
            request_timeout=dict(type="int", default=120),
            tool=dict(type="str", choices=["auto", "client", "vllm_bench"], default="auto"),
            image=dict(type="str", default=""),
            tokenizer_dir=dict(type="path"),
            progress_file=dict(type="path"),
            progress_run=dict(type="str", default=""),
            label=dict(type="str", default="benchmark"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    for name in ("single_requests", "concurrency", "rounds", "output_len", "max_seconds"):
        if p[name] < 1:
            module.fail_json(msg="sparkfleet_benchmark: %s must be at least 1, got %d" % (name, p[name]))
    if p["output_len"] < 2:
        module.fail_json(msg="sparkfleet_benchmark: output_len must be at least 2 (TPOT needs two tokens)")
    if module.check_mode:
        module.exit_json(changed=False, figures={}, tool="none (check mode)", elapsed_s=0.0,
                         bound_s=p["max_seconds"], within_bound=True, msg="check mode: no load was sent")

    use_bench = p["tool"] == "vllm_bench"
    why = "sparkfleet client (tool=client)"
    if p["tool"] == "auto":
        use_bench = bool(p["tokenizer_dir"]) and image_has_vllm_bench(p["image"])
        why = ("vllm bench serve from %s" % p["image"]) if use_bench else \
            "sparkfleet client (the serving image has no `vllm bench serve`)"
    elif use_bench:
        why = "vllm bench serve from %s (tool=vllm_bench)" % p["image"]
        if not p["tokenizer_dir"]:
            module.fail_json(msg="sparkfleet_benchmark: tool=vllm_bench needs tokenizer_dir (the checkpoint)")

    progress = ProgressFile(p["progress_file"], p["progress_run"], "benchmark", p["label"],
                            bound_s=p["max_seconds"], tool=why)
    started = time.monotonic()
    deadline = started + p["max_seconds"]
    try:
        figures = run_vllm_bench(p, deadline, progress) if use_bench else run_client(p, deadline, progress)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        progress.finish(False, error=str(exc))
        module.fail_json(msg="benchmark of %s failed: %s" % (p["label"], exc))
    elapsed = round(time.monotonic() - started, 2)
    within = elapsed <= p["max_seconds"] + 1.0
    progress.finish(True, done=figures["requests"], failed=figures["failed"], total=figures["requests"],
                    figures=figures)
    module.exit_json(changed=False, figures=figures, tool=why, elapsed_s=elapsed, bound_s=p["max_seconds"],
                     within_bound=within)


if __name__ == "__main__":
    main()
