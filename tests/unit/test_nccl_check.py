"""sparkfleet-nccl-check: arguments and bandwidth arithmetic, importable without torch."""

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "roles", "spark_fabric", "files", "sparkfleet-nccl-check")


def load():
    loader = importlib.machinery.SourceFileLoader("sparkfleet_nccl_check", SCRIPT)
    spec = importlib.util.spec_from_loader("sparkfleet_nccl_check", loader)
    module = importlib.util.module_from_spec(spec)
    # No __pycache__ next to a file the role ships.
    previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = previous
    return module


nc = load()


def test_module_does_not_import_torch():
    assert "torch" not in vars(nc)


def test_bus_factor_and_bandwidth():
    assert nc.bus_factor(2) == 1.0
    assert nc.bus_factor(8) == pytest.approx(1.75)
    algbw, busbw = nc.bandwidths(1_000_000_000, 0.5, 4)
    assert algbw == pytest.approx(2.0) and busbw == pytest.approx(3.0)
    assert nc.gbytes_to_gbits(25.0) == 200.0
    with pytest.raises(nc.CheckError):
        nc.bandwidths(1, 0, 2)


def test_result_row_and_summary():
    row = nc.result_row(1 << 30, "float32", 0.05, 2)
    assert row["count"] == (1 << 28)
    assert row["busbw_GBps"] == pytest.approx(21.475, abs=1e-3)
    assert row["busbw_gbps"] == pytest.approx(171.8, abs=0.1)
    doc = nc.summary([row], 2, 100.0)
    assert doc["ok"] is True and doc["peak_busbw_gbps"] == row["busbw_gbps"]
    assert nc.summary([row], 2, 500.0)["ok"] is False
    line = nc.json_line(doc)
    assert nc.parse_json_line("noise\n" + line + "\n") == json.loads(line)["sparkfleet_nccl_check"]


def test_table_looks_like_nccl_tests():
    text = nc.table([nc.result_row(64 << 20, "float32", 0.003, 2)], 2)
    assert "algbw(GB/s)" in text and "busbw(GB/s)" in text
    assert "67108864" in text and "# Avg bus bandwidth" in text


def test_args_multi_node():
    opts = nc.parse_args(["--rank", "1", "--world-size", "2", "--master-addr", "10.0.0.1", "--size-mb", "64,128",
                          "256"])
    assert opts.sizes_mb == [64.0, 128.0, 256.0] and opts.rank == 1 and opts.master_port == 29600


def test_args_local():
    opts = nc.parse_args(["--local", "--iters", "3", "--warmup", "0"])
    assert opts.local and opts.master_addr == "127.0.0.1" and opts.sizes_mb == [64, 128, 256, 512, 1024]
    argv = nc.child_argv(opts, 1, 2, 12345)
    assert argv[argv.index("--rank") + 1] == "1" and argv[argv.index("--device") + 1] == "1"
    assert argv[argv.index("--master-port") + 1] == "12345"


@pytest.mark.parametrize("argv, words", [
    (["--rank", "0"], "--world-size, --master-addr are required"),
    (["--rank", "2", "--world-size", "2", "--master-addr", "x"], "outside 0..1"),
    (["--rank", "0", "--world-size", "1", "--master-addr", "x"], "at least 2"),
    (["--local", "--rank", "0"], "drop --rank"),
    (["--local", "--size-mb", "abc"], "not a number"),
    (["--local", "--size-mb", "-1"], "must be positive"),
    (["--local", "--iters", "0"], "--iters"),
])
def test_bad_args(argv, words):
    with pytest.raises(nc.CheckError) as exc:
        nc.parse_args(argv)
    assert words in str(exc.value)


def test_cli_without_torch_exits_2_with_a_reason():
    env = dict(os.environ, PYTHONPATH="")
    result = subprocess.run([sys.executable, "-S", SCRIPT, "--local"], capture_output=True, text=True, env=env,
                            check=False)
    # -S: no site-packages, so no torch even where one is installed.
    assert result.returncode == 2
    assert "torch" in result.stderr
