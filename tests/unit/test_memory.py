import pytest

import sparkfleet_memory as mem

SPARK_FRESH = """MemTotal:       125513728 kB
MemFree:        118000000 kB
MemAvailable:   121000000 kB
Cached:           1200000 kB
"""
# The failure operators hit: repeated 149 GB loads left ~100 GiB of page cache.
SPARK_CACHED = """MemTotal:       125513728 kB
MemFree:         10000000 kB
MemAvailable:    11534336 kB
Cached:         104857600 kB
"""


def test_parse_meminfo_in_bytes():
    info = mem.parse_meminfo(SPARK_FRESH)
    assert info["MemTotal"] == 125513728 * 1024
    with pytest.raises(ValueError, match="no MemAvailable"):
        mem.parse_meminfo("MemTotal: 1 kB\n")


def test_fresh_node_passes_with_figures():
    figures = mem.check(mem.parse_meminfo(SPARK_FRESH), 0.88, 2.0, "spark-01")
    assert figures["mem_total_gib"] == 119.7
    assert figures["needed_gib"] == 107.3
    assert figures["headroom_gib"] > 0


def test_cached_node_fails_with_numbers_node_and_fix():
    with pytest.raises(mem.PreflightFailure) as err:
        mem.check(mem.parse_meminfo(SPARK_CACHED), 0.88, 2.0, "spark-02")
    assert str(err.value) == (
        "memory preflight failed on spark-02: MemAvailable 11.0 GiB < needed 107.3 GiB "
        "(gpu_memory_utilization 0.88 x MemTotal 119.7 GiB + 2.0 GiB margin). "
        "Fix: drop the page cache (100.0 GiB cached): run sparkfleet-cleanup; "
        "or lower gpu_memory_utilization below 0.08; "
        "or reboot the node if memory is still held by the driver after a stopped container "
        "(only a reboot frees it).")


def test_asymmetric_pair_names_the_tighter_node():
    small = mem.check(mem.parse_meminfo(SPARK_FRESH.replace("125513728", "124780544")), 0.85, 2.0, "spark-119")
    big = mem.check(mem.parse_meminfo(SPARK_FRESH.replace("125513728", "126877696")), 0.85, 2.0, "spark-121")
    assert mem.tighter_node([big, small])["node"] == "spark-121"


@pytest.mark.parametrize("total_gib, expected_gib", [(119.7, 2.99), (121.0, 3.02), (16, 1.0), (512, 5.0)])
def test_min_free_kbytes_rule(total_gib, expected_gib):
    assert mem.min_free_kbytes(int(total_gib * mem.GIB)) / 1024 / 1024 == pytest.approx(expected_gib, abs=0.01)


def test_utilization_is_range_checked():
    with pytest.raises(ValueError, match="must be in"):
        mem.check(mem.parse_meminfo(SPARK_FRESH), 1.5)


def test_cli_exit_codes(tmp_path, capsys):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text(SPARK_FRESH)
    bad.write_text(SPARK_CACHED)
    assert mem.main(["--utilization", "0.88", "--meminfo", str(good), "--node", "n1"]) == 0
    assert "memory preflight ok on n1" in capsys.readouterr().out
    assert mem.main(["--utilization", "0.88", "--meminfo", str(bad), "--node", "n2"]) == 1
    assert "memory preflight failed on n2" in capsys.readouterr().err
