"""sparkfleet_haproxy: runtime API parsing and drain/ready/wait logic, against a
fake HAProxy serving a unix socket from a thread (canned, stateful answers)."""

import importlib.util
import os
import socket
import sys
import threading

import pytest

from sparkfleet_haproxy import (Endpoint, HAProxyError, admin_state, health_of, merge, parse_servers_state,
                                parse_show_stat, send_command)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Captured from HAProxy 2.6 (Debian bookworm) on the lab endpoint, trimmed to the
# fields that matter plus the odd ones ("-" and the trailing empty field).
STAT_HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
               "status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,"
               "type,rate,rate_lim,rate_max,check_status,check_code,check_duration,check_desc,addr,-,\n")
STATE_HEADER = ("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
                "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
                "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
                "srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n")
STATUS_TEXT = {"ready": "UP", "drain": "DRAIN", "maint": "MAINT"}
ADMIN_BITS = {"ready": 0, "drain": 0x08, "maint": 0x01}


def stat_row(px, sv, scur, status, check="L7OK", desc="Layer7 check passed", addr=""):
    return ("%s,%s,0,0,%d,2,,93,1,2,,0,,0,0,0,0,%s,1,1,0,5,2,4,63,,1,3,1,,93,,2,0,,17,%s,200,1,%s,%s,-,\n"
            % (px, sv, scur, status, check, desc, addr))


class FakeHAProxy:
    """A runtime API on a unix socket: one command per connection, like
    `socat stdio unix-connect:...`. Servers: name -> [admin, scur, healthy]."""

    def __init__(self, path):
        self.path = path
        self.servers = {"spark-a1": ["ready", 0, True], "spark-b1": ["ready", 0, True]}
        self.commands = []
        self.on_stat = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def status(self, name):
        admin, _, healthy = self.servers[name]
        if admin == "maint":
            return "MAINT"
        if not healthy:
            return "DOWN"
        return STATUS_TEXT[admin]

    def show_stat(self):
        if self.on_stat:
            self.on_stat(self)
        text = STAT_HEADER + stat_row("openai_api", "FRONTEND", 3, "OPEN", "", "")
        for idx, name in enumerate(self.servers):
            text += stat_row("vllm_heads", name, self.servers[name][1], self.status(name),
                             addr="10.77.0.%d1:8000" % (idx + 1))
        text += stat_row("vllm_heads", "BACKEND", 0, "UP", "", "")
        return text + stat_row("stats", "FRONTEND", 0, "OPEN", "", "") + "\n"

    def show_servers_state(self, backend):
        if backend != "vllm_heads":
            return "Can't find backend.\n"
        text = STATE_HEADER
        for idx, name in enumerate(self.servers, start=1):
            admin, _, healthy = self.servers[name]
            text += ("3 vllm_heads %d %s 10.77.0.%d1 %d %d 1 1 4 8 2 2 6 0 0 0 - 8000 - 0 0 - - 0\n"
                     % (idx, name, idx, 2 if healthy else 0, ADMIN_BITS[admin]))
        return text + "\n"

    def answer(self, command):
        self.commands.append(command)
        words = command.split()
        if command == "show stat":
            return self.show_stat()
        if words[:3] == ["show", "servers", "state"]:
            return self.show_servers_state(words[3] if len(words) > 3 else "vllm_heads")
        if words[:2] == ["set", "server"] and len(words) == 5 and words[3] == "state":
            backend, _, name = words[2].partition("/")
            if backend != "vllm_heads":
                return "No such backend.\n"
            if name not in self.servers:
                return "No such server.\n"
            self.servers[name][0] = words[4]
            return "\n"
        if words[:3] == ["shutdown", "sessions", "server"] and len(words) == 4:
            backend, _, name = words[3].partition("/")
            if backend != "vllm_heads" or name not in self.servers:
                return "No such server.\n"
            self.servers[name][1] = 0
            return "\n"
        return "Unknown command. Please enter one of the following commands only :\n  help\n"

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(self.answer(data.decode().strip()).encode())

    def close(self):
        self.sock.close()


@pytest.fixture
def haproxy(tmp_path):
    path = str(tmp_path / "admin.sock")
    if len(path) > 100:  # AF_UNIX path limit
        pytest.skip("tmp_path too long for a unix socket")
    fake = FakeHAProxy(path)
    yield fake
    fake.close()


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def endpoint(fake, clock=None):
    clock = clock or FakeClock()
    return Endpoint(fake.path, "vllm_heads", clock=clock, sleep=clock.sleep)


# --- parsing ---------------------------------------------------------------

def test_show_stat_csv_is_parsed_with_header_names_and_odd_columns():
    rows = parse_show_stat(STAT_HEADER + stat_row("vllm_heads", "spark-a1", 3, "UP 1/2", addr="10.77.0.11:8000"))
    assert len(rows) == 1
    assert rows[0]["svname"] == "spark-a1"
    assert rows[0]["scur"] == "3"
    assert rows[0]["status"] == "UP 1/2"
    assert rows[0]["check_desc"] == "Layer7 check passed"
    assert rows[0]["addr"] == "10.77.0.11:8000"
    assert "" not in rows[0]


def test_show_stat_refusal_is_an_error():
    with pytest.raises(HAProxyError, match="unexpected answer"):
        parse_show_stat("Permission denied\n")


def test_show_servers_state_parsing():
    text = STATE_HEADER + "3 vllm_heads 1 spark-a1 10.77.0.11 2 8 1 1 4 8 2 2 6 0 0 0 - 8000 - 0 0 - - 0\n\n"
    rows = parse_servers_state(text)
    assert rows[("vllm_heads", "spark-a1")]["srv_admin_state"] == "8"
    assert rows[("vllm_heads", "spark-a1")]["srv_port"] == "8000"
    with pytest.raises(HAProxyError, match="format version"):
        parse_servers_state("2\n# be_id\n")
    with pytest.raises(HAProxyError, match="refused"):
        parse_servers_state("Can't find backend.\n")


@pytest.mark.parametrize("bits,state", [(0, "ready"), (0x08, "drain"), (0x10, "drain"), (0x01, "maint"),
                                        (0x04, "maint"), (0x09, "maint"), (0x20, "maint")])
def test_admin_state_bits(bits, state):
    assert admin_state(bits) == state


@pytest.mark.parametrize("status,health", [("UP", "up"), ("UP 1/2", "up"), ("DOWN", "down"),
                                           ("DOWN 1/2", "down"), ("DRAIN", "up"), ("NOLB", "up"),
                                           ("MAINT", "maint"), ("MAINT (via vllm_heads/x)", "maint"),
                                           ("no check", "no check")])
def test_health_from_status_text(status, health):
    assert health_of(status) == health


def test_drained_server_failing_checks_is_still_drain():
    # show stat says DOWN; only the admin bits say it is drained.
    stat = parse_show_stat(STAT_HEADER + stat_row("vllm_heads", "spark-a1", 0, "DOWN", "L4CON"))
    state = parse_servers_state(STATE_HEADER + "3 vllm_heads 1 spark-a1 10.77.0.11 0 8 1 1 4 8 2 2 6 0 0 0 - "
                                               "8000 - 0 0 - - 0\n")
    info = merge(stat, state, "vllm_heads")["spark-a1"]
    assert info["admin_state"] == "drain"
    assert info["health"] == "down"
    assert info["operational_state"] == "stopped"
    assert not info["serving"]


# --- the runtime API over a real unix socket -------------------------------

def test_send_command_round_trip(haproxy):
    assert send_command(haproxy.path, "show stat").startswith("# pxname,svname")
    assert haproxy.commands == ["show stat"]


def test_unreachable_socket_names_the_path(tmp_path):
    with pytest.raises(HAProxyError, match="admin.sock"):
        send_command(str(tmp_path / "admin.sock"), "show stat")


def test_servers_reports_every_head(haproxy):
    servers = endpoint(haproxy).servers()
    assert sorted(servers) == ["spark-a1", "spark-b1"]
    assert servers["spark-a1"]["status"] == "UP"
    assert servers["spark-a1"]["admin_state"] == "ready"
    assert servers["spark-a1"]["health"] == "up"
    assert servers["spark-a1"]["serving"] is True
    assert servers["spark-a1"]["check_status"] == "L7OK"


def test_unknown_backend_and_server(haproxy):
    with pytest.raises(HAProxyError, match="no backend nope"):
        Endpoint(haproxy.path, "nope").servers()
    with pytest.raises(HAProxyError, match="no server spark-z1 .*spark-a1, spark-b1"):
        endpoint(haproxy).set_state("spark-z1", "drain")


def test_drain_then_ready_changes_once_each(haproxy):
    ep = endpoint(haproxy)
    assert ep.set_state("spark-a1", "drain") is True
    assert haproxy.servers["spark-a1"][0] == "drain"
    assert ep.server("spark-a1")["status"] == "DRAIN"
    assert ep.set_state("spark-a1", "drain") is False
    assert ep.others_serving("spark-b1") == []
    assert ep.set_state("spark-a1", "ready") is True
    assert ep.set_state("spark-a1", "ready") is False
    sets = [c for c in haproxy.commands if c.startswith("set server")]
    assert sets == ["set server vllm_heads/spark-a1 state drain", "set server vllm_heads/spark-a1 state ready"]


def test_maint_and_back(haproxy):
    ep = endpoint(haproxy)
    assert ep.set_state("spark-b1", "maint") is True
    assert ep.server("spark-b1")["admin_state"] == "maint"
    assert ep.set_state("spark-b1", "ready") is True


def test_check_mode_sends_no_set(haproxy):
    ep = endpoint(haproxy)
    assert ep.set_state("spark-a1", "drain", check_mode=True) is True
    assert haproxy.servers["spark-a1"][0] == "ready"
    assert not [c for c in haproxy.commands if c.startswith("set server")]


def test_refused_set_is_reported(haproxy):
    ep = endpoint(haproxy)
    haproxy.answer_orig = haproxy.answer
    haproxy.answer = lambda command: ("Permission denied\n" if command.startswith("set")
                                      else haproxy.answer_orig(command))
    with pytest.raises(HAProxyError, match="refused 'set server vllm_heads/spark-a1 state drain': Permission denied"):
        ep.set_state("spark-a1", "drain")


def test_wait_idle_returns_once_sessions_end(haproxy):
    haproxy.servers["spark-a1"][1] = 3

    def finish_one(fake):
        fake.servers["spark-a1"][1] = max(fake.servers["spark-a1"][1] - 1, 0)

    haproxy.on_stat = finish_one
    clock = FakeClock()
    assert endpoint(haproxy, clock).wait_idle("spark-a1", timeout=30, interval=1) == (2.0, 0)


def test_wait_idle_timeout_names_server_and_sessions_left(haproxy):
    haproxy.servers["spark-a1"][1] = 2
    clock = FakeClock()
    with pytest.raises(HAProxyError) as err:
        endpoint(haproxy, clock).wait_idle("spark-a1", timeout=5, interval=1)
    assert "vllm_heads/spark-a1 still has 2 session(s)" in str(err.value)
    assert "timeout 5s" in str(err.value)
    assert clock.now == pytest.approx(5.0)


def test_wait_idle_can_return_what_is_left_at_the_bound(haproxy):
    haproxy.servers["spark-a1"][1] = 2
    clock = FakeClock()
    assert endpoint(haproxy, clock).wait_idle("spark-a1", timeout=5, interval=1, raise_on_timeout=False) == (5.0, 2)


def test_module_cuts_the_streams_left_at_the_drain_bound_and_counts_them(haproxy):
    mod = load_module()
    haproxy.servers["spark-a1"][1] = 3

    def two_finish(fake):  # once drained, all but one stream end; that one outlives the bound
        if fake.servers["spark-a1"][0] == "drain" and fake.servers["spark-a1"][1] > 1:
            fake.servers["spark-a1"][1] -= 1

    haproxy.on_stat = two_finish
    clock = FakeClock()
    result = mod.run(FakeModule(server="spark-a1", state="drain", wait_idle=True, timeout=10, on_timeout="cut"),
                     endpoint(haproxy, clock), {"changed": False})
    assert result["in_flight"] == 3 and result["cut"] == 1 and result["waited_s"] == 10.0
    assert "shutdown sessions server vllm_heads/spark-a1" in haproxy.commands
    assert haproxy.servers["spark-a1"][1] == 0
    haproxy.servers["spark-a1"][1] = 2
    with pytest.raises(HAProxyError, match="still has 1 session"):
        mod.run(FakeModule(server="spark-a1", state="drain", wait_idle=True, timeout=10), endpoint(haproxy, clock),
                {"changed": False})


# --- the Ansible module's run() --------------------------------------------

def load_module():
    # The module imports ansible.module_utils.sparkfleet_haproxy: alias it.
    pytest.importorskip("ansible")
    import ansible.module_utils
    import sparkfleet_haproxy as utils
    sys.modules.setdefault("ansible.module_utils.sparkfleet_haproxy", utils)
    ansible.module_utils.sparkfleet_haproxy = utils
    spec = importlib.util.spec_from_file_location(
        "sparkfleet_haproxy_module", os.path.join(ROOT, "plugins", "modules", "sparkfleet_haproxy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self.params = dict(socket=None, backend="vllm_heads", server=None, state="info", wait_idle=False,
                           timeout=300, interval=1.0, refuse_last=True, on_timeout="fail")
        self.params.update(params)


def test_module_info_drain_ready_and_refuse_last(haproxy):
    mod = load_module()
    ep = endpoint(haproxy)
    info = mod.run(FakeModule(), ep, {"changed": False})
    assert info["changed"] is False and sorted(info["servers"]) == ["spark-a1", "spark-b1"]

    drained = mod.run(FakeModule(server="spark-a1", state="drain", wait_idle=True), ep, {"changed": False})
    assert drained["changed"] is True
    assert drained["previous_state"] == "ready"
    assert drained["server"]["admin_state"] == "drain"
    assert drained["others_serving"] == ["spark-b1"]
    assert drained["waited_s"] == 0.0 and drained["in_flight"] == 0 and drained["cut"] == 0

    again = mod.run(FakeModule(server="spark-a1", state="drain"), ep, {"changed": False})
    assert again["changed"] is False

    with pytest.raises(HAProxyError, match="refusing to drain vllm_heads/spark-b1"):
        mod.run(FakeModule(server="spark-b1", state="drain"), ep, {"changed": False})
    single = mod.run(FakeModule(server="spark-b1", state="drain", refuse_last=False, check_mode=True), ep,
                     {"changed": False})
    assert single["changed"] is True and haproxy.servers["spark-b1"][0] == "ready"

    ready = mod.run(FakeModule(server="spark-a1", state="ready"), ep, {"changed": False})
    assert ready["changed"] is True and ready["server"]["serving"] is True


def test_module_wait_idle_needs_drain(haproxy):
    mod = load_module()
    with pytest.raises(HAProxyError, match="wait_idle needs state drain or maint"):
        mod.run(FakeModule(server="spark-a1", state="ready", wait_idle=True), endpoint(haproxy), {"changed": False})
