import json

import pytest

from sparkfleet_health import (GateFailure, HealthGate, garble_problems, kv_cache_tokens,
                               models_problems, parse_metrics, spec_acceptance)

CLEAN = ("Running a model across two small computers lets a team serve a model that does not fit "
         "in one. The fast cable keeps the two halves in step. It also keeps costs and power low.")


def test_clean_english_passes():
    assert garble_problems(CLEAN) == []


def test_cjk_drift_is_caught():
    problems = garble_problems("The answer is simple. 这个模型的输出开始漂移到中文字符并且继续下去")
    assert problems and problems[0].startswith("CJK drift on an English prompt")


def test_repetition_loop_is_caught():
    text = "Sure. " + "the cable keeps the halves in step " * 6
    assert any("repetition loop" in p for p in garble_problems(text))


@pytest.mark.parametrize("leak", ["<tool_call>{\"name\": \"x\"}</tool_call>", "<｜tool▁calls▁begin｜>",
                                  "</think> and then", "<|im_end|>"])
def test_leaked_markup_is_caught(leak):
    assert any("leaked tool/reasoning markup" in p for p in garble_problems(CLEAN + " " + leak))


def test_empty_is_not_clean():
    assert garble_problems("  ") == ["empty completion"]


def test_models_check():
    payload = {"data": [{"id": "deepseek-v4-flash", "max_model_len": 131072}]}
    assert models_problems(payload, "deepseek-v4-flash", 131072) == []
    assert "expected other" in models_problems(payload, "other")[0]
    assert "the profile expects 65536" in models_problems(payload, "deepseek-v4-flash", 65536)[0]
    assert "returned no models" in models_problems({"data": []}, "x")[0]


def test_kv_cache_line_takes_the_last_run():
    log = "INFO GPU KV cache size: 100 tokens\n...restart...\nINFO GPU KV cache size: 360,858 tokens\n"
    assert kv_cache_tokens(log) == 360858
    assert kv_cache_tokens("nothing") is None


def test_metrics_and_acceptance():
    text = ("# HELP x\n# TYPE vllm:spec_decode_num_drafts_total counter\n"
            'vllm:spec_decode_num_drafts_total{model_name="m"} 100\n'
            'vllm:spec_decode_num_accepted_tokens_total{model_name="m"} 146\n'
            'vllm:request_success_total{finished_reason="stop"} 3\n'
            'vllm:request_success_total{finished_reason="length"} 2\n')
    metrics = parse_metrics(text)
    assert metrics["vllm:request_success_total"] == 5
    assert spec_acceptance(metrics) == pytest.approx(1.46)
    assert spec_acceptance({}) is None


class FakeServer:
    """Transport double: scripted answers, a clock that advances on sleep."""

    def __init__(self, ready_after=0.0, answer="42", clean=CLEAN, models=None, metrics=""):
        self.now = 0.0
        self.ready_after = ready_after
        self.answer = answer
        self.clean = clean
        self.models = models or {"data": [{"id": "m", "max_model_len": 4096}]}
        self.metrics = metrics
        self.calls = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def __call__(self, method, path, body, timeout):
        self.calls.append((method, path))
        if self.now < self.ready_after:
            raise OSError("connection refused")
        if path == "/health":
            return 200, ""
        if path == "/v1/models":
            return 200, json.dumps(self.models)
        if path == "/metrics":
            return 200, self.metrics
        prompt = body["messages"][0]["content"]
        content = self.answer if "17 + 25" in prompt else self.clean
        return 200, json.dumps({"choices": [{"message": {"content": content}}]})


def gate(server, **kw):
    return HealthGate(server, "m", clock=server.clock, sleep=server.sleep, max_model_len=4096, **kw)


def test_gate_waits_for_health_then_passes():
    server = FakeServer(ready_after=30)
    g = gate(server)
    assert g.wait_healthy(600, interval_s=5) == 30
    g.check_models()
    g.check_probes()
    g.check_clean()
    assert g.passed[1:] == ["models", "completion[arithmetic]", "clean-output x4"]


def test_gate_times_out_naming_the_check():
    server = FakeServer(ready_after=10_000)
    with pytest.raises(GateFailure) as err:
        gate(server).wait_healthy(60, interval_s=5)
    assert err.value.check == "health"
    assert "not ready after 60s (last: connection refused)" in str(err.value)


def test_gate_fails_on_wrong_answer():
    with pytest.raises(GateFailure, match=r"completion\[arithmetic\]: expected '42'"):
        gate(FakeServer(answer="41")).check_probes()


def test_gate_fails_on_garbled_concurrent_output():
    with pytest.raises(GateFailure) as err:
        gate(FakeServer(clean=CLEAN + " 中文中文中文中文中文中文中文中文中文中文中文中文中文中文中文中文")).check_clean()
    assert err.value.check == "clean-output" and "CJK drift" in err.value.seen


def test_gate_kv_and_spec_floors():
    g = gate(FakeServer(metrics="vllm:spec_decode_num_drafts_total 10\nvllm:spec_decode_num_accepted_tokens_total 5\n"))
    assert g.check_kv_cache("GPU KV cache size: 400000 tokens", 300000) == 400000
    with pytest.raises(GateFailure, match="below the profile's floor of 500000"):
        g.check_kv_cache("GPU KV cache size: 400000 tokens", 500000)
    with pytest.raises(GateFailure, match="0.50 accepted tokens per draft step, below the floor of 1.20"):
        g.check_spec_acceptance(1.2)
