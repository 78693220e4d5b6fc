"""The host cleanup script: shm leftovers, port holders, dry run, read-only caches."""

import importlib.machinery
import importlib.util
import os
import socket
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "spark_host", "files", "sparkfleet-cleanup")
loader = importlib.machinery.SourceFileLoader("sparkfleet_cleanup", SCRIPT)
spec = importlib.util.spec_from_loader("sparkfleet_cleanup", loader)
cleanup = importlib.util.module_from_spec(spec)
loader.exec_module(cleanup)


@pytest.fixture
def shm(tmp_path):
    shm_dir = tmp_path / "shm"
    shm_dir.mkdir()
    for name in ("psm_1a2b", "sem.mp-xyz", "keep-me", "psm_other"):
        (shm_dir / name).write_bytes(b"x" * 1024)
    return shm_dir


def run(args, capsys):
    rc = cleanup.main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_dry_run_reports_and_changes_nothing(shm, tmp_path, capsys):
    caches = tmp_path / "drop_caches"
    caches.write_text("")
    rc, out, _ = run(["--dry-run", "--shm-dir", str(shm), "--drop-caches-path", str(caches)], capsys)
    assert rc == 0
    assert "would remove 3 stale shared-memory file(s)" in out
    assert "would sync and drop the page cache" in out
    assert sorted(os.listdir(shm)) == ["keep-me", "psm_1a2b", "psm_other", "sem.mp-xyz"]
    assert caches.read_text() == ""


def test_real_run_cleans_and_second_run_is_a_noop(shm, tmp_path, capsys):
    caches = tmp_path / "drop_caches"
    caches.write_text("")
    rc, out, _ = run(["--shm-dir", str(shm), "--drop-caches-path", str(caches)], capsys)
    assert rc == 0 and "did remove 3 stale shared-memory file(s)" in out
    assert os.listdir(shm) == ["keep-me"]
    assert caches.read_text() == "3\n"
    rc, out, _ = run(["--shm-dir", str(shm), "--no-drop-caches"], capsys)
    assert rc == 0 and "nothing to clean" in out


def test_read_only_drop_caches_is_reported_not_fatal(shm, capsys):
    rc, out, _ = run(["--shm-dir", str(shm), "--drop-caches-path", "/nonexistent/drop_caches"], capsys)
    assert rc == 0 and "cannot drop the page cache" in out


def test_port_held_by_non_vllm_fails_without_killing(capsys):
    listener = subprocess.Popen([sys.executable, "-c",
                                 "import socket,time;s=socket.socket();s.bind(('127.0.0.1',0));s.listen();"
                                 "print(s.getsockname()[1],flush=True);time.sleep(60)"],
                                stdout=subprocess.PIPE, text=True)
    try:
        port = int(listener.stdout.readline())
        rc, _, err = run(["--port", str(port), "--no-drop-caches", "--shm-dir", "/nonexistent"], capsys)
        assert rc == 1
        assert "port %d is held by pid %d" % (port, listener.pid) in err
        assert listener.poll() is None
    finally:
        listener.kill()
        listener.wait()


def test_orphan_vllm_worker_holding_the_port_is_stopped(capsys):
    listener = subprocess.Popen([sys.executable, "-c",
                                 "import socket,time,sys;s=socket.socket();s.bind(('127.0.0.1',0));s.listen();"
                                 "print(s.getsockname()[1],flush=True);time.sleep(60)", "VLLM::Worker_TP1"],
                                stdout=subprocess.PIPE, text=True)
    try:
        port = int(listener.stdout.readline())
        rc, out, _ = run(["--port", str(port), "--no-drop-caches", "--shm-dir", "/nonexistent"], capsys)
        assert rc == 0
        assert "did stop orphan vLLM process %d" % listener.pid in out
        assert listener.wait(timeout=10) != 0
    finally:
        if listener.poll() is None:
            listener.kill()


def test_listening_inodes_parse_proc(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 00000000:7329 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n"
        "   1: 00000000:1F40 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n")
    assert cleanup.listening_inodes({29481, 8000}, str(tmp_path)) == {"4242": 29481}


READAHEAD = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "spark_host", "files", "sparkfleet-readahead")


def test_readahead_load_and_restore(tmp_path):
    for disk in ("nvme0n1", "nvme1n1"):
        (tmp_path / disk / "queue").mkdir(parents=True)
        (tmp_path / disk / "queue" / "read_ahead_kb").write_text("128\n")
    (tmp_path / "sda" / "queue").mkdir(parents=True)
    (tmp_path / "sda" / "queue" / "read_ahead_kb").write_text("4096\n")
    out = subprocess.run([sys.executable, READAHEAD, "load", "--sys-block", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "nvme0n1 read-ahead set to 8 KiB" in out
    assert (tmp_path / "nvme1n1" / "queue" / "read_ahead_kb").read_text() == "8\n"
    assert (tmp_path / "sda" / "queue" / "read_ahead_kb").read_text() == "4096\n"
    subprocess.run([sys.executable, READAHEAD, "restore", "--kb", "128", "--sys-block", str(tmp_path)],
                   capture_output=True, text=True, check=True)
    assert (tmp_path / "nvme0n1" / "queue" / "read_ahead_kb").read_text() == "128\n"


def test_readahead_never_fails_on_read_only_sys(tmp_path):
    result = subprocess.run([sys.executable, READAHEAD, "load", "--sys-block", str(tmp_path / "none")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "no NVMe disks" in result.stdout


def test_readahead_restore_waits_for_any_of_the_weights_loaded_lines(monkeypatch):
    """A load format that never prints the default loader's line still ends the wait at the next marker."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("sparkfleet_readahead", READAHEAD)
    spec = importlib.util.spec_from_loader("sparkfleet_readahead", loader)
    tool = importlib.util.module_from_spec(spec)
    loader.exec_module(tool)
    journal = ["Starting to load model /models/x...", "Model loading took 75.33 GiB and 50.1 seconds"]
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="\n".join(journal[:len(calls)]), stderr="")

    monkeypatch.setattr(tool.subprocess, "run", fake_run)
    monkeypatch.setattr(tool.time, "sleep", lambda s: None)
    assert tool.wait_for(["Loading weights took", "Model loading took"], 60, "abc") is True
    assert len(calls) == 2 and "_SYSTEMD_INVOCATION_ID=abc" in calls[0]
    calls.clear()
    journal[:] = ["nothing relevant"]
    clock = iter(range(0, 1000, 30))
    monkeypatch.setattr(tool.time, "monotonic", lambda: next(clock))
    assert tool.wait_for(["Loading weights took"], 60, "abc") is False


@pytest.fixture
def slow_docker(tmp_path):
    """A docker whose container is still being removed for a while after `rm --force`."""
    state = tmp_path / "inspects-left"
    script = tmp_path / "docker"
    script.write_text(
        "#!/bin/sh\n"
        "if [ \"$1\" = container ]; then\n"
        "  n=$(cat %s); [ \"$n\" -le 0 ] && exit 1; echo $((n - 1)) > %s; exit 0\n"
        "fi\n"
        "echo 'Error response from daemon: removal of container x is already in progress' >&2; exit 1\n"
        % (state, state))
    script.chmod(0o755)
    return script, state


def test_a_container_still_being_removed_is_waited_for(slow_docker, shm, capsys):
    script, state = slow_docker
    state.write_text("4")  # exists at the check and for three polls after `rm --force`
    rc, out, err = run(["--container", "sparkfleet-vllm-head", "--docker", str(script), "--shm-dir", str(shm),
                        "--no-drop-caches"], capsys)
    assert rc == 0 and "did remove stale container sparkfleet-vllm-head" in out, err
    assert state.read_text().strip() == "0"


def test_a_container_that_never_goes_fails_the_start(slow_docker, shm, capsys):
    script, state = slow_docker
    state.write_text("1000")
    rc, _, err = run(["--container", "sparkfleet-vllm-head", "--docker", str(script), "--container-wait", "1",
                      "--shm-dir", str(shm), "--no-drop-caches"], capsys)
    assert rc != 0 and "container sparkfleet-vllm-head is still there 1 s after `docker rm --force`" in err
