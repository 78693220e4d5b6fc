"""AWX / Ansible Automation Platform: the execution environment builds from pyproject's pins, and
ansible-runner runs the playbooks with the repository as its project."""

import glob
import os
import subprocess
import sys
import tomllib

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)


def pyproject_dependencies():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]["dependencies"]


def test_ee_pins_match_pyproject():
    with open(os.path.join(ROOT, "execution-environment.yml"), encoding="utf-8") as handle:
        ee = yaml.safe_load(handle)
    deps = pyproject_dependencies()
    core = [d for d in deps if d.startswith("ansible-core")]
    assert ee["dependencies"]["ansible_core"]["package_pip"] == core[0]
    with open(os.path.join(ROOT, ee["dependencies"]["python"]), encoding="utf-8") as handle:
        listed = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    assert listed == [d for d in deps if not d.startswith("ansible-core")]


def test_ansible_builder_generates_the_build_context(tmp_path):
    result = subprocess.run([os.path.join(BIN, "ansible-builder"), "create", "-f", "execution-environment.yml",
                             "-c", str(tmp_path), "--output-filename", "Containerfile"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    containerfile = (tmp_path / "Containerfile").read_text()
    assert "ansible-core>=2.19,<2.20" in containerfile
    assert "ansible>=12.0,<13" in (tmp_path / "_build" / "requirements.txt").read_text()


# What an AWX job template runs most (ansible-lint checks every playbook's syntax).
@pytest.mark.parametrize("playbook", ["site.yml", "playbooks/rolling_restart.yml", "playbooks/uninstall.yml"])
def test_ansible_runner_runs_each_playbook_from_the_project(tmp_path, playbook):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run([os.path.join(BIN, "ansible-runner"), "run", str(tmp_path), "--project-dir", ROOT,
                             "-p", playbook, "--inventory", os.path.join(ROOT, "inventory", "example"),
                             "--cmdline=--syntax-check", "-q"],
                            capture_output=True, text=True, env=env, timeout=300)
    status = (tmp_path / "artifacts")
    runs = list(status.iterdir())
    assert len(runs) == 1, result.stdout + result.stderr
    assert (runs[0] / "status").read_text() == "successful", (runs[0] / "stdout").read_text()[-2000:]
    assert result.returncode == 0
    # The syntax check resolved the project's roles, modules and filters through its ansible.cfg.
    assert "playbook: %s" % playbook in (runs[0] / "stdout").read_text()
