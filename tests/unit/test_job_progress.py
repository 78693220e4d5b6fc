"""Progress of async builds and transfers: the progress file, the lines, the build runner."""

import importlib.util
import json
import os
import stat
import sys
import threading

import pytest

import sparkfleet_job_progress as jp
import sparkfleet_transfer as transfer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def load_plugin(name):
    # The modules import ansible.module_utils.<name>: alias the plain modules.
    pytest.importorskip("ansible")
    import ansible.module_utils
    for util in (jp, transfer):
        sys.modules.setdefault("ansible.module_utils." + util.__name__, util)
        setattr(ansible.module_utils, util.__name__, util)
    spec = importlib.util.spec_from_file_location(name + "_module", os.path.join(ROOT, "plugins", "modules", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the progress file -------------------------------------------------------

def test_progress_file_is_throttled_atomic_and_tied_to_its_run(tmp_path):
    clock = Clock()
    path = str(tmp_path / "progress" / "job.json")
    progress = jp.ProgressFile(path, "run1", "fetch_image", "image → b", clock=clock, bytes=0)
    assert jp.read(path, "run1")["bytes"] == 0
    clock.now += 0.2
    progress.update(bytes=10)
    assert jp.read(path, "run1")["bytes"] == 0  # within WRITE_INTERVAL: not written yet
    clock.now += jp.WRITE_INTERVAL
    progress.update(bytes=20)
    assert jp.read(path, "run1")["bytes"] == 20
    progress.finish(True, bytes=30)  # the end is always written
    state = jp.read(path, "run1")
    assert state["finished"] and state["ok"] and state["bytes"] == 30
    # Another run's file reads as "not started yet", never as this run's end.
    assert jp.read(path, "run2") is None
    assert jp.read(str(tmp_path / "absent.json"), "run1") is None
    assert not os.path.exists(path + ".tmp")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_progress_file_without_a_path_writes_nothing(tmp_path):
    progress = jp.ProgressFile(None, "r", "build", "build")
    progress.update(step=2)
    progress.finish(True)
    assert progress.state["finished"] and os.listdir(tmp_path) == []


# --- docker build output -----------------------------------------------------

@pytest.mark.parametrize("line,step", [
    ("#7 [3/6] RUN python3 /opt/sparkfleet/overlay/apply.py", (3, 6, "RUN python3 /opt/sparkfleet/overlay/apply.py")),
    ("#4 [builder 2/5] COPY overlay /opt/sparkfleet/overlay", (2, 5, "COPY overlay /opt/sparkfleet/overlay")),
    ("Step 4/9 : RUN pip install .", (4, 9, "RUN pip install .")),
    ("#7 DONE 1.2s", None),
    ("#7 CACHED", None),
    (" ---> Running in 1a2b3c", None),
])
def test_build_steps_from_buildkit_and_classic_output(line, step):
    assert jp.build_step(line) == step


# --- the lines the play prints -----------------------------------------------

def test_transfer_line_gives_share_rate_and_time_left():
    state = {"kind": "fetch_image", "label": "image x → spark-a2", "started": 100.0, "bytes": 512 << 20,
             "total_bytes": 2048 << 20, "total_is_estimate": True, "compression": "none", "wire_bytes": 512 << 20}
    line = jp.progress_line(state, now=110.0)
    assert line == "image x → spark-a2: 512.0 MiB of ~2.0 GiB (25%), 51.2 MiB/s, 10 s; about 30 s left"


def test_share_stays_below_100_until_the_end_and_files_are_counted():
    state = {"kind": "fetch_files", "label": "weights", "started": 0.0, "bytes": 110, "total_bytes": 100,
             "files_total": 3, "files_done": 2}
    assert "(99%)" in jp.progress_line(state, now=1.0)
    assert "2 of 3 file(s)" in jp.progress_line(state, now=1.0)
    done = dict(state, finished=True, ok=True, files_done=3, bytes=100, updated=4.0)
    assert jp.total_line(done, now=99.0) == "weights: done, 100 B of 100 B (100%), 3 of 3 file(s), 25 B/s in 4 s"


def test_compressed_transfer_names_its_wire_bytes():
    state = {"kind": "fetch_image", "label": "img", "started": 0.0, "bytes": 4 << 30, "wire_bytes": 1 << 30,
             "compression": "zstd", "finished": True, "ok": False, "updated": 8.0}
    assert jp.total_line(state) == "img: FAILED, 4.0 GiB, 512.0 MiB/s, 1.0 GiB on the wire (zstd) in 8 s"


def test_build_lines():
    state = {"kind": "build", "label": "build on a1", "started": 0.0, "step": 0, "steps": 0}
    assert jp.progress_line(state, now=3.0) == "build on a1: sending the build context, 3 s"
    state.update(step=4, steps=9, instruction="RUN  python3 " + "x" * 100)
    line = jp.progress_line(state, now=65.0)
    assert line.startswith("build on a1: step 4 of 9, 65 s: RUN python3 xxx") and line.endswith("…")
    state.update(finished=True, ok=True, cached=2, updated=192.0)
    assert jp.total_line(state) == "build on a1: done, 9 step(s) (2 from cache) in 3 min 12 s"
    assert jp.progress_line(None) == "starting"


# --- the build module's runner -----------------------------------------------

@pytest.fixture
def fake_build(tmp_path):
    def make(body):
        path = tmp_path / "docker-build"
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return [str(path)]
    return make


def test_build_runner_records_each_step_as_it_goes(fake_build, tmp_path):
    build = load_plugin("sparkfleet_image_build")
    path = str(tmp_path / "build.json")
    seen = []
    argv = fake_build(
        "echo 'Step 1/3 : FROM base'\n"
        "echo ' ---> Using cache'\n"
        "echo 'Step 2/3 : COPY overlay /opt'\n"
        "echo 'Step 3/3 : RUN apply'\n"
        "echo 'Successfully built 1234'\n")
    progress = jp.ProgressFile(path, "r1", "build", "build on a1")
    original = progress.update

    def spy(**fields):
        original(**fields)
        if "step" in fields:
            with open(path) as handle:
                seen.append(json.load(handle)["step"])
    progress.update = spy
    code, steps, cached, tail = build.run_build(argv, progress, timeout=30)
    assert code == 0 and steps == 3 and cached == 1
    # Each step is on file as soon as the build names it (no throttling of steps).
    assert seen == [1, 2, 3]
    assert tail[-1] == "Successfully built 1234"


def test_build_runner_stops_a_silent_hang_at_its_timeout(fake_build):
    build = load_plugin("sparkfleet_image_build")
    argv = fake_build("echo '#5 [2/4] RUN sleep forever'\nexec sleep 30\n")
    progress = jp.ProgressFile(None, "r", "build", "build")
    done = {}
    thread = threading.Thread(target=lambda: done.update(result=build.run_build(argv, progress, timeout=1)))
    thread.start()
    thread.join(15)
    code, steps, _, tail = done["result"]
    assert code != 0 and steps == 4 and progress.state["step"] == 2
    assert tail[-1] == "sparkfleet: build stopped after 1 s (timeout)"


def test_cached_step_lines():
    build = load_plugin("sparkfleet_image_build")
    assert build.is_cached("#6 CACHED") and build.is_cached(" ---> Using cache")
    assert not build.is_cached("#6 DONE 0.1s") and not build.is_cached("CACHED")


# --- the transfer module's file progress --------------------------------------

def test_file_repair_progress_excludes_resumed_prefixes(tmp_path):
    peer = load_plugin("sparkfleet_peer_transfer")
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    files = []
    for name, size in (("a", 300000), ("b", 200000)):
        data = os.urandom(size)
        (src / name).write_bytes(data)
        files.append({"path": name, "size": size})
    (dst / "a.partial").write_bytes((src / "a").read_bytes()[:100000])
    server = transfer.Server("127.0.0.1", 0, "tok", "127.0.0.1", files_root=str(src), files=["a", "b"], idle_timeout=20)
    port = _free_port()
    server.port = port
    thread = threading.Thread(target=server.run)
    thread.start()
    path = str(tmp_path / "w.json")
    progress = jp.ProgressFile(path, "r", "fetch_files", "weights")
    transfers = []
    peer.fetch_files({"address": "127.0.0.1", "port": port, "token": "tok", "root": str(dst), "files": files},
                     transfers, progress)
    progress.finish(True)
    transfer.finish("127.0.0.1", port, "tok")
    thread.join(10)
    state = jp.read(path, "r")
    assert state["total_bytes"] == 400000 and state["bytes"] == 400000
    assert state["files_done"] == state["files_total"] == 2
    assert (dst / "a").read_bytes() == (src / "a").read_bytes()


def _free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_time_left_before_the_bytes_flow_and_no_estimate_in_the_total():
    state = {"kind": "fetch_image", "label": "img", "started": 0.0, "bytes": 100 << 10, "total_bytes": 144 << 20,
             "total_is_estimate": True, "compression": "none"}
    # docker save prepares its layers before streaming: 0% after 10 s says nothing about the rest.
    assert "left" not in jp.progress_line(state, now=10.0)
    state["bytes"] = 72 << 20
    assert jp.progress_line(state, now=3.0).endswith("3 s")  # too early to extrapolate
    assert jp.progress_line(state, now=10.0).endswith("; about 10 s left")
    done = dict(state, bytes=149 << 20, finished=True, ok=True, updated=20.0)
    assert jp.total_line(done) == "img: done, 149.0 MiB, 7.5 MiB/s in 20 s"


def test_the_wait_stretches_with_the_job_so_a_long_watch_prints_a_bounded_number_of_lines():
    assert jp.watch_wait(15, 0) == 15 and jp.watch_wait(15, 100) == 15
    assert jp.watch_wait(15, 1800) == 180 and jp.watch_wait(15, 36000) == jp.MAX_WAIT_S
    assert jp.watch_wait(0, 36000) == 0  # a plain read never waits
    # Lines a 6-hour job prints at a 15 s interval: about 75, where a fixed interval prints 1,440.
    elapsed, rounds = 0.0, 0
    while elapsed < 6 * 3600:
        elapsed += jp.watch_wait(15, elapsed)
        rounds += 1
    assert rounds < 100, rounds
    print("rounds for 6 h:", rounds)
