import hashlib
import os
import socket
import stat
import threading

import pytest

import sparkfleet_transfer as transfer

TOKEN = "t0ken"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake_docker(tmp_path):
    """`docker save` prints a deterministic 'image'; `docker load` stores what it reads."""
    path = tmp_path / "docker"
    path.write_text(
        "#!/usr/bin/env python3\n"
        "import sys, hashlib\n"
        "if sys.argv[1] == 'save':\n"
        "    for i in range(64):\n"
        "        sys.stdout.buffer.write(hashlib.sha256(str(i).encode()).digest() * 512)\n"
        "elif sys.argv[1] == 'image':\n"
        "    print(64 * 32 * 512)\n"
        "elif sys.argv[1] == 'load':\n"
        "    open(%r, 'wb').write(sys.stdin.buffer.read())\n" % str(tmp_path / "loaded"))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def serve(**kw):
    port = free_port()
    server = transfer.Server("127.0.0.1", port, TOKEN, "127.0.0.1", idle_timeout=20, **kw)
    result = {}
    thread = threading.Thread(target=lambda: result.update(server.run()))
    thread.start()
    return port, thread, result


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_image_streams_into_docker_load(fake_docker, tmp_path, compression):
    port, thread, result = serve(images=["img:1"], docker=fake_docker, compressions=[compression])
    got = transfer.fetch_image("127.0.0.1", port, TOKEN, "img:1", docker=fake_docker, prefer=compression)
    transfer.finish("127.0.0.1", port, TOKEN)
    thread.join(10)
    expected = b"".join(hashlib.sha256(str(i).encode()).digest() * 512 for i in range(64))
    assert (tmp_path / "loaded").read_bytes() == expected
    assert got["compression"] == compression
    assert result["served"] == ["img:1"]
    if compression == "gzip":
        assert got["wire_bytes"] < len(expected)


def test_unoffered_image_and_bad_token_are_refused(fake_docker):
    port, thread, _ = serve(images=["img:1"], docker=fake_docker)
    with pytest.raises(transfer.TransferError) as err:
        transfer.fetch_image("127.0.0.1", port, TOKEN, "other:2", docker=fake_docker)
    assert "not offered" in str(err.value)
    with pytest.raises(transfer.TransferError) as err:
        transfer.fetch_image("127.0.0.1", port, "wrong", "img:1", docker=fake_docker)
    assert "bad token" in str(err.value)
    transfer.finish("127.0.0.1", port, TOKEN)
    thread.join(10)


def test_file_fetch_resumes_from_partial_and_verifies(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    data = os.urandom(300000)
    (src / "shard.safetensors").write_bytes(data)
    (dst / "shard.safetensors.partial").write_bytes(data[:100000])
    digest = hashlib.sha256(data).hexdigest()
    port, thread, _ = serve(files_root=str(src), files=["shard.safetensors"])
    got = transfer.fetch_file("127.0.0.1", port, TOKEN, "shard.safetensors", str(dst), len(data), digest)
    transfer.finish("127.0.0.1", port, TOKEN)
    thread.join(10)
    assert got["resumed_from"] == 100000 and got["bytes"] == 200000
    assert (dst / "shard.safetensors").read_bytes() == data
    assert not (dst / "shard.safetensors.partial").exists()


def test_corrupt_partial_is_fetched_again_from_the_start(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    data = os.urandom(50000)
    (src / "a").write_bytes(data)
    (dst / "a.partial").write_bytes(b"x" * 1000)
    port, thread, _ = serve(files_root=str(src), files=["a"])
    transfer.fetch_file("127.0.0.1", port, TOKEN, "a", str(dst), len(data), hashlib.sha256(data).hexdigest())
    transfer.finish("127.0.0.1", port, TOKEN)
    thread.join(10)
    assert (dst / "a").read_bytes() == data


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../b"])
def test_paths_outside_the_root_are_refused(tmp_path, path):
    with pytest.raises(transfer.TransferError):
        transfer.safe_relpath(str(tmp_path), path)


def test_compression_negotiation():
    assert transfer.choose_compression(["zstd", "gzip", "none"], ["gzip", "none"]) == "gzip"
    assert transfer.choose_compression(["none"], ["zstd", "gzip"]) == "none"
    assert transfer.local_compressions("none") == ["none"]


def test_image_progress_counts_loaded_bytes_against_the_image_size(fake_docker, tmp_path):
    port, thread, _ = serve(images=["img:1"], docker=fake_docker, compressions=["gzip"])
    seen = []
    transfer.fetch_image("127.0.0.1", port, TOKEN, "img:1", docker=fake_docker, prefer="gzip",
                         progress=lambda **fields: seen.append(fields))
    transfer.finish("127.0.0.1", port, TOKEN)
    thread.join(10)
    size = 64 * 32 * 512
    assert seen[0] == {"total_bytes": size, "total_is_estimate": True, "compression": "gzip", "bytes": 0, "wire_bytes": 0}
    # Loaded bytes are counted after decompression, so they reach the image's size
    # while the wire carries less.
    assert seen[-1]["bytes"] == size and 0 < seen[-1]["wire_bytes"] < size
    assert [f["bytes"] for f in seen[1:]] == sorted(f["bytes"] for f in seen[1:])


def test_file_progress_counts_only_the_bytes_moved(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    data = os.urandom(3 * transfer.CHUNK)
    (src / "a").write_bytes(data)
    (dst / "a.partial").write_bytes(data[:transfer.CHUNK])
    assert transfer.resume_offset(str(dst), "a", len(data)) == transfer.CHUNK
    assert transfer.resume_offset(str(dst), "a", 10) == 0  # a partial longer than the file is discarded
    port, thread, _ = serve(files_root=str(src), files=["a"])
    seen = []
    transfer.fetch_file("127.0.0.1", port, TOKEN, "a", str(dst), len(data), progress=lambda **f: seen.append(f))
    transfer.finish("127.0.0.1", port, TOKEN)
    thread.join(10)
    assert seen[-1]["received"] == 2 * transfer.CHUNK
