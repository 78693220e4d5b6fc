# -*- coding: utf-8 -*-
"""Head -> worker transfers over the fabric: images and weight files.

The head runs a one-shot server (an async Ansible task) bound to its fabric
address; the worker connects, asks for an image (`docker save`, compressed on
the fly, piped into `docker load` on arrival) or for files (streamed with
sendfile, resumed from a `.partial` file after an interruption). Every request
carries a per-run token and must come from the peer's address. Nothing is
staged on disk on either side, and nothing goes through the controller.

Protocol, one TCP connection per request: the client sends one JSON line
({token, op: image|file|done, ...}); the server answers one JSON line
({ok, ...}) followed by the payload, then closes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import time
import zlib

CHUNK = 1 << 20
HEADER_LIMIT = 64 * 1024


class TransferError(Exception):
    """A transfer failed; str() says which side, what and why."""


def _read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        piece = sock.recv(1)
        if not piece:
            break
        data += piece
        if len(data) > HEADER_LIMIT:
            raise TransferError("request header too long")
    if not data:
        raise TransferError("connection closed before a header arrived")
    return json.loads(data.decode("utf-8"))


def _send_line(sock, obj):
    sock.sendall((json.dumps(obj, sort_keys=True) + "\n").encode("utf-8"))


def safe_relpath(root, relpath):
    """root/relpath, refusing anything that escapes root."""
    if not isinstance(relpath, str) or relpath.startswith("/") or ".." in relpath.split("/"):
        raise TransferError("refusing path %r" % (relpath,))
    full = os.path.realpath(os.path.join(root, relpath))
    if not full.startswith(os.path.realpath(root) + os.sep):
        raise TransferError("refusing path %r: outside %s" % (relpath, root))
    return full


def choose_compression(wanted, offered):
    """The compression both sides can do: the client's first choice the server supports."""
    for name in offered:
        if name in wanted:
            return name
    return "none"


def local_compressions(prefer="auto"):
    """What this side can (de)compress, best first. zstd needs the zstd binary."""
    names = []
    if prefer in ("auto", "zstd") and shutil.which("zstd"):
        names.append("zstd")
    if prefer in ("auto", "gzip"):
        names.append("gzip")
    names.append("none")
    return names


# ---------------------------------------------------------------- server

class Server(object):
    """Serves the allowed images and files to one peer until `done` or idle timeout."""

    def __init__(self, bind, port, token, peer, images=(), files_root=None, files=(),
                 idle_timeout=300, docker="docker", compressions=None):
        self.bind = bind
        self.port = port
        self.token = token
        self.peer = peer
        self.images = set(images)
        self.files_root = files_root
        self.files = set(files)
        self.idle_timeout = idle_timeout
        self.docker = docker
        self.compressions = compressions or local_compressions()
        self.served = []
        self.bytes_sent = 0

    def run(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.bind, self.port))
        except OSError as exc:
            raise TransferError("cannot listen on %s:%d: %s" % (self.bind, self.port, exc))
        listener.listen(4)
        listener.settimeout(self.idle_timeout)
        try:
            while True:
                try:
                    conn, address = listener.accept()
                except socket.timeout:
                    raise TransferError("no request from %s for %d s; gave up" % (self.peer, self.idle_timeout))
                with conn:
                    if self.peer and address[0] != self.peer:
                        continue
                    if self._handle(conn) == "done":
                        return {"served": self.served, "bytes_sent": self.bytes_sent}
        finally:
            listener.close()

    def _handle(self, conn):
        conn.settimeout(self.idle_timeout)
        request = _read_line(conn)
        if not hmac.compare_digest(str(request.get("token", "")), self.token):
            _send_line(conn, {"ok": False, "error": "bad token"})
            return None
        op = request.get("op")
        if op == "done":
            _send_line(conn, {"ok": True})
            return "done"
        if op == "image" and request.get("ref") in self.images:
            compression = choose_compression(self.compressions, request.get("accept", ["none"]))
            # The image's size lets the receiver show a share done (the saved stream runs a little larger).
            _send_line(conn, {"ok": True, "compression": compression, "size": image_size(self.docker, request["ref"])})
            self.bytes_sent += send_image(conn, self.docker, request["ref"], compression)
            self.served.append(request["ref"])
            return None
        if op == "file" and self.files_root and request.get("path") in self.files:
            path = safe_relpath(self.files_root, request["path"])
            size = os.path.getsize(path)
            offset = min(int(request.get("offset", 0)), size)
            _send_line(conn, {"ok": True, "size": size, "offset": offset})
            with open(path, "rb") as handle:
                if size > offset:
                    self.bytes_sent += conn.sendfile(handle, offset, size - offset)
            self.served.append(request["path"])
            return None
        _send_line(conn, {"ok": False, "error": "not offered: %s %s" % (op, request.get("ref") or request.get("path"))})
        return None


def image_size(docker, ref):
    """The image's size as `docker image inspect` reports it, 0 when unknown."""
    result = subprocess.run([docker, "image", "inspect", "--format", "{{.Size}}", ref],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    try:
        return int(result.stdout.decode().strip()) if result.returncode == 0 else 0
    except ValueError:
        return 0


def send_image(conn, docker, ref, compression):
    """`docker save ref`, compressed, onto the socket; returns bytes sent."""
    save = subprocess.Popen([docker, "save", ref], stdout=subprocess.PIPE)
    sent = 0
    try:
        if compression == "zstd":
            # -T0: all cores; level 1 keeps up with the CX7 link better than gzip.
            zstd = subprocess.Popen(["zstd", "-q", "-1", "-T0", "-c"], stdin=save.stdout, stdout=subprocess.PIPE)
            save.stdout.close()
            for block in iter(lambda: zstd.stdout.read(CHUNK), b""):
                conn.sendall(block)
                sent += len(block)
            if zstd.wait() != 0:
                raise TransferError("zstd failed while sending %s" % ref)
        else:
            packer = zlib.compressobj(1, zlib.DEFLATED, 31) if compression == "gzip" else None
            for block in iter(lambda: save.stdout.read(CHUNK), b""):
                if packer:
                    block = packer.compress(block)
                conn.sendall(block)
                sent += len(block)
            if packer:
                tail = packer.flush()
                conn.sendall(tail)
                sent += len(tail)
    finally:
        if save.wait() != 0:
            raise TransferError("`docker save %s` failed on the sender" % ref)
    return sent


# ---------------------------------------------------------------- client

def _connect(host, port, wait):
    deadline = time.time() + wait
    while True:
        try:
            return socket.create_connection((host, port), timeout=30)
        except OSError as exc:
            if time.time() >= deadline:
                raise TransferError("cannot reach the sender at %s:%d: %s" % (host, port, exc))
            time.sleep(0.5)


def _request(host, port, token, request, wait):
    sock = _connect(host, port, wait)
    request = dict(request, token=token)
    _send_line(sock, request)
    answer = _read_line(sock)
    if not answer.get("ok"):
        sock.close()
        raise TransferError("sender %s refused %s: %s" % (host, request.get("op"), answer.get("error")))
    sock.settimeout(600)
    return sock, answer


def _no_progress(**_fields):
    pass


def fetch_image(host, port, token, ref, docker="docker", wait=60, prefer="auto", progress=_no_progress):
    """Stream an image from the sender into the local `docker load`.

    progress(...) is called per block with the bytes loaded so far (after
    decompression where the client decompresses), the bytes on the wire, and
    first with the image's size from the sender.
    """
    started = time.time()
    sock, answer = _request(host, port, token, {"op": "image", "ref": ref, "accept": local_compressions(prefer)}, wait)
    compression = answer["compression"]
    # zstd decompresses in its own process, so only wire (compressed) bytes are
    # counted there and the image size is no measure of them.
    progress(total_bytes=int(answer.get("size") or 0) if compression != "zstd" else 0,
             total_is_estimate=True, compression=compression, bytes=0, wire_bytes=0)
    received = 0
    loaded = 0
    with sock:
        if compression == "zstd":
            unpack = subprocess.Popen(["zstd", "-q", "-d", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            load = subprocess.Popen([docker, "load"], stdin=unpack.stdout, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            unpack.stdout.close()
            sink, inflater = unpack.stdin, None
        else:
            unpack = None
            load = subprocess.Popen([docker, "load"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            sink = load.stdin
            inflater = zlib.decompressobj(31) if compression == "gzip" else None
        try:
            for block in iter(lambda: sock.recv(CHUNK), b""):
                received += len(block)
                data = inflater.decompress(block) if inflater else block
                sink.write(data)
                loaded += len(data) if compression != "zstd" else 0
                progress(bytes=loaded if compression != "zstd" else received, wire_bytes=received)
            if inflater:
                sink.write(inflater.flush())
        except BrokenPipeError:
            pass
        sink.close()
        if unpack and unpack.wait() != 0:
            raise TransferError("zstd could not decompress the stream for %s" % ref)
        load.stdout.read()
        err = load.stderr.read()
        if load.wait() != 0:
            raise TransferError("`docker load` failed for %s: %s" % (ref, err.decode("utf-8", "replace").strip()))
    seconds = max(time.time() - started, 1e-6)
    return {"ref": ref, "wire_bytes": received, "seconds": round(seconds, 3), "compression": compression,
            "wire_mib_per_s": round(received / seconds / (1 << 20), 1)}


def resume_offset(dest_root, relpath, size):
    """Bytes of relpath fetch_file will not fetch again (its `.partial` prefix)."""
    partial = safe_relpath(dest_root, relpath) + ".partial"
    offset = os.path.getsize(partial) if os.path.exists(partial) else 0
    return offset if offset <= size else 0


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_file(host, port, token, relpath, dest_root, size, sha256=None, wait=60, progress=_no_progress):
    """Fetch one file into dest_root, resuming `<file>.partial`; verify, then rename.

    A partial file larger than the expected size, or a complete one that fails
    its hash, is discarded and fetched again from the start.
    """
    final = safe_relpath(dest_root, relpath)
    partial = final + ".partial"
    os.makedirs(os.path.dirname(final), exist_ok=True)
    offset = resume_offset(dest_root, relpath, size)
    if offset == 0 and os.path.exists(partial):
        os.unlink(partial)
    started = time.time()
    received = 0
    for attempt in (1, 2):
        if offset < size:
            sock, answer = _request(host, port, token, {"op": "file", "path": relpath, "offset": offset}, wait)
            if answer["size"] != size:
                sock.close()
                raise TransferError("%s is %d bytes on the sender, the manifest says %d" % (relpath, answer["size"], size))
            with sock, open(partial, "ab") as handle:
                handle.seek(answer["offset"])
                handle.truncate()
                for block in iter(lambda: sock.recv(CHUNK), b""):
                    handle.write(block)
                    received += len(block)
                    progress(received=received)
                handle.flush()
                os.fsync(handle.fileno())
        elif not os.path.exists(partial):
            open(partial, "wb").close()
        got = os.path.getsize(partial)
        if got != size:
            raise TransferError("%s: received %d of %d bytes" % (relpath, got, size))
        if sha256 and sha256_file(partial) != sha256:
            # A resumed prefix that was already corrupt: start over once.
            os.unlink(partial)
            offset = 0
            if attempt == 2:
                raise TransferError("%s: sha256 mismatch after a full transfer" % relpath)
            continue
        os.replace(partial, final)
        seconds = max(time.time() - started, 1e-6)
        return {"path": relpath, "bytes": received, "resumed_from": 0 if attempt == 2 else offset,
                "seconds": round(seconds, 3)}
    raise TransferError("%s: could not be fetched" % relpath)


def finish(host, port, token, wait=10):
    """Tell the sender we are done so it exits now instead of at its idle timeout."""
    sock, _ = _request(host, port, token, {"op": "done"}, wait)
    sock.close()
