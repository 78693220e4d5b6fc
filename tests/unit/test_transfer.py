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
