# -*- coding: utf-8 -*-
"""The fleet endpoint's HAProxy runtime API: read server states, drain, ready
or put a head in maintenance, and wait (bounded) until it has no sessions.

Stdlib only, so the module runs on any endpoint host; unit tested against a
fake unix socket server (tests/unit/test_haproxy.py).

Two views of a server are combined:

* ``show stat`` (CSV): live counters, ``scur`` (current sessions), the
  ``status`` text (``UP``, ``DOWN 1/2``, ``DRAIN``, ``MAINT``, ``no check``...)
  and the last check's result;
* ``show servers state <backend>``: the admin state as a bit field
  (``srv_admin_state``) and the operational state (``srv_op_state``). The
  status text alone is ambiguous (a drained server that fails its checks shows
  ``DOWN``), so the admin state is always taken from the bits.
"""

from __future__ import annotations

import csv
import io
import socket
import time

# What the module can set; "ready" clears both drain and maintenance.
STATES = ("ready", "drain", "maint")

# srv_admin_state bits (HAProxy include/haproxy/server-t.h, enum srv_admin).
ADMIN_FMAINT = 0x01   # forced maintenance (runtime API / stats page)
ADMIN_IMAINT = 0x02   # inherited maintenance (tracked server)
ADMIN_CMAINT = 0x04   # configured maintenance ("disabled" in the config)
ADMIN_FDRAIN = 0x08   # forced drain (runtime API)
ADMIN_IDRAIN = 0x10   # inherited drain
ADMIN_RMAINT = 0x20   # maintenance because the address did not resolve
ADMIN_HMAINT = 0x40   # maintenance because of a hostname change
ADMIN_MAINT = ADMIN_FMAINT | ADMIN_IMAINT | ADMIN_CMAINT | ADMIN_RMAINT | ADMIN_HMAINT
ADMIN_DRAIN = ADMIN_FDRAIN | ADMIN_IDRAIN

# srv_op_state values (enum srv_state).
OP_STATES = {0: "stopped", 1: "starting", 2: "running", 3: "stopping"}

# Answers of the runtime API that mean a command was refused.
ERROR_PREFIXES = ("no such", "unknown command", "can't find", "permission denied", "require", "invalid",
                  "unexpected", "'set server", "error")


class HAProxyError(Exception):
    """The runtime API could not be reached, refused a command, or a wait ran out."""


def send_command(socket_path, command, timeout=10.0):
    """Send one command to the runtime API (non-interactive mode) and return
    its whole answer; HAProxy closes the connection after answering."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
        sock.sendall(command.encode("utf-8") + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise HAProxyError("cannot talk to the HAProxy runtime API at %s (%s): %s"
                           % (socket_path, command, exc)) from exc
    finally:
        sock.close()
    return b"".join(chunks).decode("utf-8", "replace")


def _refused(answer):
    text = answer.strip().lower()
    return bool(text) and text.startswith(ERROR_PREFIXES)


def _int(value, default=0):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def parse_show_stat(text):
    """``show stat`` CSV -> list of row dicts keyed by field name.

    The header line starts with ``# ``; every line ends with a trailing comma
    (an unnamed, empty last field, dropped here); blank lines are skipped.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("#"):
        raise HAProxyError("unexpected answer to 'show stat': %r" % text[:200])
    header = next(csv.reader([lines[0].lstrip("#").strip()]))
    rows = []
    for values in csv.reader(io.StringIO("\n".join(lines[1:]))):
        row = {}
        for name, value in zip(header, values):
            if name:
                row[name] = value
        if row.get("pxname"):
            rows.append(row)
    return rows


def parse_servers_state(text):
    """``show servers state [<backend>]`` -> {(backend, server): dict}.

    The first line is the format version (1), the second the ``#`` header of
    space-separated field names, then one line per server; values never hold
    spaces ("-" stands for empty).
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise HAProxyError("empty answer to 'show servers state'")
    if _refused(lines[0]):
        raise HAProxyError("'show servers state' refused: %s" % lines[0].strip())
    if lines[0].strip() != "1":
        raise HAProxyError("unsupported 'show servers state' format version %r" % lines[0].strip())
    if len(lines) < 2 or not lines[1].startswith("#"):
        raise HAProxyError("'show servers state' has no header line")
    header = lines[1].lstrip("#").split()
    found = {}
    for line in lines[2:]:
        if line.startswith("#"):
            continue
        values = line.split()
        row = dict(zip(header, values))
        if "be_name" in row and "srv_name" in row:
            found[(row["be_name"], row["srv_name"])] = row
    return found


def admin_state(bits):
    """The state this module speaks of, from srv_admin_state bits."""
    if bits & ADMIN_MAINT:
        return "maint"
    if bits & ADMIN_DRAIN:
        return "drain"
    return "ready"


def health_of(status):
    """Health from the ``show stat`` status text: up, down, or no check.

    Transitional texts (``UP 1/2`` going down, ``DOWN 1/2`` coming up) count
    as what the server is now; ``DRAIN``/``NOLB`` servers are up but take no
    new requests; ``MAINT`` says nothing about health (checks are paused).
    """
    word = status.strip().upper()
    if word.startswith(("UP", "DRAIN", "NOLB")):
        return "up"
    if word.startswith("DOWN"):
        return "down"
    if word.startswith("NO CHECK"):
        return "no check"
    if word.startswith("MAINT"):
        return "maint"
    return word.lower() or "unknown"


def merge(stat_rows, state_rows, backend):
    """Combine both views into {server: info} for one backend."""
    servers = {}
    for row in stat_rows:
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        name = row["svname"]
        status = row.get("status", "")
        state = state_rows.get((backend, name), {})
        bits = _int(state.get("srv_admin_state"), 0)
        servers[name] = {
            "status": status,
            "admin_state": admin_state(bits) if state else admin_state_from_status(status),
            "admin_bits": bits,
            "operational_state": OP_STATES.get(_int(state.get("srv_op_state"), -1), "unknown"),
            "health": health_of(status),
            "scur": _int(row.get("scur")),
            "qcur": _int(row.get("qcur")),
            "stot": _int(row.get("stot")),
            "check_status": row.get("check_status", ""),
            "check_desc": row.get("check_desc", ""),
            "addr": row.get("addr", ""),
        }
        servers[name]["serving"] = servers[name]["admin_state"] == "ready" and servers[name]["health"] in ("up", "no check")
    return servers


def admin_state_from_status(status):
    """Fallback when ``show servers state`` lacks the server (should not happen)."""
    word = status.strip().upper()
    if word.startswith("MAINT"):
        return "maint"
    if word.startswith("DRAIN") or "(DRAIN)" in word:
        return "drain"
    return "ready"


class Endpoint:
    """One backend of the endpoint's HAProxy, through its runtime API socket."""

    def __init__(self, socket_path, backend, send=send_command, clock=time.monotonic, sleep=time.sleep):
        self.socket_path = socket_path
        self.backend = backend
        self._send = send
        self._clock = clock
        self._sleep = sleep

    def send(self, command):
        return self._send(self.socket_path, command)

    def servers(self):
        """{server: info} for every server of the backend."""
        stat_text = self.send("show stat")
        state_text = self.send("show servers state %s" % self.backend)
        if state_text.strip().lower().startswith("can't find backend"):
            raise HAProxyError("HAProxy at %s has no backend %s" % (self.socket_path, self.backend))
        servers = merge(parse_show_stat(stat_text), parse_servers_state(state_text), self.backend)
        if not servers:
            raise HAProxyError("backend %s has no servers (or does not exist)" % self.backend)
        return servers

    def server(self, name, servers=None):
        servers = self.servers() if servers is None else servers
        if name not in servers:
            raise HAProxyError("backend %s has no server %s (it has: %s)"
                               % (self.backend, name, ", ".join(sorted(servers))))
        return servers[name]

    def set_state(self, name, state, check_mode=False):
        """Set the admin state; True when it changed (or would, in check mode)."""
        if state not in STATES:
            raise HAProxyError("unknown state %r (one of %s)" % (state, ", ".join(STATES)))
        if self.server(name)["admin_state"] == state:
            return False
        if check_mode:
            return True
        command = "set server %s/%s state %s" % (self.backend, name, state)
        answer = self.send(command)
        if answer.strip():
            raise HAProxyError("HAProxy refused '%s': %s" % (command, answer.strip()))
        now = self.server(name)["admin_state"]
        if now != state:
            raise HAProxyError("after '%s' the server is %s, not %s" % (command, now, state))
        return True

    def wait_idle(self, name, timeout, interval=1.0, raise_on_timeout=True):
        """Wait until the server has no current sessions (scur 0).

        Returns (seconds waited, sessions still open). At the timeout, raises
        naming the server and the sessions left, or with raise_on_timeout
        false returns them."""
        start = self._clock()
        while True:
            current = self.server(name)["scur"]
            waited = self._clock() - start
            if current == 0:
                return waited, 0
            if waited >= timeout:
                if not raise_on_timeout:
                    return waited, current
                raise HAProxyError("%s/%s still has %d session(s) in flight after %ss of draining (timeout %ss)"
                                   % (self.backend, name, current, int(waited), timeout))
            self._sleep(min(interval, max(timeout - waited, 0.05)))

    def cut_sessions(self, name):
        """Close every session still open to the server (the drain bound was reached)."""
        command = "shutdown sessions server %s/%s" % (self.backend, name)
        answer = self.send(command)
        if answer.strip():
            raise HAProxyError("HAProxy refused '%s': %s" % (command, answer.strip()))

    def others_serving(self, name, servers=None):
        """Other servers that take new requests now (ready and passing checks)."""
        servers = self.servers() if servers is None else servers
        return sorted(other for other, info in servers.items() if other != name and info["serving"])
