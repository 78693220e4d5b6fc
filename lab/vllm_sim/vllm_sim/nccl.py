"""Which network NCCL picks when the TP group forms, and what it logs about it.

Real vLLM creates the TP group's first NCCL communicator in the worker after
torch.distributed's rendezvous (vllm/distributed/device_communicators/
pynccl.py, `ncclCommInitRank`). NCCL then initialises its network plugins in
order, IB before Socket (src/plugin/net.cc `ncclNetInit`), keeps only the one
named by NCCL_NET when it is set, and uses the first that finds a device. The
IB plugin needs the verbs devices (`/dev/infiniband/uverbs*`) inside the
container: without them it finds no device, and with NCCL_NET=IB no plugin is
left, so the communicator fails with ncclInvalidUsage.

Wording, flags and order are NCCL 2.28.9's (the release the measurements in
shared/reference/spark-facts.md "The real road" were taken with), read from
its source (github.com/NVIDIA/nccl, tag v2.28.9-1):

* the line prefix, `host:pid:tid [cudaDev] NCCL INFO ` and, for WARN, a blank
  line then `[%F %T] host:pid:tid [cudaDev] file:line NCCL WARN ` (WARN is the
  only level with a timestamp by default): src/debug.cc `ncclDebugLog`; the
  host name is cut at the first dot (src/misc/utils.cc `getHostName`);
* which lines print: a level at or above INFO prints INFO lines whose
  subsystem flags meet NCCL_DEBUG_SUBSYS (default INIT,BOOTSTRAP,ENV; `^`
  inverts), WARN lines print at WARN and above whatever the subsystems
  (src/debug.cc `ncclDebugInit`, src/include/debug.h `WARN`/`INFO`); level
  order NONE < VERSION < WARN < INFO < ABORT < TRACE (src/include/nccl_common.h);
* `NCCL_IB_HCA set to %s`, `NET/IB : No device found.`,
  `NET/IB : Using%s %s; OOB %s:%s` (devices ` [%d]%s:%d/%s`, `RoCE` for an
  Ethernet link layer): src/transport/net_ib.cc `ncclIbInitDevices`;
* `NET/Socket : Using%s` (` [%d]%s:%s`, address `host<port>`):
  src/transport/net_socket.cc `ncclNetSocketInit`, src/misc/socket.cc
  `ncclSocketToString`;
* `Failed to initialize NET plugin %s`, `Initialized NET plugin %s`,
  `Assigned NET plugin %s to comm`, and the WARN
  `plugin/net.cc:379 ... Failed to initialize any NET plugin`:
  src/plugin/net.cc; `Using network %s`: src/init.cc:428.

The measured run (NCCL 2.28.9, torch 2.11, a GPU machine without verbs
devices) saw `NET/IB : No device found.`, then with NCCL_NET=IB the WARN
above, else `NET/Socket : Using [0]eth0:...` and `Using network Socket`.

Not simulated: the `NCCL version ...` banner (the build torch 2.14 bundles is
not measured), the external-plugin probe lines (`NET/Plugin: ...`, they depend
on what the image ships), bootstrap and per-device detail lines (NET only:
speed, PCI path), the `file:line -> 5` INFO trail of a failed init, and
NCCL_DEBUG_FILE / NCCL_DEBUG_TIMESTAMP_* (the default format is used).
"""

import glob
import os
import socket
import struct
import sys
import threading
import time

# Where libibverbs finds the verbs devices; the serving container sees them
# only with `--device /dev/infiniband`. VLLM_SIM_DEV_INFINIBAND points the
# simulator elsewhere (unit tests; a directory holding files named uverbs0...).
DEV_INFINIBAND = "/dev/infiniband"
DEV_INFINIBAND_ENV = "VLLM_SIM_DEV_INFINIBAND"
# The kernel's verbs class: uverbsN/ibdev names the RDMA device behind a node.
SYSFS_INFINIBAND_VERBS = "/sys/class/infiniband_verbs"

# Decode over sockets. A TP=2 decode step all-reduces small tensors twice per
# layer: it is latency-bound, and NCCL's socket transport (kernel TCP through a
# host-memory proxy thread) has many times RDMA's per-message latency. The
# measured road says such a decode "loses most of its speed"; 3x the token
# time keeps a third of it, in line with that and far below anything the
# performance gate (0.9 of the reference) would pass.
SOCKET_DECODE_FACTOR = 3.0

# NCCL 2.28.9 levels and subsystem flags (src/include/nccl_common.h).
LEVELS = {"VERSION": 1, "WARN": 2, "INFO": 3, "ABORT": 4, "TRACE": 5}
LOG_WARN, LOG_INFO = 2, 3
SUBSYS = {"INIT": 0x1, "COLL": 0x2, "P2P": 0x4, "SHM": 0x8, "NET": 0x10, "GRAPH": 0x20, "TUNING": 0x40,
          "ENV": 0x80, "ALLOC": 0x100, "CALL": 0x200, "PROXY": 0x400, "NVLS": 0x800, "BOOTSTRAP": 0x1000,
          "REG": 0x2000, "PROFILE": 0x4000, "RAS": 0x8000, "ALL": ~0}
INIT, NET, ENV = SUBSYS["INIT"], SUBSYS["NET"], SUBSYS["ENV"]
DEFAULT_MASK = SUBSYS["INIT"] | SUBSYS["BOOTSTRAP"] | SUBSYS["ENV"]

# The NCCL a measured torch reported (spark-facts.md); torch 2.14, which vLLM
# 0.33.0 pins, may bundle another 2.28/2.29 build.
NCCL_VERSION = "2.28.9"
# Every Spark has one GPU: NCCL's [cudaDev] is 0 on both ranks.
CUDA_DEV = 0
# NCCL's IB transport prints [RO] when libibverbs exports IBVERBS_1.8
# (ibv_reg_mr_iova2; rdma-core 28+, every current CUDA image):
# net_ib.cc ncclIbRelaxedOrderingCapable.
RELAXED_ORDERING = "[RO]"


class Road:
    """The outcome of NCCL's network selection on one rank."""

    def __init__(self, net, lines):
        self.net = net          # "IB", "Socket", or None (no plugin: the communicator fails)
        self.lines = lines      # [(level, flags, src, text)] in NCCL's order


def dev_dir(env=None):
    env = os.environ if env is None else env
    return env.get(DEV_INFINIBAND_ENV) or DEV_INFINIBAND


def verbs_devices(directory):
    """The uverbs* names in the verbs device directory (what libibverbs can open)."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(directory, "uverbs*")))


def _match(spec, name):
    """NCCL's list match (misc/utils.cc matchIfList): prefixes, `=` exact, `^` excludes."""
    exclude = spec.startswith("^")
    spec = spec[1:] if exclude else spec
    exact = spec.startswith("=")
    spec = spec[1:] if exact else spec
    hit = any((name == item if exact else name.startswith(item))
              for item in (i.split(":")[0].strip() for i in spec.split(",")) if item)
    return hit != exclude


def _ipv4_of(name):
    try:
        import fcntl  # pylint: disable=import-outside-toplevel
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            packed = fcntl.ioctl(sock.fileno(), 0x8915,  # SIOCGIFADDR
                                 struct.pack("256s", name[:15].encode()))
        return socket.inet_ntoa(packed[20:24])
    except (OSError, ImportError, ValueError):
        return None


def find_interface(env):
    """(name, IPv4) NCCL's socket code picks (misc/socket.cc ncclFindInterfaces), first match only.

    Falls back to the first name asked for (else lo) with VLLM_HOST_IP when no
    interface matches; real NCCL would fail its bootstrap there, which the
    simulator leaves to the rendezvous.
    """
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    spec = env.get("NCCL_SOCKET_IFNAME", "")
    specs = [spec] if len(spec) > 1 else ["ib", "^docker,lo,virbr", "docker", "lo", "virbr"]
    for one in specs:
        for name in names:
            if _match(one, name):
                address = _ipv4_of(name)
                if address:
                    return name, address
    first = spec.lstrip("^=").split(",")[0].split(":")[0] if len(spec) > 1 and not spec.startswith("^") else "lo"
    return first or "lo", env.get("VLLM_HOST_IP") or "127.0.0.1"


def hca_ports(env, devices):
    """[(RDMA device, port)] the IB transport lists: NCCL_IB_HCA's names (port 1 unless `name:port`),
    else the devices' own names from sysfs (the uverbs name where sysfs does not tell)."""
    spec = env.get("NCCL_IB_HCA", "")
    if spec and not spec.startswith("^"):
        out = []
        for item in spec.lstrip("=").split(","):
            name, _, port = item.strip().partition(":")
            if name:
                out.append((name, int(port) if port.isdigit() else 1))
        return out
    out = []
    for dev in devices:
        try:
            with open(os.path.join(SYSFS_INFINIBAND_VERBS, dev, "ibdev"), encoding="ascii") as handle:
                name = handle.read().strip() or dev
        except OSError:
            name = dev
        if not spec or _match(spec, name):
            out.append((name, 1))
    return out


def road(env=None, directory=None):
    """NCCL's network selection for this rank's environment and verbs devices (pure but for the
    device and interface look-ups)."""
    env = os.environ if env is None else env
    devices = verbs_devices(directory or dev_dir(env))
    iface, address = find_interface(env)
    oob = f"{iface}:{address}<0>"
    wanted = env.get("NCCL_NET") or None
    lines = []

    def info(flags, text):
        lines.append((LOG_INFO, flags, None, text))

    for plugin in ("IB", "Socket"):
        if wanted and wanted.lower() != plugin.lower():
            continue
        found = False
        if plugin == "IB":
            # ncclIbInitDevices: NCCL_IB_DISABLE=1 returns before anything is logged.
            if env.get("NCCL_IB_DISABLE", "0").strip() not in ("", "0"):
                info(INIT | NET, "Failed to initialize NET plugin IB")
                continue
            if env.get("NCCL_IB_HCA"):
                info(NET | ENV, f"NCCL_IB_HCA set to {env['NCCL_IB_HCA']}")
            listed = hca_ports(env, devices) if devices else []
            if not listed:
                info(INIT | NET, "NET/IB : No device found.")
            devs = "".join(f" [{i}]{name}:{port}/RoCE" for i, (name, port) in enumerate(listed))
            info(INIT | NET, f"NET/IB : Using{devs} {RELAXED_ORDERING}; OOB {oob}")
            found = bool(listed)
        else:
            info(INIT | NET, f"NET/Socket : Using [0]{oob}")
            found = True
        if not found:
            info(INIT | NET, f"Failed to initialize NET plugin {plugin}")
            continue
        info(INIT | NET, f"Initialized NET plugin {plugin}")
        info(INIT | NET, f"Assigned NET plugin {plugin} to comm")
        info(INIT, f"Using network {plugin}")
        return Road(plugin, lines)
    lines.append((LOG_WARN, SUBSYS["ALL"], "plugin/net.cc:379", "Failed to initialize any NET plugin"))
    return Road(None, lines)


def debug_settings(env=None):
    """(level, subsystem mask) from NCCL_DEBUG and NCCL_DEBUG_SUBSYS, as src/debug.cc reads them."""
    env = os.environ if env is None else env
    level = LEVELS.get(str(env.get("NCCL_DEBUG", "")).strip().upper(), 0)
    mask = DEFAULT_MASK
    subsys = env.get("NCCL_DEBUG_SUBSYS")
    if subsys is not None:
        invert = subsys.startswith("^")
        mask = ~0 if invert else 0
        for name in (subsys[1:] if invert else subsys).split(","):
            bit = SUBSYS.get(name.strip().upper(), 0)
            mask = (mask & ~bit) if invert else (mask | bit)
    return level, mask


def visible_lines(this_road, env=None, host=None, pid=None, tid=None, now=None):
    """The lines NCCL writes to stdout for this road at the environment's debug settings."""
    level, mask = debug_settings(env)
    host = (host or socket.gethostname()).split(".")[0]
    pid = os.getpid() if pid is None else pid
    tid = threading.get_native_id() if tid is None else tid
    out = []
    for line_level, flags, src, text in this_road.lines:
        if level < line_level or not flags & mask:
            continue
        if line_level == LOG_WARN:
            stamp = time.strftime("[%Y-%m-%d %H:%M:%S] ", time.localtime(now))
            out.append("")
            out.append(f"{stamp}{host}:{pid}:{tid} [{CUDA_DEV}] {src} NCCL WARN {text}")
        else:
            out.append(f"{host}:{pid}:{tid} [{CUDA_DEV}] NCCL INFO {text}")
    return out


def emit(this_road, env=None):
    for line in visible_lines(this_road, env):
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def last_error(this_road):
    """ncclGetLastError: the text of the last WARN (src/debug.cc keeps it whatever the level)."""
    warns = [text for level, _, _, text in this_road.lines if level == LOG_WARN]
    return warns[-1] if warns else ""


def uses_split_group(env=None):
    """VLLM_DISTRIBUTED_USE_SPLIT_GROUP=1 makes vLLM 0.33.0 create the default process group eagerly
    with its NCCL backend (distributed/parallel_state.py _init_process_group_for_split_group), so
    torch's communicator, not vLLM's pynccl one, is the first to fail."""
    env = os.environ if env is None else env
    try:
        return bool(int(env.get("VLLM_DISTRIBUTED_USE_SPLIT_GROUP", "0")))
    except ValueError:
        return False
