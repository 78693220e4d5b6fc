"""Disk preflight: the refusal names the free space, the need, the reserve and the shortfall."""

import os

import sparkfleet_disk as disk

GIB = 1 << 30


def test_fits_with_the_reserve_left_over():
    assert disk.verdict("b2", "/var/lib/docker", 40 * GIB, 21 * GIB, 10 * GIB, "the image") is None
    assert disk.verdict("b2", "/var/lib/docker", 31 * GIB, 21 * GIB, 10 * GIB, "the image") is None


def test_refuses_with_numbers():
    message = disk.verdict("spark-b2", "/var/lib/docker", int(3.2 * GIB), int(21.4 * GIB), 10 * GIB,
                           "receiving sparkfleet/vllm-spark:abc")
    assert message.startswith("spark-b2: /var/lib/docker has 3.2 GiB free; receiving sparkfleet/vllm-spark:abc "
                              "needs 21.4 GiB and 10.0 GiB stays free (sparkfleet_disk_reserve_gib), so 28.2 GiB "
                              "more is needed.")
    assert "nothing was transferred or built" in message


def test_a_directory_not_made_yet_is_checked_on_its_parent(tmp_path):
    assert disk.existing_dir(str(tmp_path / "models" / "DeepSeek")) == str(tmp_path)
    assert disk.free_bytes(str(tmp_path / "absent")) == disk.free_bytes(str(tmp_path)) > 0
    assert os.path.isdir(disk.existing_dir("/nonexistent/a/b"))
