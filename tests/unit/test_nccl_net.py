"""sparkfleet_nccl_net: the network NCCL reports in a rank's log, the problem sentence, the status column."""

import importlib.util
import os

from conftest import ROOT
from sparkfleet_nccl_net import add_column, nccl_net, nccl_net_problems, pair_net

# NCCL 2.28.9's own lines (src/debug.cc prefix; net_ib.cc, net_socket.cc, plugin/net.cc, init.cc texts)
# interleaved with vLLM's, as a rank's journal holds them.
SOCKET_LOG = """\
INFO 12-03 22:44:01 [parallel_state.py:1165] world_size=2 rank=0 local_rank=0 backend=nccl
spark-a1:412:430 [0] NCCL INFO NET/IB : No device found.
spark-a1:412:430 [0] NCCL INFO NET/IB : Using [RO]; OOB enp1s0f1np1:10.0.0.1<0>
spark-a1:412:430 [0] NCCL INFO Failed to initialize NET plugin IB
spark-a1:412:430 [0] NCCL INFO NET/Socket : Using [0]enp1s0f1np1:10.0.0.1<0>
spark-a1:412:430 [0] NCCL INFO Initialized NET plugin Socket
spark-a1:412:430 [0] NCCL INFO Assigned NET plugin Socket to comm
spark-a1:412:430 [0] NCCL INFO Using network Socket
INFO 12-03 22:44:09 [gpu_model_runner.py:2602] Starting to load model /models/dsv4...
"""
IB_LOG = """\
spark-a2:77:91 [0] NCCL INFO NCCL_IB_HCA set to rocep1s0f1,roceP2p1s0f1
spark-a2:77:91 [0] NCCL INFO NET/IB : Using [0]rocep1s0f1:1/RoCE [1]roceP2p1s0f1:1/RoCE [RO]; OOB enp1s0f1np1:10.0.0.2<0>
spark-a2:77:91 [0] NCCL INFO Using network IB\r
"""
FAILED_LOG = """\

[2026-12-03 22:44:01] spark-a1:412:430 [0] plugin/net.cc:379 NCCL WARN Failed to initialize any NET plugin
RuntimeError: NCCL error: invalid usage (run with NCCL_DEBUG=WARN for details)
"""


def _filters():
    path = os.path.join(ROOT, "plugins", "filter", "sparkfleet_nccl_net.py")
    spec = importlib.util.spec_from_file_location("sparkfleet_nccl_net_filter", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def test_nccl_net_reads_the_last_using_network_line():
    assert nccl_net(SOCKET_LOG) == "Socket"
    assert nccl_net(IB_LOG) == "IB"
    # a restart within the read: the later communicator counts
    assert nccl_net(SOCKET_LOG + IB_LOG) == "IB"
    assert nccl_net(IB_LOG + SOCKET_LOG) == "Socket"
    # below INFO, failed before a network, or nothing read
    for text in (FAILED_LOG, "", None, "Using network IB", "NCCL INFO NET/IB : Using [0]rocep1s0f1:1/RoCE"):
        assert nccl_net(text) is None


def test_pair_net_words():
    assert pair_net("IB", "IB") == "IB"
    assert pair_net("Socket", "IB") == pair_net("IB", "Socket") == pair_net(None, "Socket") == "Socket"
    assert pair_net(None, None) == pair_net("IB", None) == pair_net(None, "IB") == "unknown"


def test_sockets_with_rdma_is_a_problem_naming_pair_host_and_causes():
    problems = nccl_net_problems("a", [{"host": "spark-a1", "log": SOCKET_LOG, "rdma": True},
                                       {"host": "spark-a2", "log": IB_LOG, "rdma": True}])
    assert len(problems) == 1
    assert problems[0].startswith("pair a: spark-a1 NCCL runs over sockets (Using network Socket) although the "
                                  "node has RDMA devices; ")
    for cause in ("NCCL_NET unset", "/dev/infiniband not passed to the container", "no verbs device"):
        assert cause in problems[0]


def test_sockets_without_rdma_or_an_unknown_network_is_not_a_problem():
    assert nccl_net_problems("a", [{"host": "spark-a1", "log": SOCKET_LOG, "rdma": False}]) == []
    assert nccl_net_problems("a", [{"host": "spark-a1", "log": "", "rdma": True},
                                   {"host": "spark-a2", "net": None, "rdma": True},
                                   {"host": "spark-a3", "net": "IB", "rdma": True}]) == []
    assert len(nccl_net_problems("b", [{"host": "spark-b1", "net": "Socket", "rdma": True}])) == 1


def test_add_column_keeps_the_table_aligned():
    lines = ["pair  serving", "a     yes", "bb    NO (head API down)"]
    out = add_column(lines, ["IB", "Socket"], "nccl")
    column = len("bb    NO (head API down)  ")
    assert [line[:column].rstrip() for line in out] == lines
    assert [line[column:] for line in out] == ["nccl", "IB", "Socket"]
    assert add_column([], [], "nccl") == []


def test_filters():
    filters = _filters()
    assert filters["sparkfleet_nccl_net"](SOCKET_LOG) == "Socket"
    assert filters["sparkfleet_nccl_net"](None) is None
    assert filters["sparkfleet_nccl_pair_net"]("IB", "") == "unknown"
    ranks = [{"host": "spark-a1", "net": "Socket", "rdma": True}, {"host": "spark-a2", "net": "IB", "rdma": True}]
    assert filters["sparkfleet_nccl_net_problems"](ranks, "a")[0].startswith("pair a: spark-a1 NCCL runs over sockets")
    hostvars = {"spark-a1": {"spark_health_status_nccl_net": "IB"}, "spark-a2": {"spark_health_status_nccl_net": "IB"},
                "spark-b1": {"spark_health_status_nccl_net": "Socket"}, "spark-b2": {}}
    rows = [{"pair": "a", "head": "spark-a1", "worker": "spark-a2"},
            {"pair": "b", "head": "spark-b1", "worker": "spark-b2"},
            {"pair": "c", "head": "spark-c1", "worker": "spark-c2"}]
    rows = filters["sparkfleet_nccl_status_rows"](rows, hostvars)
    assert [row["nccl"] for row in rows] == ["IB", "Socket", "unknown"]
    table = filters["sparkfleet_nccl_status_table"](["pair", "a", "b", "c"], rows)
    assert table == ["pair  nccl", "a     IB", "b     Socket", "c     unknown"]
