"""Multi-node rendezvous between the head (node rank 0) and headless nodes.

Protocol: newline-delimited JSON over one TCP connection per headless node
(stands in for torch.distributed's TCPStore on --master-addr:--master-port).

  worker -> head : {"type": "hello", ...config...}
  head -> worker : {"type": "welcome", ...config...} | {"type": "reject", "error": "..."}
  both           : {"type": "hb"} every HEARTBEAT_INTERVAL seconds afterwards
"""

import errno
import json
import socket
import threading
import time

from . import fingerprint
from . import log
from . import nccl
from .cli import fatal, SimExit

HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 5.0

CHECKED_FIELDS = ("model", "tensor_parallel_size", "pipeline_parallel_size", "nnodes",
                  "max_model_len", "kv_cache_dtype", "block_size", "dtype", "quantization",
                  "enable_expert_parallel", "speculative_config", "vllm_version")

SRC = "parallel_state.py:1165"


def hello_from_args(args):
    return {
        "type": "hello",
        "model": args.model,
        "tensor_parallel_size": args.tensor_parallel_size,
        "pipeline_parallel_size": args.pipeline_parallel_size,
        "nnodes": args.nnodes,
        "node_rank": args.node_rank,
        "max_model_len": args.max_model_len,
        "kv_cache_dtype": args.kv_cache_dtype,
        "block_size": args.block_size,
        "dtype": args.dtype,
        "quantization": args.quantization,
        "enable_expert_parallel": bool(args.enable_expert_parallel),
        "speculative_config": args.speculative_config,
        "vllm_version": fingerprint.release_version(),
        # Not compared: each rank's NCCL picks its own network; the head
        # decodes at the pace of the slower one.
        "nccl_net": args.nccl_road.net if getattr(args, "nccl_road", None) else None,
    }


def mismatches(mine, theirs):
    """Return a human readable description of differing fields, or ''."""
    diffs = []
    for k in CHECKED_FIELDS:
        if mine.get(k) != theirs.get(k):
            diffs.append(f"{k}: {mine.get(k)!r} (node rank {mine.get('node_rank')}) != "
                         f"{theirs.get(k)!r} (node rank {theirs.get('node_rank')})")
    return "; ".join(diffs)


class Peer:
    def __init__(self, sock, rank, addr):
        self.sock = sock
        self.rank = rank
        self.addr = addr
        self.rfile = sock.makefile("rb")
        self.wlock = threading.Lock()
        self.nccl_net = None

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        with self.wlock:
            self.sock.sendall(data)

    def recv(self, timeout):
        self.sock.settimeout(timeout)
        line = self.rfile.readline()
        if not line:
            raise EOFError("connection closed by peer")
        return json.loads(line)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


VLLM_PKG = "/usr/local/lib/python3.11/dist-packages/vllm/"


def _nccl_failed(this_road):
    """The rank's first NCCL communicator fails: no network plugin is left (NCCL_NET=IB without a verbs
    device). vLLM 0.33.0's TP group creates it with pynccl (pynccl_wrapper.py NCCL_CHECK raises
    RuntimeError(f"NCCL error: {error_str}") + "\nLast error:\n" + ncclGetLastError());
    with VLLM_DISTRIBUTED_USE_SPLIT_GROUP=1 torch creates it first, eagerly, and raises
    DistBackendError (torch/csrc/distributed/c10d/NCCLUtils.hpp C10D_NCCL_CHECK,
    getNcclErrorDetailStr; file, line and version as measured with torch 2.11). The error string is
    NCCL's ncclGetErrorString(ncclInvalidUsage) (src/init.cc). The worker process logs
    "WorkerProc failed to start." (v1/executor/multiproc_executor.py:1057) and the rank exits 1."""
    detail = "Last error:\n" + nccl.last_error(this_road)
    usage = "invalid usage (run with NCCL_DEBUG=WARN for details)"
    if nccl.uses_split_group():
        exc_line = (f"torch.distributed.DistBackendError: NCCL error in: "
                    f"/pytorch/torch/csrc/distributed/c10d/NCCLUtils.cpp:93, {usage}, NCCL version "
                    f"{nccl.NCCL_VERSION}\nncclInvalidUsage: This usually reflects invalid usage of NCCL "
                    f"library.\n{detail}")
        frames = [(VLLM_PKG + "distributed/parallel_state.py", 1965, "init_distributed_environment",
                   "_init_process_group_for_split_group("),
                  (VLLM_PKG + "distributed/parallel_state.py", 1765, "_init_process_group_for_split_group",
                   "torch.distributed.init_process_group(")]
    else:
        exc_line = f"RuntimeError: NCCL error: {usage}\n{detail}"
        frames = [(VLLM_PKG + "v1/worker/gpu_worker.py", 504, "init_device", "init_worker_distributed_environment("),
                  (VLLM_PKG + "v1/worker/gpu_worker.py", 1723, "init_worker_distributed_environment",
                   "ensure_model_parallel_initialized("),
                  (VLLM_PKG + "distributed/parallel_state.py", 2418, "ensure_model_parallel_initialized",
                   "initialize_model_parallel("),
                  (VLLM_PKG + "distributed/parallel_state.py", 2175, "initialize_model_parallel",
                   "_TP = init_model_parallel_group("),
                  (VLLM_PKG + "distributed/device_communicators/cuda_communicator.py", 108, "__init__",
                   "self.pynccl_comm = PyNcclCommunicator("),
                  (VLLM_PKG + "distributed/device_communicators/pynccl.py", 163, "__init__",
                   "self._init_comm(device)"),
                  (VLLM_PKG + "distributed/device_communicators/pynccl.py", 180, "_init_comm",
                   "self.comm: ncclComm_t = self.nccl.ncclCommInitRank("),
                  (VLLM_PKG + "distributed/device_communicators/pynccl_wrapper.py", 498, "ncclCommInitRank",
                   "self.NCCL_CHECK("),
                  (VLLM_PKG + "distributed/device_communicators/pynccl_wrapper.py", 464, "NCCL_CHECK",
                   'raise RuntimeError(f"NCCL error: {error_str}")')]
    log.error("multiproc_executor.py:1057", "WorkerProc failed to start.")
    fatal("multiproc_executor.py:1057", exc_line, frames)


def form_tp_group(args, peer_nets=()):
    """This rank's part of the TP group's NCCL communicator, once the rendezvous is complete.

    Prints NCCL's network lines (at the rank's NCCL_DEBUG), fails the rank the way vLLM does
    when NCCL has no network, else records in args.nccl_net the network the pair decodes over
    (Socket when either rank uses sockets; server.py slows decoding by
    nccl.SOCKET_DECODE_FACTOR then)."""
    this_road = args.nccl_road
    nccl.emit(this_road)
    if this_road.net is None:
        _nccl_failed(this_road)
    nets = [this_road.net] + [net for net in peer_nets if net]
    args.nccl_net = "Socket" if "Socket" in nets else this_road.net
    return args.nccl_net


def _addr_in_use(port):
    fatal("socket.py:1", "torch.distributed.DistNetworkError: The server socket has failed to "
          f"listen on any local network address. port: {port}, useIpv6: false, code: -98, "
          "name: EADDRINUSE, message: address already in use",
          [("/opt/vllm_sim/torch/distributed/rendezvous.py", 189, "_create_c10d_store",
            "return TCPStore(host_name=hostname, port=port, world_size=world_size, is_master=True)")])


def _listen(addr, port):
    """Listen like torch's TCPStore server: on every address (dual-stack
    where IPv6 exists), whatever --master-addr is -- measured on vLLM 0.33.0
    with torch 2.13, `ss` shows *:<master port>. --master-addr only tells the
    workers where to dial. Keeping the port to the fabric is the host's job
    (sparkfleet-port-guard)."""
    del addr  # torch does not bind it
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            s.bind((host, port))
            s.listen(16)
            return s
        except OSError as e:
            s.close()
            if e.errno == errno.EADDRINUSE:
                _addr_in_use(port)
            if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL):
                continue
            fatal(SRC, f"torch.distributed.DistNetworkError: failed to listen on {host}:{port}: {e}")
    fatal(SRC, f"torch.distributed.DistNetworkError: failed to listen on port {port}")


def head_rendezvous(args, stop_event, timeout):
    """Wait for nnodes-1 headless nodes. Returns list of Peer."""
    addr, port = args.master_addr, args.master_port
    need = args.nnodes - 1
    lsock = _listen(addr, port)
    lsock.settimeout(0.5)
    args.nccl_road = nccl.road()
    mine = hello_from_args(args)
    log.info(SRC, f"TCPStore listening on {addr}:{port}; waiting for {need} headless "
                  f"node(s) to join (timeout {timeout:g}s)")
    peers = {}
    deadline = time.monotonic() + timeout
    while len(peers) < need:
        if stop_event.is_set():
            log.info(SRC, "Shutdown requested while waiting for headless nodes")
            raise SimExit(0)
        if time.monotonic() > deadline:
            fatal(SRC, f"TimeoutError: timed out waiting for {need - len(peers)} headless "
                       f"node(s) to join at {addr}:{port}")
        try:
            conn, caddr = lsock.accept()
        except socket.timeout:
            continue
        peer = Peer(conn, None, caddr)
        try:
            hello = peer.recv(10)
            if hello.get("type") != "hello":
                raise ValueError("unexpected message")
        except (OSError, ValueError, EOFError) as e:
            log.warning(SRC, f"ignoring bad rendezvous connection from {caddr[0]}: {e}")
            peer.close()
            continue
        rank = hello.get("node_rank")
        diff = mismatches(mine, hello)
        if not diff and (not isinstance(rank, int) or not 0 < rank < args.nnodes):
            diff = f"node_rank: {rank!r} is not a valid headless rank for nnodes={args.nnodes}"
        if not diff and rank in peers:
            diff = f"node_rank: {rank} already joined"
        if diff:
            msg = (f"Configuration mismatch between node rank 0 and node rank {rank} "
                   f"({caddr[0]}): {diff}")
            try:
                peer.send({"type": "reject", "error": msg})
            except OSError:
                pass
            peer.close()
            fatal(SRC, f"RuntimeError: {msg}")
        peer.rank = rank
        peer.nccl_net = hello.get("nccl_net")
        peer.send(dict(mine, type="welcome"))
        peers[rank] = peer
        log.info(SRC, f"Headless node rank {rank} joined from {caddr[0]}:{caddr[1]} "
                      f"({len(peers)}/{need})")
    log.info(SRC, f"world_size={args.tensor_parallel_size * args.pipeline_parallel_size} "
                  f"rank=0 local_rank=0 distributed_init_method=tcp://{addr}:{port} backend=nccl")
    threading.Thread(target=_reject_late, args=(lsock, mine), daemon=True).start()
    form_tp_group(args, [peer.nccl_net for peer in peers.values()])
    return list(peers.values())


def _reject_late(lsock, mine):
    """Keep the store port held; refuse late joiners (rendezvous is complete)."""
    lsock.settimeout(None)
    while True:
        try:
            conn, caddr = lsock.accept()
        except OSError:
            return
        peer = Peer(conn, None, caddr)
        try:
            peer.recv(5)
            peer.send({"type": "reject", "error": "rendezvous already complete; restart the "
                                                  "head node (node rank 0) to rejoin"})
        except (OSError, ValueError, EOFError):
            pass
        log.warning(SRC, f"refused late rendezvous connection from {caddr[0]}")
        peer.close()


def worker_rendezvous(args, stop_event, timeout):
    addr, port = args.master_addr, args.master_port
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        if stop_event.is_set():
            raise SimExit(0)
        attempt += 1
        try:
            sock = socket.create_connection((addr, port), timeout=2)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                fatal(SRC, f"TimeoutError: timed out after {timeout:g}s connecting to the head "
                           f"node TCPStore at {addr}:{port} (last error: {e})")
            log.info(SRC, f"Waiting for head node TCPStore at {addr}:{port} "
                          f"(attempt {attempt}: {e.strerror or e})")
            stop_event.wait(1.0)
    peer = Peer(sock, 0, (addr, port))
    args.nccl_road = nccl.road()
    mine = hello_from_args(args)
    try:
        peer.send(mine)
        reply = peer.recv(30)
    except (OSError, ValueError, EOFError) as e:
        fatal(SRC, f"RuntimeError: rendezvous with head node {addr}:{port} failed: {e}")
    if reply.get("type") == "reject":
        fatal(SRC, f"RuntimeError: {reply.get('error')}")
    diff = mismatches(mine, reply)
    if diff:
        fatal(SRC, f"RuntimeError: Configuration mismatch between node rank "
                   f"{args.node_rank} and node rank 0 ({addr}): {diff}")
    log.info(SRC, f"Joined head node at {addr}:{port} as node rank {args.node_rank}; "
                  f"world_size={args.tensor_parallel_size * args.pipeline_parallel_size}")
    form_tp_group(args, [reply.get("nccl_net")])
    return peer


def start_heartbeat(peer, on_lost):
    """Send heartbeats and watch for the peer; call on_lost(reason) once on failure."""
    fired = threading.Event()

    def lost(reason):
        if not fired.is_set():
            fired.set()
            on_lost(peer, reason)

    def sender():
        while not fired.is_set():
            try:
                peer.send({"type": "hb", "t": time.time()})
            except OSError as e:
                lost(f"send failed: {e}")
                return
            time.sleep(HEARTBEAT_INTERVAL)

    def reader():
        while not fired.is_set():
            try:
                msg = peer.recv(HEARTBEAT_TIMEOUT)
            except socket.timeout:
                lost(f"no heartbeat for {HEARTBEAT_TIMEOUT:g}s")
                return
            except (OSError, EOFError, ValueError) as e:
                lost(str(e) or type(e).__name__)
                return
            if msg.get("type") == "reject":
                lost(msg.get("error", "rejected"))
                return

    threading.Thread(target=sender, daemon=True).start()
    threading.Thread(target=reader, daemon=True).start()
