"""Tests for the vLLM simulator test double (lab/vllm_sim)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIM_ROOT = os.path.join(REPO, "lab", "vllm_sim")
if SIM_ROOT not in sys.path:
    sys.path.insert(0, SIM_ROOT)

from vllm_sim import textgen  # noqa: E402
import sparkfleet_monitoring as monitoring  # noqa: E402
from vllm_sim.cli import parse_faults  # noqa: E402

VLLM = os.path.join(SIM_ROOT, "bin", "vllm")
MODEL = "deepseek-ai/DeepSeek-V4-Flash"
CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def _pinned_version():
    with open(os.path.join(REPO, "group_vars", "all", "fleet.yml"), encoding="utf-8") as handle:
        return str(yaml.safe_load(handle)["sparkfleet_vllm_version"])


VERSION = _pinned_version()
FINGERPRINT_PATH = os.path.join(REPO, "files", "vllm", "vllm-%s.fingerprint.json" % VERSION)
with open(FINGERPRINT_PATH, encoding="utf-8") as _handle:
    FINGERPRINT = json.load(_handle)
OPTIONS = {o["dest"]: o for o in FINGERPRINT["serve"]["options"]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A verbs-device directory that does not exist: NCCL finds no RDMA device
# unless a test points VLLM_SIM_DEV_INFINIBAND at one.
NO_VERBS = os.path.join(os.sep, "nonexistent", "vllm-sim", "infiniband")


def sim_env(**extra):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("VLLM_", "NCCL_", "HF_", "TRANSFORMERS_")):
            del env[k]
    env.update({"VLLM_SIM_START_DELAY": "0.5", "VLLM_SIM_TOKEN_DELAY": "0.001",
                "VLLM_SIM_RENDEZVOUS_TIMEOUT": "20", "PYTHONUNBUFFERED": "1",
                "VLLM_SIM_FINGERPRINT": FINGERPRINT_PATH, "VLLM_SIM_DEV_INFINIBAND": NO_VERBS,
                # What `docker run --gpus all` sets in the serving container.
                "NVIDIA_VISIBLE_DEVICES": "all"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(*args, env=None, timeout=20):
    return subprocess.run([sys.executable, VLLM, *args], capture_output=True, text=True,
                          env=env or sim_env(), timeout=timeout)


class Procs:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.items = []

    def start(self, name, args, env=None):
        logf = open(self.tmp_path / f"{name}.log", "w+")
        p = subprocess.Popen([sys.executable, VLLM, *args], stdout=logf,
                             stderr=subprocess.STDOUT, env=env or sim_env())
        p.logpath = self.tmp_path / f"{name}.log"
        p.logfile = logf
        self.items.append(p)
        return p

    def cleanup(self):
        for p in self.items:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            p.logfile.close()


@pytest.fixture
def procs(tmp_path, request):
    ps = Procs(tmp_path)
    request.addfinalizer(ps.cleanup)
    return ps


def log_of(p):
    return p.logpath.read_text(errors="replace")


def http(method, url, body=None, headers=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(
        {"content-type": "application/json"} if data else {}, **(headers or {})))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_health(port, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited rc={proc.returncode}:\n{log_of(proc)}")
        try:
            if http("GET", f"http://127.0.0.1:{port}/health", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server not healthy in {timeout}s:\n{log_of(proc)}")


def wait_exit(proc, timeout=15):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"process still running after {timeout}s:\n{log_of(proc)}")


def chat(port, content, **kw):
    body = {"model": kw.pop("model", "dsv4"), "messages": [{"role": "user", "content": content}]}
    body.update(kw)
    return http("POST", f"http://127.0.0.1:{port}/v1/chat/completions", body)


def metric_value(text, name, label_filter=""):
    for line in text.splitlines():
        if line.startswith(name + "{") and label_filter in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def single_node_args(port, *extra):
    return ["serve", MODEL, "--served-model-name", "dsv4", "--host", "127.0.0.1",
            "--port", str(port), *extra]


# --------------------------------------------------------------------------- CLI

_OPTION_LINE = re.compile(r"^  (-\S.*)$")
_OPTION_STRING = re.compile(r"(?:^|, )(-{1,2}[A-Za-z0-9][A-Za-z0-9_.-]*)")
_CHOICES = re.compile(r"^(-{1,2}[A-Za-z0-9][A-Za-z0-9_.-]*) \{([^{}]*)\}")


def help_options(text):
    """{option string: choices shown or None} from argparse option lines."""
    shown = {}
    for line in text.splitlines():
        match = _OPTION_LINE.match(line)
        if not match:
            continue
        invocation = re.split(r"\s{2,}", match.group(1).strip(), maxsplit=1)[0]
        for part in re.split(r", (?=-)", invocation):
            string = _OPTION_STRING.match(part).group(1)
            assert string not in shown, "%s listed twice" % string
            choices = _CHOICES.match(part)
            shown[string] = choices.group(2).split(",") if choices else None
    return shown


def test_version_is_the_fingerprints_release():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == FINGERPRINT["release"]["version"] == VERSION


def test_cli_surface_equals_the_fingerprint():
    r = run_cli("serve", "--help=all")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(FINGERPRINT["serve"]["usage"] + "\n")
    shown = help_options(r.stdout)
    expected = {}
    for option in FINGERPRINT["serve"]["options"]:
        visible_negations = [n for n in option["negations"] if n not in option["hidden_flags"]]
        for string in option["flags"] + visible_negations:
            expected[string] = option
    assert set(shown) == set(expected)
    for option in FINGERPRINT["serve"]["options"]:
        for string in option["hidden_flags"]:
            assert string not in shown, string
        if option["flags"]:
            want = None if option["choices"] is None else [str(c) for c in option["choices"]]
            assert shown[option["flags"][0]] == want, option["dest"]
    for title in FINGERPRINT["serve"]["groups"]:
        assert "\n%s:\n" % title in r.stdout, title


def test_plain_help_lists_groups_and_no_options():
    r = run_cli("serve", "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: vllm serve [model_tag] [options]\n")
    assert FINGERPRINT["serve"]["usage"] in r.stdout and "Config Groups:" in r.stdout
    assert "--help=all" in r.stdout and VERSION in r.stdout
    assert not [line for line in r.stdout.splitlines() if re.match(r"^\s+-", line)]
    groups = r.stdout.split("Config Groups:\n", 1)[1]
    for title in FINGERPRINT["serve"]["groups"]:
        assert "\n  %s\n" % title in "\n" + groups, title


def test_help_for_one_group_and_for_a_keyword():
    r = run_cli("serve", "--help=cacheconfig")
    assert r.returncode == 0 and r.stdout.startswith("CacheConfig:\n")
    assert set(help_options(r.stdout)) == {s for o in FINGERPRINT["serve"]["options"] if o["group"] == "CacheConfig"
                                           for s in o["flags"]}
    r = run_cli("serve", "--help=max_num")
    assert r.returncode == 0 and "Arguments matching 'max-num':" in r.stdout
    assert set(help_options(r.stdout)) == {s for o in FINGERPRINT["serve"]["options"] for s in o["flags"]
                                           if "max-num" in s}
    r = run_cli("serve", "--help=no-such-thing")
    assert r.returncode == 0 and "No group or arguments matching 'no-such-thing'" in r.stdout


@pytest.mark.parametrize("argv, unrecognized", [
    (["--swap-space", "4"], "--swap-space 4"),
    (["--max-num-seqz", "8"], "--max-num-seqz 8"),
    (["--enable-prefix-caching", "1"], "1"),
    (["--foo"], "--foo"),
])
def test_unknown_arguments_exit_2_with_the_top_level_usage(argv, unrecognized):
    r = run_cli("serve", MODEL, *argv)
    assert r.returncode == 2
    assert r.stderr.startswith("usage: vllm [-h] [-v]")
    assert "{chat,complete,serve," in r.stderr
    assert r.stderr.rstrip().endswith("vllm: error: unrecognized arguments: %s" % unrecognized)


def test_bad_choice_exits_2_with_the_serve_usage():
    assert OPTIONS["moe_backend"]["choices"] and "nope" not in OPTIONS["moe_backend"]["choices"]
    r = run_cli("serve", MODEL, "--moe-backend", "nope")
    assert r.returncode == 2
    assert r.stderr.startswith("usage: vllm serve [model_tag] [options]\n")
    assert "vllm serve: error: argument --moe-backend: invalid choice: 'nope' (choose from 'aiter'," in r.stderr
    # the value is lower-cased and dashes become underscores before the choice is checked
    assert run_cli("serve", MODEL, "--moe-backend", "FlashInfer-B12X", "--headless").returncode == 1


def test_kv_cache_dtype_is_not_an_argparse_choice():
    option = OPTIONS["kv_cache_dtype"]
    assert option["choices"] is None
    if option.get("known_values"):
        # refused where the real CacheConfig refuses it: building the engine config (exit 1)
        r = run_cli("serve", MODEL, "--kv-cache-dtype", "fp9")
        assert r.returncode == 1 and "Invalid kv_cache_dtype: 'fp9'" in r.stderr
    else:
        r = run_cli("serve", MODEL, "--kv-cache-dtype", "fp9", "--headless")
        assert r.returncode == 1 and "--headless is only valid" in r.stderr
    assert "invalid choice" not in r.stderr
    r = run_cli("serve", MODEL, "--kv-cache-dtype", "nvfp4_ds_mla", "--headless")
    assert r.returncode == 1 and "--headless is only valid" in r.stderr


def test_bad_values_exit_2_in_argparse_wording():
    r = run_cli("serve", MODEL, "--max-model-len", "abc")
    assert r.returncode == 2
    assert "argument --max-model-len: invalid human_readable_int_or_auto value: 'abc'" in r.stderr
    r = run_cli("serve", MODEL, "--gpu-memory-utilization", "x")
    assert r.returncode == 2
    with open(FINGERPRINT_PATH, encoding="utf-8") as handle:
        option = next(o for o in json.load(handle)["serve"]["options"] if o["dest"] == "gpu_memory_utilization")
    # 0.33.0 types it float (argparse's own words); 0.34.0 float | None, converted by
    # arg_utils.optional_type -> parse_type, which words the refusal itself.
    wording = ("Value x cannot be converted to <class 'float'>." if option["optional"]
               else "invalid float value: 'x'")
    assert "argument --gpu-memory-utilization/--device-memory-utilization: %s" % wording in r.stderr


def test_bad_gpu_memory_utilization_fails_when_the_config_is_built():
    r = run_cli("serve", MODEL, "--gpu-memory-utilization", "1.5")
    assert r.returncode == 1
    assert "validation error for CacheConfig" in r.stderr and "gpu_memory_utilization" in r.stderr


def test_compilation_config_is_validated_by_argparse():
    r = run_cli("serve", MODEL, "--compilation-config", '{"cudagraph_mod":"FULL"}')
    assert r.returncode == 2
    assert ("vllm serve: error: argument --compilation-config/-cc: 1 validation error for CompilationConfig\n"
            "cudagraph_mod\n  Unexpected keyword argument") in r.stderr
    r = run_cli("serve", MODEL, "-cc", '{"cudagraph_mode":"FULLX"}')
    assert r.returncode == 1 and r.stderr.rstrip().endswith("KeyError: 'FULLX'") and r.stdout == ""


def test_speculative_config_is_json_at_parse_and_checked_with_the_engine_config():
    bad = "{method:mtp}"
    r = run_cli("serve", MODEL, "--speculative-config", bad)
    assert r.returncode == 2
    assert "argument --speculative-config/-sc: Value %s cannot be converted to <function loads" % bad in r.stderr
    r = run_cli("serve", MODEL, "--speculative-config", '{"method":"nope","num_speculative_tokens":2}')
    assert r.returncode == 1
    assert "validation error for SpeculativeConfig" in r.stderr
    assert "method" in r.stderr and "input_value='nope'" in r.stderr
    r = run_cli("serve", MODEL, "--speculative-config.method", "mtp", "--speculative-config.nope", "1")
    assert r.returncode == 1 and "\nnope\n  Unexpected keyword argument" in r.stderr


@pytest.mark.parametrize("argv, dest, value", [
    (["--max_model_len", "8192"], "max_model_len", 8192),
    (["--max-model-len", "auto"], "max_model_len", -1),
    (["--max-model-len", "200k"], "max_model_len", 200000),
    (["--max-model-len=1M"], "max_model_len", 1048576),
    (["--no-enable-prefix-caching"], "enable_prefix_caching", False),
    (["--disable-prefix-caching"], "enable_prefix_caching", False),
    (["--enable-prefix-caching"], "enable_prefix_caching", True),
    (["--speculative-config.method", "mtp", "--speculative-config.num_speculative_tokens", "2"],
     "speculative_config", {"method": "mtp", "num_speculative_tokens": 2}),
    (["--compilation_config.cudagraph_capture_sizes+", "1,2"], "compilation_config",
     {"cudagraph_capture_sizes": ["1", "2"]}),
    (["--api-key", "a", "b"], "api_key", ["a", "b"]),
])
def test_accepted_spellings(argv, dest, value):
    from vllm_sim import cli
    old = os.environ.get("VLLM_SIM_FINGERPRINT")
    os.environ["VLLM_SIM_FINGERPRINT"] = FINGERPRINT_PATH
    try:
        args, _ = cli.parse(["serve", MODEL] + argv)
    finally:
        if old is None:
            del os.environ["VLLM_SIM_FINGERPRINT"]
        else:
            os.environ["VLLM_SIM_FINGERPRINT"] = old
    assert getattr(args, dest) == value and dest in args.explicit


def test_accepted_spellings_reach_engine_start():
    # --headless on rank 0 fails after parsing: proves the whole argv parsed (exit 1, not 2)
    r = run_cli("serve", MODEL, "--max_model_len", "8192", "--no-enable-prefix-caching",
                "--speculative-config.method", "mtp", "--speculative-config.num_speculative_tokens", "2",
                "--max-model-len", "200k", "--headless")
    assert r.returncode == 1 and "--headless is only valid on node ranks > 0" in r.stderr


def test_model_option_moves_to_the_positional():
    r = run_cli("serve", "--model", MODEL, "--headless")
    assert r.returncode == 1 and "'model': '%s'" % MODEL in r.stdout
    r = run_cli("serve", "--served-model-name", "x")
    assert r.returncode == 1 and "should be provided as the first positional argument" in r.stderr


def test_unknown_vllm_env_is_a_warning_unless_validation_is_strict():
    env = sim_env(VLLM_NOT_A_REAL_KNOB="1", VLLM_WORKER_MULTIPROC_METHOD="spawn")
    r = run_cli("serve", MODEL, "--headless", env=env)
    assert r.returncode == 1  # --headless on rank 0: the environment was checked before
    assert "WARNING" in r.stdout and "Unknown vLLM environment variable detected: VLLM_NOT_A_REAL_KNOB" in r.stdout
    assert "VLLM_SIM_" not in r.stdout.split("non-default args", 1)[1]
    assert "VLLM_WORKER_MULTIPROC_METHOD" not in r.stdout
    r = run_cli("serve", MODEL, "--fail-on-environ-validation", env=env)
    assert r.returncode == 1
    assert "ValueError: Unknown vLLM environment variable detected: VLLM_NOT_A_REAL_KNOB" in r.stderr


def test_broken_json_exits_2_naming_flag():
    bad = "{method:deepseek_mtp,num_speculative_tokens:2}"
    r = run_cli("serve", MODEL, "--speculative-config", bad)
    assert r.returncode == 2
    assert f"argument --speculative-config/-sc: Value {bad} cannot be converted" in r.stderr


def test_headless_on_rank0_fails():
    r = run_cli("serve", MODEL, "--headless")
    assert r.returncode == 1
    assert "--headless is only valid on node ranks > 0" in r.stderr


def test_rank1_without_headless_fails():
    r = run_cli("serve", MODEL, "-tp", "2", "--nnodes", "2", "--node-rank", "1",
                "--master-addr", "127.0.0.1")
    assert r.returncode == 1
    assert "RuntimeError: node rank 1 started without --headless" in r.stderr


def test_nnodes_requires_master_addr():
    r = run_cli("serve", MODEL, "-tp", "2", "--nnodes", "2")
    assert r.returncode == 1 and "--master-addr" in r.stderr


def test_fork_multiproc_method_fails():
    r = run_cli("serve", MODEL, env=sim_env(VLLM_WORKER_MULTIPROC_METHOD="fork"))
    assert r.returncode == 1
    assert r.stderr.strip().endswith(
        "AttributeError: 'ShmRingBuffer' object has no attribute 'shared_memory'")


def test_unknown_fault_fails():
    r = run_cli("serve", MODEL, env=sim_env(VLLM_SIM_FAULT="bogus"))
    assert r.returncode == 1 and "bogus" in r.stderr


def test_fail_start_fault():
    r = run_cli("serve", MODEL, "--port", str(free_port()), env=sim_env(VLLM_SIM_FAULT="fail_start"))
    assert r.returncode == 1 and "CUDA error: out of memory" in r.stderr


# --------------------------------------------------------------------------- textgen

def test_textgen_known_answers_and_clean_output():
    def gen(q, **kw):
        toks, fin = textgen.generate(q, q, kw.pop("max_tokens", 200), **kw)
        return "".join(toks), fin
    assert "42" in gen("What is 17 + 25?")[0]
    assert "Paris" in gen("What is the capital of France?")[0]
    assert gen("Reply with the word OK")[0] == "OK"
    text, fin = gen("Tell me about clusters.")
    assert fin == "stop" and text == gen("Tell me about clusters.")[0]
    assert not CJK.search(text) and "<" not in text
    assert gen("Tell me about clusters.", max_tokens=3)[1] == "length"
    assert CJK.search(gen("hi", faults={"garbled": True})[0])
    assert "<tool_call>" in gen("hi", faults={"tool_xml": True})[0]
    assert gen("hi", faults={"repeat": True}, max_tokens=50)[1] == "length"
    assert parse_faults("garbled,crash_after=3,slow_start=1.5,stall_once=2") == {
        "garbled": True, "crash_after": 3, "slow_start": 1.5, "stall_once": 2.0}
    with pytest.raises(ValueError, match="stall_once=0 must be seconds above 0"):
        parse_faults("stall_once=0")


# --------------------------------------------------------------------------- servers

def test_two_node_cluster(procs):
    http_port, master_port = free_port(), free_port()
    common = ["serve", MODEL, "--served-model-name", "dsv4", "-tp", "2", "--nnodes", "2",
              "--master-addr", "127.0.0.1", "--master-port", str(master_port),
              "--kv-cache-dtype", "fp8", "--gpu-memory-utilization", "0.85",
              "--max-model-len", "32768",
              "--speculative-config", '{"method":"deepseek_mtp","num_speculative_tokens":2}']
    worker = procs.start("worker", common + ["--node-rank", "1", "--headless"])
    time.sleep(0.3)
    head = procs.start("head", common + ["--host", "127.0.0.1", "--port", str(http_port)])
    wait_health(http_port, head)
    base = f"http://127.0.0.1:{http_port}"

    code, body = http("GET", base + "/v1/models")
    models = json.loads(body)
    assert code == 200 and models["data"][0]["id"] == "dsv4"
    assert models["data"][0]["max_model_len"] == 32768 and models["data"][0]["root"] == MODEL

    code, m0 = http("GET", base + "/metrics")
    m0 = m0.decode()
    gen0 = metric_value(m0, "vllm:generation_tokens_total")

    answers = []
    for _ in range(2):
        code, body = chat(http_port, "What is 17 + 25?", temperature=0)
        assert code == 200
        resp = json.loads(body)
        assert resp["object"] == "chat.completion" and resp["choices"][0]["finish_reason"] == "stop"
        assert resp["usage"]["completion_tokens"] > 0
        answers.append(resp["choices"][0]["message"]["content"])
    assert answers[0] == answers[1] and "42" in answers[0]

    code, body = chat(http_port, "hi", model="nope")
    assert code == 404 and json.loads(body)["error"]["type"] == "NotFoundError"

    code, body = chat(http_port, "Say OK", stream=True)
    text = body.decode()
    assert code == 200 and text.rstrip().endswith("data: [DONE]")
    chunks = [json.loads(line[6:]) for line in text.splitlines()
              if line.startswith("data: {")]
    assert len(chunks) >= 3 and chunks[0]["object"] == "chat.completion.chunk"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert content == "OK"

    code, m1 = http("GET", base + "/metrics")
    m1 = m1.decode()
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
                 "vllm:request_success_total", "vllm:e2e_request_latency_seconds_bucket",
                 "vllm:time_to_first_token_seconds_count", "vllm:spec_decode_num_drafts_total",
                 "vllm:spec_decode_num_accepted_tokens_total", 'model_name="dsv4"',
                 "# TYPE vllm:e2e_request_latency_seconds histogram"):
        assert name in m1, name
    assert metric_value(m1, "vllm:generation_tokens_total") > gen0
    # Every family the simulator exposes is one the pinned release registers
    # (its fingerprint's metrics), and so is every family the alert rules and
    # the dashboard read (tests/unit/test_monitoring.py).
    with open(FINGERPRINT_PATH, encoding="utf-8") as handle:
        release_metrics = set(json.load(handle)["metrics"])
    exposed = set(monitoring.vllm_metric_names(" ".join(re.findall(r"^# TYPE (\S+)", m1, re.M))))
    assert exposed >= {"vllm:inter_token_latency_seconds", "vllm:request_queue_time_seconds"}
    assert exposed <= release_metrics, exposed - release_metrics
    assert metric_value(m1, "vllm:inter_token_latency_seconds_count") > 0
    assert metric_value(m1, "vllm:request_success_total", 'finished_reason="stop"') >= 3
    assert metric_value(m1, "vllm:spec_decode_num_accepted_tokens_total") > 0

    assert "GPU KV cache size: 360,858 tokens, Maximum concurrency for 32,768 tokens" in log_of(head)
    for log in (log_of(head), log_of(worker)):
        assert "method `deepseek_mtp` is deprecated and replaced with mtp." in log
    assert "Running in headless mode" in log_of(worker)

    worker.kill()
    assert wait_exit(head) != 0
    assert "died unexpectedly" in log_of(head)


def test_head_fails_when_master_port_taken(procs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        head = procs.start("head", ["serve", MODEL, "-tp", "2", "--nnodes", "2",
                                    "--master-addr", "127.0.0.1", "--master-port", str(port),
                                    "--port", str(free_port())])
        assert wait_exit(head) == 1
    assert "EADDRINUSE" in log_of(head) and f"port: {port}" in log_of(head)


def test_head_times_out_without_worker(procs):
    head = procs.start("head", ["serve", MODEL, "-tp", "2", "--nnodes", "2",
                                "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                                "--port", str(free_port())],
                       env=sim_env(VLLM_SIM_RENDEZVOUS_TIMEOUT="1"))
    assert wait_exit(head) == 1
    assert "timed out waiting for 1 headless node(s)" in log_of(head)


def test_garbled_fault_and_api_key(procs):
    port = free_port()
    head = procs.start("head", single_node_args(port, "--api-key", "sekrit"),
                       env=sim_env(VLLM_SIM_FAULT="garbled"))
    wait_health(port, head)
    assert chat(port, "Tell me about the weather.")[0] == 401
    code, body = http("POST", f"http://127.0.0.1:{port}/v1/chat/completions",
                      {"model": "dsv4", "messages": [{"role": "user", "content": "Tell me a story"}]},
                      headers={"Authorization": "Bearer sekrit"})
    assert code == 200
    assert CJK.search(json.loads(body)["choices"][0]["message"]["content"])


def test_crash_after_one_request(procs):
    port = free_port()
    head = procs.start("head", single_node_args(port), env=sim_env(VLLM_SIM_FAULT="crash_after=1"))
    wait_health(port, head)
    code, body = http("POST", f"http://127.0.0.1:{port}/v1/completions",
                      {"model": "dsv4", "prompt": "What is the capital of France?", "max_tokens": 20})
    assert code == 200 and "Paris" in json.loads(body)["choices"][0]["text"]
    assert wait_exit(head) == 1
    assert "EngineDeadError" in log_of(head)


def test_sigterm_drains_and_exits_zero(procs):
    port = free_port()
    head = procs.start("head", single_node_args(port), env=sim_env(VLLM_API_KEY="from-env"))
    wait_health(port, head)
    base = "http://127.0.0.1:%d" % port
    assert json.loads(http("GET", base + "/version")[1]) == {"version": VERSION}
    # without --api-key, VLLM_API_KEY is the key (as in vLLM)
    assert http("GET", base + "/v1/models")[0] == 401
    assert http("GET", base + "/v1/models", headers={"Authorization": "Bearer from-env"})[0] == 200
    assert "Unknown vLLM environment variable" not in log_of(head)
    head.send_signal(signal.SIGTERM)
    assert wait_exit(head) == 0


def test_missing_local_checkpoint_fails_like_vllm(tmp_path):
    r = run_cli("serve", str(tmp_path / "nothing"))
    assert r.returncode == 1
    assert "HFValidationError: Repo id must be in the form" in r.stderr


def test_missing_shard_fails_at_load(tmp_path):
    sys.path.insert(0, os.path.join(SIM_ROOT, ".."))
    import sparkfleet_lab_lib as lab
    lab.write_fixture_checkpoint(str(tmp_path / "ckpt"), (64, 64))
    os.unlink(str(tmp_path / "ckpt" / "model-00002-of-00002.safetensors"))
    r = run_cli("serve", str(tmp_path / "ckpt"))
    assert r.returncode == 1
    assert "FileNotFoundError: [Errno 2] No such file or directory" in r.stderr
    assert "model-00002-of-00002.safetensors" in r.stderr


# ------------------------------------------------------- long answers, shutdown

def test_request_fields_the_simulator_honours_are_the_releases():
    """min_tokens / ignore_eos / max_tokens defaults come from the pinned release's request classes."""
    from vllm_sim import fingerprint
    assert fingerprint.request_defaults("chat") == {
        "max_tokens": None, "max_completion_tokens": None, "min_tokens": 0, "ignore_eos": False, "stream": False}
    assert fingerprint.request_defaults("completion")["max_tokens"] == 16


def test_textgen_min_tokens_and_ignore_eos():
    short, fin = textgen.generate("What is 17 + 25?", "p", 5000)
    assert fin == "stop" and len(short) < 30
    forced, fin = textgen.generate("What is 17 + 25?", "p", 5000, ignore_eos=True)
    assert fin == "length" and len(forced) == 5000 and forced[:len(short)] == short
    longer, fin = textgen.generate("What is 17 + 25?", "p", 5000, min_tokens=700)
    assert fin == "stop" and 700 <= len(longer) < 5000 and longer[-1].endswith(".")
    capped, fin = textgen.generate("What is 17 + 25?", "p", 300, min_tokens=300)
    assert len(capped) <= 300


def test_long_answers_on_request_like_vllm(procs):
    port = free_port()
    head = procs.start("head", single_node_args(
        port, "--max-model-len", "8192", "--generation-config", "vllm",
        "--override-generation-config", '{"max_new_tokens": 3000}'))
    wait_health(port, head)
    code, body = chat(port, "What is 17 + 25?", max_tokens=2500, ignore_eos=True)
    usage = json.loads(body)["usage"]
    assert code == 200 and usage["completion_tokens"] == 2500
    assert json.loads(body)["choices"][0]["finish_reason"] == "length"
    code, body = chat(port, "What is 17 + 25?", min_tokens=400, max_tokens=2000)
    assert code == 200 and 400 <= json.loads(body)["usage"]["completion_tokens"] < 2000
    # the server-wide max_new_tokens caps a request that asks for more
    code, body = chat(port, "What is 17 + 25?", max_tokens=6000, ignore_eos=True, stream=True,
                      stream_options={"include_usage": True})
    events = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["usage"]["completion_tokens"] == 3000
    code, body = chat(port, "hi", min_tokens=50, max_tokens=10)
    assert code == 400 and "min_tokens must be less than or equal to max_tokens=10, got 50." in body.decode()
    code, body = chat(port, "hi", min_tokens=-1)
    assert code == 400 and "min_tokens must be greater than or equal to 0" in body.decode()


def _long_stream(port, tokens, out):
    """Stream a long answer in a thread; out gets (status, completion tokens, saw [DONE], error)."""
    import threading

    def run():
        try:
            code, body = chat(port, "Tell me a long story.", max_tokens=tokens, ignore_eos=True,
                              stream=True, stream_options={"include_usage": True})
            events = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
            usage = json.loads(events[-2]).get("usage", {}) if len(events) > 1 else {}
            out.append((code, usage.get("completion_tokens"), events[-1:] == ["[DONE]"], None))
        except Exception as exc:  # the stream cut mid-way
            out.append((None, None, False, exc))
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("timeout, tokens, whole, line", [
    # ~3 s of answer, 30 s to drain: it arrives whole
    (30, 1500, True, "[shutdown] EngineCore: draining in-flight requests count=1 timeout=30s"),
    # ~10 s of answer, 1 s to drain: vLLM aborts it
    (1, 5000, False, "[shutdown] EngineCore: aborting in-flight requests count=1"),
])
def test_sigterm_drains_within_the_shutdown_timeout_then_aborts(procs, timeout, tokens, whole, line):
    port = free_port()
    head = procs.start("head", single_node_args(port, "--shutdown-timeout", str(timeout)),
                       env=sim_env(VLLM_SIM_TOKEN_DELAY="0.002"))
    wait_health(port, head)
    out = []
    thread = _long_stream(port, tokens, out)
    time.sleep(0.5)
    head.send_signal(signal.SIGTERM)
    thread.join(20)
    assert wait_exit(head) == 0
    assert len(out) == 1 and out[0][2] is whole, out
    if whole:
        assert out == [(200, tokens, True, None)]
    assert "[shutdown] API server: stopping engine client mode=drain timeout=%ds" % timeout in log_of(head)
    assert line in log_of(head)


def test_start_up_phases_are_the_releases_log_lines(procs):
    http_port, master_port = free_port(), free_port()
    common = ["serve", MODEL, "-tp", "2", "--nnodes", "2", "--master-addr", "127.0.0.1",
              "--master-port", str(master_port), "--max-model-len", "32768"]
    worker = procs.start("worker", common + ["--node-rank", "1", "--headless"])
    head = procs.start("head", common + ["--host", "127.0.0.1", "--port", str(http_port)])
    wait_health(http_port, head)
    lines = FINGERPRINT["log_lines"]
    head_log, worker_log = log_of(head), log_of(worker)
    for key in ("head_waits_for_workers", "starting_to_load", "loading_shards", "loading_weights_took",
                "model_loading_took", "kv_cache_memory", "capturing_cuda_graphs",
                "graph_capturing_finished", "init_engine_took", "api_server_starting"):
        text = lines[key]["text"].split("%")[0]
        assert text in head_log, key
    assert lines["headless_launch"]["text"] in worker_log
    # The progress report reads these logs: line by line, the head goes
    # through every phase in order.
    sys.path.insert(0, os.path.join(REPO, "plugins", "module_utils"))
    import sparkfleet_progress as progress
    seen = []
    text = ""
    for line in head_log.splitlines(keepends=True):
        text += line
        phase, detail = progress.phase_of(text, lines)
        if not seen or seen[-1][0] != phase:
            seen.append((phase, detail))
    phases = [phase for phase, _ in seen]
    assert phases == sorted(phases, key=progress.PHASE_ORDER.index), phases
    for phase in ("rendezvous", "loading", "profiling", "kv_cache_ready", "cuda_graphs", "engine_ready",
                  "api_starting"):
        assert phase in phases, phases
    assert progress.phase_of(worker_log, lines)[0] == "engine_ready"
    assert any(re.match(r"\d+/46 shards, \d+%", progress.phase_of(head_log[:head_log.index(
        lines["loading_weights_took"]["text"])], lines)[1]) for _ in [0])


def test_a_client_that_goes_away_aborts_its_non_streamed_answer(procs):
    """vLLM aborts a request whose client disconnected; it is not decoded for nobody (and does
    not hold a shutdown's drain)."""
    port = free_port()
    head = procs.start("head", single_node_args(port, "--shutdown-timeout", "60"),
                       env=sim_env(VLLM_SIM_TOKEN_DELAY="0.01"))
    wait_health(port, head)
    body = json.dumps({"model": "dsv4", "max_tokens": 3000, "ignore_eos": True,
                       "messages": [{"role": "user", "content": "a long one"}]}).encode()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(1)
    time.sleep(1)
    started = time.monotonic()
    head.send_signal(signal.SIGTERM)
    assert wait_exit(head, timeout=20) == 0
    assert time.monotonic() - started < 10, log_of(head)
    assert "Aborted request" in log_of(head)


# ------------------------------------------------- NCCL's network (the real road)

NCCL_INFO = re.compile(r"^[^\s:]+:\d+:\d+ \[0\] NCCL INFO (.*)$", re.M)
NCCL_WARN = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] [^\s:]+:\d+:\d+ \[0\] (\S+) NCCL WARN (.*)$", re.M)


def verbs_dir(tmp_path):
    """A stand-in /dev/infiniband with a Spark's verbs devices."""
    path = tmp_path / "infiniband"
    path.mkdir()
    for name in ("uverbs0", "uverbs1", "rdma_cm"):
        (path / name).write_text("")
    return str(path)


def start_pair(procs, head_env, worker_env, *extra):
    http_port, master_port = free_port(), free_port()
    common = ["serve", MODEL, "--served-model-name", "dsv4", "-tp", "2", "--nnodes", "2",
              "--master-addr", "127.0.0.1", "--master-port", str(master_port), *extra]
    worker = procs.start("worker", common + ["--node-rank", "1", "--headless"], env=worker_env)
    head = procs.start("head", common + ["--host", "127.0.0.1", "--port", str(http_port)], env=head_env)
    return head, worker, http_port


def timed_answer(port, tokens):
    started = time.monotonic()
    code, body = chat(port, "Tell me a story.", max_tokens=tokens, ignore_eos=True)
    assert code == 200 and json.loads(body)["usage"]["completion_tokens"] == tokens
    return time.monotonic() - started


def nccl_net_of(text):
    sys.path.insert(0, os.path.join(REPO, "plugins", "module_utils"))
    import sparkfleet_nccl_net
    return sparkfleet_nccl_net.nccl_net(text)


def test_nccl_net_ib_without_a_verbs_device_fails_both_ranks_like_vllm(procs):
    """The fabric role's NCCL_NET=IB in a container without --device /dev/infiniband."""
    fabric = {"NCCL_NET": "IB", "NCCL_IB_HCA": "rocep1s0f1", "NCCL_SOCKET_IFNAME": "lo"}
    head, worker, _ = start_pair(procs, sim_env(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET", **fabric),
                                 sim_env(NCCL_DEBUG="WARN", **fabric))
    assert wait_exit(worker) == 1 and wait_exit(head) == 1
    head_log, worker_log = log_of(head), log_of(worker)
    # INFO shows why; WARN only the failure (with NCCL's blank line and timestamp before it)
    info = NCCL_INFO.findall(head_log)
    assert info[:4] == ["NCCL_IB_HCA set to rocep1s0f1", "NET/IB : No device found.",
                        "NET/IB : Using [RO]; OOB lo:127.0.0.1<0>", "Failed to initialize NET plugin IB"]
    assert not any("Using network" in line for line in info)
    assert NCCL_INFO.findall(worker_log) == []
    for text in (head_log, worker_log):
        assert NCCL_WARN.findall(text) == [("plugin/net.cc:379", "Failed to initialize any NET plugin")]
        assert "\n\n[" in text
        assert "ERROR" in text and "[multiproc_executor.py:1057] WorkerProc failed to start." in text
        # vLLM 0.33.0's TP group creates its NCCL communicator with pynccl
        assert "RuntimeError: NCCL error: invalid usage (run with NCCL_DEBUG=WARN for details)\n" \
               "Last error:\nFailed to initialize any NET plugin" in text
        assert "pynccl.py\", line 180, in _init_comm" in text
        assert nccl_net_of(text) is None
    assert head_log.index("NET/IB : No device found.") < head_log.index("NCCL WARN Failed to initialize")
    assert "Starting to load model" not in head_log


def test_nccl_net_failure_through_torch_with_split_group(procs):
    """With VLLM_DISTRIBUTED_USE_SPLIT_GROUP=1 torch's eager communicator fails first (the measured wording)."""
    env = sim_env(NCCL_NET="IB", NCCL_DEBUG="WARN", NCCL_SOCKET_IFNAME="lo", VLLM_DISTRIBUTED_USE_SPLIT_GROUP="1")
    head, worker, _ = start_pair(procs, env, env)
    assert wait_exit(worker) == 1 and wait_exit(head) == 1
    assert "torch.distributed.DistBackendError: NCCL error in: /pytorch/torch/csrc/distributed/c10d/" \
           "NCCLUtils.cpp:93, invalid usage (run with NCCL_DEBUG=WARN for details), NCCL version 2.28.9\n" \
           "ncclInvalidUsage: This usually reflects invalid usage of NCCL library.\nLast error:\n" \
           "Failed to initialize any NET plugin" in log_of(head)


def test_nccl_net_ib_with_verbs_devices_serves_at_full_speed(procs, tmp_path):
    env = sim_env(NCCL_NET="IB", NCCL_IB_HCA="rocep1s0f1,roceP2p1s0f1", NCCL_SOCKET_IFNAME="lo",
                  NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET", VLLM_SIM_DEV_INFINIBAND=verbs_dir(tmp_path),
                  VLLM_SIM_TOKEN_DELAY="0.02")
    head, worker, port = start_pair(procs, env, env)
    wait_health(port, head)
    for text in (log_of(head), log_of(worker)):
        info = NCCL_INFO.findall(text)
        assert "NET/IB : Using [0]rocep1s0f1:1/RoCE [1]roceP2p1s0f1:1/RoCE [RO]; OOB lo:127.0.0.1<0>" in info
        assert info[-1] == "Using network IB"
        assert "NET/IB : No device found." not in info and not any("NET/Socket" in line for line in info)
        assert NCCL_WARN.findall(text) == []
        assert nccl_net_of(text) == "IB"
    # 40 tokens at 0.02 s: 0.8 s, well below the sockets road's 2.4 s
    assert timed_answer(port, 40) < 2.0


def test_nccl_net_falls_back_to_sockets_without_nccl_net_and_decodes_slower(procs):
    head, worker, port = start_pair(
        procs, sim_env(NCCL_SOCKET_IFNAME="lo", NCCL_DEBUG="INFO", VLLM_SIM_TOKEN_DELAY="0.02"),
        # NCCL_DEBUG=WARN: a road without failure prints nothing
        sim_env(NCCL_SOCKET_IFNAME="lo", NCCL_DEBUG="WARN", VLLM_SIM_TOKEN_DELAY="0.02"))
    wait_health(port, head)
    info = NCCL_INFO.findall(log_of(head))
    assert info == ["NET/IB : No device found.", "NET/IB : Using [RO]; OOB lo:127.0.0.1<0>",
                    "Failed to initialize NET plugin IB", "NET/Socket : Using [0]lo:127.0.0.1<0>",
                    "Initialized NET plugin Socket", "Assigned NET plugin Socket to comm", "Using network Socket"]
    assert nccl_net_of(log_of(head)) == "Socket"
    assert "NCCL" not in log_of(worker) and nccl_net_of(log_of(worker)) is None
    # sockets: 3x the token delay (40 x 0.02 x 3 = 2.4 s)
    assert timed_answer(port, 40) >= 2.3


def test_nccl_debug_levels_and_subsystems(tmp_path):
    from vllm_sim import nccl
    fallback = nccl.road({"NCCL_SOCKET_IFNAME": "lo"}, str(tmp_path / "none"))
    assert fallback.net == "Socket"
    failed = nccl.road({"NCCL_NET": "IB", "NCCL_SOCKET_IFNAME": "lo"}, str(tmp_path / "none"))
    assert failed.net is None and nccl.last_error(failed) == "Failed to initialize any NET plugin"

    def shown(road, **env):
        return nccl.visible_lines(road, env, host="spark-a1.lan", pid=7, tid=9, now=0)

    assert shown(fallback) == shown(fallback, NCCL_DEBUG="VERSION") == shown(fallback, NCCL_DEBUG="WARN") == []
    assert shown(failed) == shown(failed, NCCL_DEBUG="VERSION") == []
    warn = shown(failed, NCCL_DEBUG="WARN")
    assert warn[0] == "" and warn[1].endswith(" spark-a1:7:9 [0] plugin/net.cc:379 NCCL WARN Failed to initialize "
                                              "any NET plugin")
    assert shown(failed, NCCL_DEBUG="info", NCCL_DEBUG_SUBSYS="INIT,NET")[-2:] == warn
    assert shown(fallback, NCCL_DEBUG="INFO")[-1] == "spark-a1:7:9 [0] NCCL INFO Using network Socket"
    # a line prints when any of its subsystems is asked for: NET alone hides the INIT-only
    # "Using network", ^NET keeps the INIT|NET lines, ENV shows none of these
    net_only = shown(fallback, NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="NET")
    assert len(net_only) == 6 and not any("Using network" in line for line in net_only)
    assert shown(fallback, NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="^NET") == shown(fallback, NCCL_DEBUG="INFO")
    assert shown(fallback, NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="ENV") == []
    # NCCL_NET=Socket never tries IB; NCCL_IB_DISABLE=1 skips it silently
    only_socket = nccl.road({"NCCL_NET": "Socket", "NCCL_SOCKET_IFNAME": "lo"}, verbs_dir(tmp_path))
    assert only_socket.net == "Socket" and not any("NET/IB" in text for _, _, _, text in only_socket.lines)
    disabled = nccl.road({"NCCL_IB_DISABLE": "1", "NCCL_SOCKET_IFNAME": "lo"}, str(tmp_path / "infiniband"))
    assert disabled.net == "Socket" and [t for _, _, _, t in disabled.lines][0] == "Failed to initialize NET plugin IB"


def test_hub_model_offline_and_not_cached_fails_like_vllm(tmp_path):
    env = sim_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    r = run_cli("serve", "fraserprice/DeepSeek-V4-Flash-DSpark", "--headless", env=env)
    assert r.returncode == 1
    assert r.stderr.rstrip().endswith(
        "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot folder for "
        "the specified revision on the local disk and outgoing traffic has been disabled. To enable repo "
        "look-ups and downloads online, pass 'local_files_only=False' as input.")
    assert 'repo_utils.py", line 301, in get_model_path' in r.stderr
    # online, or cached: it gets past the engine args (and stops at --headless on rank 0)
    assert "--headless is only valid" in run_cli("serve", "fraserprice/DeepSeek-V4-Flash-DSpark", "--headless",
                                                 env=sim_env(HF_HOME=str(tmp_path / "hf"))).stderr
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--fraserprice--DeepSeek-V4-Flash-DSpark"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    r = run_cli("serve", "fraserprice/DeepSeek-V4-Flash-DSpark", "--headless", env=env)
    assert r.returncode == 1 and "--headless is only valid" in r.stderr
    assert "HF_HUB_OFFLINE is True, replace model_id [fraserprice/DeepSeek-V4-Flash-DSpark] to model_path [%s]" % (
        repo / "snapshots" / commit) in r.stdout
    # another revision is not cached
    r = run_cli("serve", "fraserprice/DeepSeek-V4-Flash-DSpark", "--revision", "v2", "--headless", env=env)
    assert "LocalEntryNotFoundError" in r.stderr


def test_without_gpus_or_a_cpu_target_the_cli_cannot_infer_a_device():
    """A CUDA image run without --gpus (a check container missing VLLM_TARGET_DEVICE=cpu, or a
    serving argv that lost --gpus) fails the way vLLM 0.33.0 does, before any output."""
    env = sim_env()
    del env["NVIDIA_VISIBLE_DEVICES"]
    for args in (["--version"], ["serve", "--help"], ["bench", "serve", "--help"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 1 and result.stdout == ""
        assert "RuntimeError: Failed to infer device type" in result.stderr
    assert run_cli("--version", env=dict(env, NVIDIA_VISIBLE_DEVICES="void")).returncode == 1
    assert run_cli("--version", env=dict(env, VLLM_TARGET_DEVICE="cpu")).returncode == 0
    assert run_cli("--version").returncode == 0
