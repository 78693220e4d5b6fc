"""sparkfleet_benchmark_history's gate and draw actions, run as Ansible runs
them (an ad-hoc call on the controller): one call judges, records and draws
only for a failed verdict; draw redraws every profile of the history."""

import json
import os
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ANSIBLE = os.path.join(ROOT, ".venv", "bin", "ansible")
SHAPE = {"input_len": 256, "output_len": 128, "concurrency": 8}


def run(args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    result = subprocess.run([ANSIBLE, "localhost", "-c", "local", "-i", "localhost,", "-m",
                             "sparkfleet_benchmark_history", "-a", json.dumps(args)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = json.loads(result.stdout)
    return out["plays"][0]["tasks"][0]["hosts"]["localhost"]


def gate(directory, single, aggregate, provisional=False):
    figures = {"single_stream_tok_s": single, "aggregate_tok_s": aggregate}
    return run({"directory": str(directory), "action": "gate", "pair": "a", "profile": "balanced",
                "shape": SHAPE, "expected": {"single_stream_tok_s": 100, "aggregate_tok_s": 750},
                "figures": figures, "share": 0.9, "provisional": provisional,
                "record": {"pair": "a", "profile": "balanced", "target": "pair", "shape": SHAPE,
                           "figures": figures, "time": 1795000000, "image_id": "sha256:" + "ab" * 32}})


def history(directory):
    with open(os.path.join(directory, "history.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_a_passing_gate_records_its_verdict_in_one_call_and_draws_nothing(tmp_path):
    result = gate(tmp_path, 97.0, 760.0)
    assert result["passed"] is True and result["changed"] is True
    assert "profile balanced's stated figures" in result["reference"]["source"]
    assert result["pictures"] == [] and not (tmp_path / "balanced.png").exists()
    [record] = history(tmp_path)
    assert record["kind"] == "gate" and record["passed"] is True and record["verdict"] == result["verdict"]


def test_a_failed_gate_draws_at_once_and_names_both_figures(tmp_path):
    gate(tmp_path, 97.0, 760.0)
    result = gate(tmp_path, 58.5, 760.0)
    assert result["passed"] is False
    assert "pair a's last known good" in result["reference"]["source"]
    assert any("58.5" in line and "97" in line and "TOO SLOW" in line for line in result["verdict"])
    assert (tmp_path / "balanced.png").stat().st_size > 0 and (tmp_path / "report.md").exists()
    assert [r["passed"] for r in history(tmp_path)] == [True, False]


def test_a_provisional_gate_records_a_pass_but_only_returns_a_failure(tmp_path):
    """The rollout confirms a short first run that fell short with a second run: the first
    failure is returned, not recorded, so it can neither become history nor draw."""
    passed = gate(tmp_path, 97.0, 760.0, provisional=True)
    assert passed["passed"] is True and passed["recorded"] is True and passed["changed"] is True
    failed = gate(tmp_path, 97.0, 420.0, provisional=True)
    assert failed["passed"] is False and failed["recorded"] is False and failed["changed"] is False
    assert any("420" in line and "TOO SLOW" in line for line in failed["verdict"])
    assert not (tmp_path / "balanced.png").exists()
    assert [r["passed"] for r in history(tmp_path)] == [True]
    confirmed = gate(tmp_path, 97.0, 430.0)
    assert confirmed["passed"] is False and confirmed["recorded"] is True
    assert [r["passed"] for r in history(tmp_path)] == [True, False]


def test_draw_redraws_every_profile_of_the_history(tmp_path):
    gate(tmp_path, 97.0, 760.0)
    result = run({"directory": str(tmp_path), "action": "draw"})
    assert result["changed"] is True and result["pictures"] == [str(tmp_path / "balanced.png")]
    assert "![balanced](balanced.png)" in (tmp_path / "report.md").read_text()
    assert run({"directory": str(tmp_path / "empty"), "action": "draw"})["changed"] is False
    # Nothing recorded since: the pictures are current, a rollout's closing draw changes nothing.
    again = run({"directory": str(tmp_path), "action": "draw"})
    assert again["changed"] is False and again["report"] == str(tmp_path / "report.md")
    gate(tmp_path, 98.0, 761.0)
    assert run({"directory": str(tmp_path), "action": "draw"})["changed"] is True


def test_gate_without_figures_or_record_is_refused(tmp_path):
    result = run({"directory": str(tmp_path), "action": "gate", "pair": "a", "profile": "balanced", "shape": SHAPE})
    assert result.get("failed") and "action=gate needs figures and record" in result["msg"]
