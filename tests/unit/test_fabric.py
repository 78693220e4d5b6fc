"""sparkfleet_fabric: env file, link files, ping parsing and pair problems."""

import os

import jinja2
import pytest
import yaml

from sparkfleet_fabric import (FabricConfigError, env_lines, link_files, nccl_floor, nccl_paths, nccl_problems,
                               nccl_result, pair_problems, ping_payload, ping_stats)

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "spark_fabric")

HEAD = {"host": "spark-01", "interface": "enp1s0f0np0", "address": "10.0.0.1", "hca": "rocep1s0f0", "gid_index": 3,
        "debug": "WARN"}
WORKER = {"host": "spark-02", "interface": "enP2p1s0f0np0", "address": "10.0.0.2", "hca": "roceP2p1s0f0",
          "gid_index": 5, "debug": "info"}


def as_dict(lines):
    return dict(line.split("=", 1) for line in lines)


def test_env_holds_every_nccl_setting():
    env = as_dict(env_lines(HEAD))
    assert env == {
        "NCCL_IB_HCA": "rocep1s0f0", "NCCL_SOCKET_IFNAME": "enp1s0f0np0", "GLOO_SOCKET_IFNAME": "enp1s0f0np0",
        "NCCL_IB_GID_INDEX": "3", "NCCL_IB_DISABLE": "0", "NCCL_NET": "IB", "NCCL_CROSS_NIC": "1",
        "NCCL_CUMEM_ENABLE": "0", "NCCL_IGNORE_CPU_AFFINITY": "1", "NCCL_DEBUG": "WARN", "VLLM_HOST_IP": "10.0.0.1"}


def test_env_is_per_node():
    head, worker = as_dict(env_lines(HEAD)), as_dict(env_lines(WORKER))
    assert worker["VLLM_HOST_IP"] == "10.0.0.2" and worker["NCCL_IB_HCA"] == "roceP2p1s0f0"
    assert worker["NCCL_SOCKET_IFNAME"] == "enP2p1s0f0np0" and worker["NCCL_IB_GID_INDEX"] == "5"
    assert worker["NCCL_DEBUG"] == "INFO"
    assert head["VLLM_HOST_IP"] != worker["VLLM_HOST_IP"]


def test_env_without_hca_and_with_extras():
    lines = env_lines(dict(HEAD, hca="", extra={"NCCL_IB_TIMEOUT": 22, "NCCL_NVLS_ENABLE": False}))
    env = as_dict(lines)
    assert "NCCL_IB_HCA" not in env
    assert env["NCCL_IB_TIMEOUT"] == "22" and env["NCCL_NVLS_ENABLE"] == "0"
    assert lines[-2:] == ["NCCL_IB_TIMEOUT=22", "NCCL_NVLS_ENABLE=0"]
    assert as_dict(env_lines(dict(HEAD, hca=["a", "b"])))["NCCL_IB_HCA"] == "a,b"


def test_env_at_info_names_the_network_without_the_noise():
    """INFO adds NCCL_DEBUG_SUBSYS=INIT,NET right after NCCL_DEBUG (the 'Using network' line); other levels do not."""
    lines = env_lines(WORKER)
    assert lines[lines.index("NCCL_DEBUG=INFO") + 1] == "NCCL_DEBUG_SUBSYS=INIT,NET"
    assert lines[-1] == "VLLM_HOST_IP=10.0.0.2"
    for level in ("WARN", "TRACE", "VERSION"):
        assert "NCCL_DEBUG_SUBSYS" not in as_dict(env_lines(dict(HEAD, debug=level)))
    # spark_fabric_env_extra may ask for other subsystems instead
    lines = env_lines(dict(WORKER, extra={"NCCL_DEBUG_SUBSYS": "INIT,NET,GRAPH"}))
    assert [line for line in lines if line.startswith("NCCL_DEBUG_SUBSYS=")] == ["NCCL_DEBUG_SUBSYS=INIT,NET,GRAPH"]


def test_role_default_nccl_debug_is_info():
    with open(os.path.join(ROLE, "defaults", "main.yml"), encoding="utf-8") as handle:
        assert yaml.safe_load(handle)["spark_fabric_nccl_debug"] == "INFO"
    with open(os.path.join(ROLE, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    defaults = [entry["options"]["spark_fabric_nccl_debug"]["default"] for entry in specs.values()
                if "spark_fabric_nccl_debug" in entry.get("options", {})]
    assert defaults and set(defaults) == {"INFO"}


@pytest.mark.parametrize("change, words", [
    ({"address": "10.0.0"}, "not an IPv4 address"),
    ({"interface": "bad name"}, "not a valid interface name"),
    ({"gid_index": "x"}, "GID index"),
    ({"debug": "LOUD"}, "spark_fabric_nccl_debug"),
    ({"extra": {"VLLM_HOST_IP": "1.2.3.4"}}, "derives itself"),
    ({"extra": {"BAD KEY": "1"}}, "not a valid variable name"),
    ({"extra": {"X": "a\nb"}}, "line break"),
])
def test_env_refuses_bad_input(change, words):
    with pytest.raises(FabricConfigError) as exc:
        env_lines(dict(HEAD, **change))
    assert words in str(exc.value) and "spark-01" in str(exc.value)


LINK = {"host": "spark-01", "interface": "enp1s0f0np0", "address": "10.0.0.1", "prefix": 30, "mtu": 9000}


def test_netplan_file():
    files = link_files(dict(LINK, renderer="NetworkManager"), "netplan")
    assert list(files) == ["40-sparkfleet-fabric.yaml"]
    doc = yaml.safe_load(files["40-sparkfleet-fabric.yaml"])
    dev = doc["network"]["ethernets"]["enp1s0f0np0"]
    assert doc["network"]["version"] == 2
    assert dev["dhcp4"] is False and dev["link-local"] == [] and dev["mtu"] == 9000
    assert dev["addresses"] == ["10.0.0.1/30"] and dev["renderer"] == "NetworkManager"
    assert "renderer" not in doc["network"]


def test_netplan_bond():
    bond = {"name": "bond0", "interfaces": ["enp1s0f0np0", "enp1s0f1np1"], "mode": "active-backup"}
    doc = yaml.safe_load(link_files(dict(LINK, interface="bond0", bond=bond), "netplan")["40-sparkfleet-fabric.yaml"])
    assert doc["network"]["bonds"]["bond0"]["interfaces"] == ["enp1s0f0np0", "enp1s0f1np1"]
    assert doc["network"]["bonds"]["bond0"]["addresses"] == ["10.0.0.1/30"]
    assert "addresses" not in doc["network"]["ethernets"]["enp1s0f1np1"]
    with pytest.raises(FabricConfigError):
        link_files(dict(LINK, bond=bond), "netplan")


def test_networkd_file():
    files = link_files(LINK, "networkd")
    text = files["40-sparkfleet-fabric.network"]
    for line in ("Name=enp1s0f0np0", "MTUBytes=9000", "Address=10.0.0.1/30", "DHCP=no", "LinkLocalAddressing=no",
                 "RequiredForOnline=no"):
        assert line in text.splitlines()
    bond = {"name": "bond0", "interfaces": ["a0", "a1"]}
    files = link_files(dict(LINK, interface="bond0", bond=bond), "networkd")
    assert sorted(files) == ["40-sparkfleet-fabric-a0.network", "40-sparkfleet-fabric-a1.network",
                             "40-sparkfleet-fabric.netdev", "40-sparkfleet-fabric.network"]
    assert "Bond=bond0" in files["40-sparkfleet-fabric-a0.network"]


@pytest.mark.parametrize("change", [{"prefix": 40}, {"mtu": 100000}, {"address": "fe80::1"}])
def test_link_refuses_bad_input(change):
    with pytest.raises(FabricConfigError):
        link_files(dict(LINK, **change), "networkd")


PING_OK = """PING 10.0.0.2 (10.0.0.2) from 10.0.0.1 eth0: 8972(9000) bytes of data.
8980 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.101 ms

--- 10.0.0.2 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 401ms
rtt min/avg/max/mdev = 0.061/0.080/0.101/0.016 ms
"""
PING_LOST = """--- 10.0.0.2 ping statistics ---
3 packets transmitted, 0 received, 100% packet loss, time 2046ms
"""
LINKS = {"spark-01": {"name": "eth0", "operstate": "up", "carrier": True, "mtu": 9000},
         "spark-02": {"name": "eth0", "operstate": "up", "carrier": True, "mtu": 9000}}


def test_ping_payload_and_stats():
    assert ping_payload(9000) == 8972
    assert ping_stats(PING_OK) == {"transmitted": 3, "received": 3, "loss_pct": 0.0, "avg_rtt_ms": 0.08}
    assert ping_stats(PING_LOST)["loss_pct"] == 100.0
    assert ping_stats("")["received"] is None


def test_healthy_pair_has_no_problems():
    ping = {"rc": 0, "output": PING_OK, "payload": 8972, "target": "10.0.0.2"}
    assert pair_problems("a", "spark-01", "spark-02", LINKS, 9000, ping) == []


def test_lost_jumbo_ping_names_pair_hosts_and_numbers():
    ping = {"rc": 1, "output": PING_LOST, "payload": 8972, "target": "10.0.0.2"}
    problems = pair_problems("a", "spark-01", "spark-02", LINKS, 9000, ping)
    assert len(problems) == 1
    assert "pair a: jumbo ping failed: spark-01 -> spark-02 (10.0.0.2)" in problems[0]
    assert "8972-byte" in problems[0] and "0/3 replies (100.0% loss)" in problems[0]


def test_mtu_mismatch_and_down_link():
    links = dict(LINKS, **{"spark-02": {"name": "eth0", "operstate": "down", "carrier": False, "mtu": 1500}})
    problems = pair_problems("b", "spark-03", "spark-04", {"spark-03": LINKS["spark-01"], "spark-04": links["spark-02"]},
                             9000, None)
    text = " | ".join(problems)
    assert "spark-04 fabric interface eth0 is down" in text
    assert "spark-04 fabric interface eth0 has MTU 1500, expected 9000" in text
    assert "MTU differs across the pair: spark-03 has 9000, spark-04 has 1500" in text


def test_nccl_floor():
    doc = {"results": [{"busbw_gbps": 20.0}], "peak_busbw_gbps": 20.0, "peak_busbw_GBps": 2.5}
    problems = nccl_problems("a", "spark-01", "spark-02", doc, 100)
    assert len(problems) == 1
    for words in ("pair a", "spark-01", "spark-02", "20.0 Gb/s", "floor of 100.0 Gb/s", "sockets", "GID", "MTU",
                  "memlock"):
        assert words in problems[0]
    assert nccl_problems("a", "h", "w", dict(doc, peak_busbw_gbps=180.0), 100) == []
    assert "no result" in nccl_problems("a", "h", "w", {}, 100)[0]


def test_nccl_result_parsing():
    out = 'table\n{"sparkfleet_nccl_check": {"peak_busbw_gbps": 1.5}}\n'
    assert nccl_result(out) == {"peak_busbw_gbps": 1.5}
    assert nccl_result("garbage\n{broken sparkfleet_nccl_check") == {}


def test_env_names_both_socket_direct_twins():
    env = as_dict(env_lines(dict(HEAD, interface="enp1s0f1np1", hca="rocep1s0f1,roceP2p1s0f1")))
    assert env["NCCL_IB_HCA"] == "rocep1s0f1,roceP2p1s0f1" and env["NCCL_IB_GID_INDEX"] == "3"


def test_nccl_floor_follows_the_paths():
    twins = "rocep1s0f1,roceP2p1s0f1"
    assert nccl_paths(twins) == 2 and nccl_paths("") == 1 and nccl_paths(None) == 1
    assert nccl_floor(75, [twins, twins]) == 150.0
    # One path keeps today's floor: below 100 a sockets fallback (~96 Gb/s) would pass.
    assert nccl_floor(75, ["rocep1s0f0", "rocep1s0f0"]) == 100.0
    assert nccl_floor(75, "") == 100.0
    # A node left on one path does not lower the pair's floor.
    assert nccl_floor(75, [twins, "rocep1s0f1"]) == 150.0
    assert nccl_floor(75, [["a", "b"], ["c", "d"]]) == 150.0
    assert nccl_floor(60, [twins]) == 120.0
    for bad in ("x", 0):
        with pytest.raises(FabricConfigError):
            nccl_floor(bad, twins)


def _render(expression, **variables):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["sparkfleet_fabric_nccl_floor"] = nccl_floor
    return env.from_string(expression).render(**variables)


def test_default_floor_is_per_path_times_the_pairs_hcas():
    """defaults/main.yml derives the floor from the HCA lists; argument specs agree and fix no pair floor."""
    with open(os.path.join(ROLE, "defaults", "main.yml"), encoding="utf-8") as handle:
        defaults = yaml.safe_load(handle)
    with open(os.path.join(ROLE, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    expression = defaults["spark_fabric_nccl_min_busbw_gbps"]
    per_path = defaults["spark_fabric_nccl_min_busbw_gbps_per_path"]
    assert per_path == 75
    for entry in ("main", "check"):
        options = specs[entry]["options"]
        assert options["spark_fabric_nccl_min_busbw_gbps_per_path"]["default"] == per_path
        assert "default" not in options["spark_fabric_nccl_min_busbw_gbps"]
    twins = "rocep1s0f1,roceP2p1s0f1"
    base = {"spark_fabric_nccl_min_busbw_gbps_per_path": per_path}
    # Before discovery (argument validation): no list yet, today's floor.
    assert float(_render(expression, **base)) == 100.0
    # One node's settled list (discover.yml), then the pair's (nccl.yml).
    assert float(_render(expression, spark_fabric_hca_effective=twins, **base)) == 150.0
    assert float(_render(expression, spark_fabric_hca_effective="rocep1s0f1",
                         spark_fabric_nccl_pair_hcas=["rocep1s0f1", twins], **base)) == 150.0
    assert float(_render(expression, spark_fabric_nccl_pair_hcas=["rocep1s0f0", "rocep1s0f0"], **base)) == 100.0


def test_nccl_floor_names_the_socket_direct_cause_and_the_hcas():
    doc = {"results": [{"busbw_gbps": 97.0}], "peak_busbw_gbps": 97.0, "peak_busbw_GBps": 12.1}
    problems = nccl_problems("a", "spark-01", "spark-02", doc, 150,
                             {"spark-01": "rocep1s0f1,roceP2p1s0f1", "spark-02": "rocep1s0f1"})
    assert len(problems) == 1
    assert "below the floor of 150.0 Gb/s (NCCL_IB_HCA spark-01=rocep1s0f1,roceP2p1s0f1, spark-02=rocep1s0f1)" \
        in problems[0]
    assert "only one of the port's two Socket Direct HCAs in NCCL_IB_HCA" in problems[0]
    assert nccl_problems("a", "spark-01", "spark-02", dict(doc, peak_busbw_gbps=180.0), 150) == []
