"""The job_progress role on localhost: a job is watched to its end by the controller-side loop
(plugins/action/sparkfleet_watch_job.py), a line a round, then its total; its result is
registered, and a failed job fails the watch with its own error."""

import json
import os
import re
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _watch(tmp_path, seconds, ok):
    env = dict(os.environ, PROGRESS_FILE=str(tmp_path / "job.json"), JOB_SECONDS=str(seconds),
               JOB_OK="true" if ok else "false", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    result = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             "tests/unit/playbooks/job_progress_watch.yml"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = re.findall(r"^\[localhost\] (test job: .*)$", result.stderr, re.M)
    return result, lines


def test_a_job_is_watched_to_its_end_a_line_a_round_then_its_total(tmp_path):
    """Lines go to stderr: stdout stays the callback's (the JSON callback's document parses)."""
    # 30 rounds or so, each a line; nothing bounds the number of rounds.
    result, lines = _watch(tmp_path, 30, True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    progress = [line for line in lines if ": done" not in line]
    assert len(progress) >= 10, lines
    assert all(re.match(r"test job: \d+ B of 1000 B \(\d+%\)", line) for line in progress), progress
    assert lines[-1].startswith("test job: done, 1000 B of 1000 B (100%)"), lines
    assert "registered: changed=True rc=0" in result.stdout, result.stdout[-3000:]


def test_a_failed_job_fails_the_watch_with_its_own_error(tmp_path):
    result, lines = _watch(tmp_path, 3, False)
    assert result.returncode != 0, result.stdout[-3000:]
    assert "test job: the peer closed the stream at 1000 B" in result.stdout, result.stdout[-3000:]
    assert "TASK [job_progress : Watch the job to its end]" in result.stdout
    assert "registered:" not in result.stdout


def test_the_json_callback_still_prints_one_document(tmp_path):
    env = dict(os.environ, PROGRESS_FILE=str(tmp_path / "job.json"), JOB_SECONDS="4", JOB_OK="true",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    result = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             "tests/unit/playbooks/job_progress_watch.yml"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    plays = json.loads(result.stdout)["plays"]
    assert any(task["task"]["name"].endswith("Watch the job to its end") for play in plays for task in play["tasks"])
    assert re.search(r"^\[localhost\] test job: done", result.stderr, re.M), result.stderr[-2000:]
