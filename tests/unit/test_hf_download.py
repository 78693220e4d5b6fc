"""The hub download helper: progress written while it downloads, manifest last."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# A stand-in for huggingface_hub with the calls the helper makes: the tree
# listing, and a snapshot download that writes through .incomplete files the
# way the real client does, slowly enough to be watched.
FAKE_HUB = textwrap.dedent('''
    import os, time

    class Entry:
        def __init__(self, path, size, sha=None):
            self.path, self.size = path, size
            self.lfs = type("Lfs", (), {"sha256": sha})() if sha else None

    FILES = [Entry("model-00001-of-00002.safetensors", 3 << 20, "a" * 64),
             Entry("model-00002-of-00002.safetensors", 3 << 20, "b" * 64),
             Entry("config.json", 20)]

    class HfApi:
        def list_repo_tree(self, repo, revision=None, recursive=False):
            return FILES + [type("Folder", (), {"path": "sub"})()]

    def snapshot_download(repo_id, revision, local_dir):
        partial_dir = os.path.join(local_dir, ".cache", "huggingface", "download")
        os.makedirs(partial_dir, exist_ok=True)
        for entry in FILES:
            partial = os.path.join(partial_dir, entry.path + ".incomplete")
            with open(partial, "wb") as handle:
                for _ in range(max(entry.size // (1 << 20), 1)):
                    handle.write(b"x" * min(entry.size, 1 << 20))
                    handle.flush()
                    time.sleep(0.4)
            os.replace(partial, os.path.join(local_dir, entry.path))
''')


def test_download_writes_progress_then_the_manifest(tmp_path):
    helper_dir = tmp_path / "helper"
    helper_dir.mkdir()
    shutil.copy(os.path.join(ROOT, "roles", "spark_model", "files", "sparkfleet-hf-download.py"), helper_dir)
    shutil.copy(os.path.join(ROOT, "plugins", "module_utils", "sparkfleet_job_progress.py"), helper_dir)
    fake = tmp_path / "fake"
    (fake / "huggingface_hub").mkdir(parents=True)
    (fake / "huggingface_hub" / "__init__.py").write_text(FAKE_HUB)
    dest, progress = tmp_path / "model", tmp_path / "progress.json"
    dest.mkdir()
    job = subprocess.Popen([sys.executable, str(helper_dir / "sparkfleet-hf-download.py"), "--repo", "org/model",
                            "--revision", "0123456789abcdef", "--dest", str(dest), "--progress-file", str(progress),
                            "--progress-run", "run7"], env=dict(os.environ, PYTHONPATH=str(fake)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    while job.poll() is None:
        if progress.exists():
            seen.append(json.loads(progress.read_text()))
        time.sleep(0.3)
    out, err = job.communicate()
    assert job.returncode == 0, err.decode()
    final = json.loads(progress.read_text())
    total = (6 << 20) + 20
    assert final["run"] == "run7" and final["finished"] and final["ok"]
    assert final["total_bytes"] == final["bytes"] == total and final["files_total"] == 3 and final["files_done"] == 3
    # Seen part-way: some bytes down (partial files counted), not all of them.
    assert any(0 < state.get("bytes", 0) < total and not state["finished"] for state in seen)
    manifest = json.loads((dest / ".sparkfleet" / "source-manifest.json").read_text())
    assert manifest["model-00001-of-00002.safetensors"] == {"size": 3 << 20, "sha256": "a" * 64}
    assert manifest["config.json"]["size"] == 20
    assert b"downloaded org/model@0123456789abcdef: 3 files" in out
