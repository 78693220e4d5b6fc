"""The job_progress role on localhost: rounds stop at their limit, the job is still waited for."""

import os
import re
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_a_job_outlasting_the_round_limit_is_waited_for_and_totalled(tmp_path):
    env = dict(os.environ, PROGRESS_FILE=str(tmp_path / "job.json"), ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    result = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             "tests/unit/playbooks/job_progress_rounds.yml"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = re.sub(r"\n\s+", " ", result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    lines = re.findall(r"msg: '?(test job: [^']*?)'? (?:TASK|PLAY|$)", out)
    progress = [line for line in lines if "done" not in line]
    # Two rounds, the second saying the lines stop; then the total once the job ended.
    assert len(progress) == 2 and "round limit" in progress[1] and "round limit" not in progress[0], lines
    assert lines[-1].startswith("test job: done, 1000 B of 1000 B (100%)"), lines
