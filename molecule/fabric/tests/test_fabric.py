"""Verify the fabric role on a lab pair, and that the fabric check stops on a bad link."""

import os
import subprocess
import sys

import pytest

HEAD = "molecule-fabric-a1"
WORKER = "molecule-fabric-a2"
IP = {HEAD: "10.79.2.11", WORKER: "10.79.2.12"}
testinfra_hosts = [HEAD, WORKER]
PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY",
                         os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))


def name_of(host):
    return HEAD if host.backend.get_hostname() == HEAD else WORKER


def env_of(host):
    text = host.file("/etc/sparkfleet/fabric.env").content_string
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_env_file_is_this_nodes_own(host):
    env_file = host.file("/etc/sparkfleet/fabric.env")
    assert env_file.mode == 0o644 and env_file.user == "root"
    env = env_of(host)
    assert env["VLLM_HOST_IP"] == IP[name_of(host)]
    assert env["NCCL_SOCKET_IFNAME"] == "eth0" and env["GLOO_SOCKET_IFNAME"] == "eth0"
    assert env["NCCL_IB_GID_INDEX"] == "3"
    assert env["NCCL_NET"] == "IB" and env["NCCL_IB_DISABLE"] == "0" and env["NCCL_CROSS_NIC"] == "1"
    assert env["NCCL_CUMEM_ENABLE"] == "0" and env["NCCL_IGNORE_CPU_AFFINITY"] == "1"
    # INFO on the INIT and NET subsystems: the journal says which network NCCL picked.
    assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_DEBUG_SUBSYS"] == "INIT,NET"
    # The cabled port and its Socket Direct twin, from the node's RDMA sysfs tree.
    assert env["NCCL_IB_HCA"] == "rocep1s0f1,roceP2p1s0f1"


def test_env_file_is_usable_as_docker_env_file(host):
    for line in host.file("/etc/sparkfleet/fabric.env").content_string.splitlines():
        assert line.startswith("#") or ("=" in line and " " not in line.split("=", 1)[0])


def test_link_is_managed_by_systemd_networkd(host):
    """spark_fabric_manage_link is true here: the .network file is installed and its handlers applied it."""
    installed = host.file("/etc/systemd/network/40-sparkfleet-fabric.network")
    assert installed.exists and installed.mode == 0o644
    lines = installed.content_string.splitlines()
    for line in ("Name=eth0", "MTUBytes=9000", "Address=%s/24" % IP[name_of(host)], "DHCP=no",
                 "LinkLocalAddressing=no", "RequiredForOnline=no"):
        assert line in lines
    # The handlers started networkd (enabled for the next boot) and reconfigured the fabric interface.
    networkd = host.service("systemd-networkd")
    assert networkd.is_running and networkd.is_enabled
    status = host.run("networkctl status eth0")
    assert "40-sparkfleet-fabric.network" in status.stdout and "configured" in status.stdout, status.stdout
    # The link is managed, so nothing is left in the preview directory.
    assert not host.file("/etc/sparkfleet/fabric-link/40-sparkfleet-fabric.network").exists
    assert host.file("/usr/local/libexec/sparkfleet/sparkfleet-nccl-check").mode == 0o755


def test_fabric_mtu_is_9000(host):
    assert host.file("/sys/class/net/eth0/mtu").content_string.strip() == "9000"
    assert host.interface("eth0").addresses[0] == IP[name_of(host)]


def test_jumbo_ping_passes(host):
    peer = IP[WORKER] if name_of(host) == HEAD else IP[HEAD]
    result = host.run("ping -M do -s 8972 -c 2 -w 5 -I eth0 %s", peer)
    assert result.rc == 0, result.stdout + result.stderr
    assert "2 received" in result.stdout


def run_playbook(playbook, *extra):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT, "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_NOCOLOR="1")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            "-i", os.environ["MOLECULE_INVENTORY_FILE"], os.path.join(PROJECT, playbook)] + list(extra)
    result = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True, check=False, timeout=300)
    return result.returncode, result.stdout + result.stderr


def test_fabric_check_passes_on_a_good_pair():
    rc, out = run_playbook("playbooks/fabric_check.yml")
    assert rc == 0, out
    assert "pair a: molecule-fabric-a1 <-> molecule-fabric-a2 up at MTU 9000" in out
    assert "NCCL all-reduce check skipped: lab nodes are containers" in out


def test_check_mode_checks_the_link_but_does_not_run_the_all_reduce():
    # With no skip reason a real run would start the all-reduce; --check must not.
    rc, out = run_playbook("playbooks/fabric_check.yml", "--check", "-e", "spark_fabric_nccl_check_skip_reason=")
    assert rc == 0, out
    assert "pair a: molecule-fabric-a1 <-> molecule-fabric-a2 up at MTU 9000" in out
    assert "NCCL all-reduce check skipped: check mode" in out


def docker_exec(container, *argv):
    return subprocess.run(["docker", "exec", container] + list(argv), capture_output=True, text=True, check=True,
                          timeout=60).stdout


@pytest.fixture
def worker_at_mtu_1500():
    """The worker's fabric MTU dropped to 1500 (a netplan file that lost its mtu line); restored after."""
    docker_exec(WORKER, "ip", "link", "set", "dev", "eth0", "mtu", "1500")
    try:
        yield WORKER
    finally:
        docker_exec(WORKER, "ip", "link", "set", "dev", "eth0", "mtu", "9000")


def test_fabric_check_fails_on_small_mtu(worker_at_mtu_1500):
    assert docker_exec(worker_at_mtu_1500, "cat", "/sys/class/net/eth0/mtu").strip() == "1500"
    rc, out = run_playbook("playbooks/fabric_check.yml")
    assert rc != 0, out
    assert "pair a: jumbo ping failed: molecule-fabric-a1 -> molecule-fabric-a2 (10.79.2.12)" in out
    assert "8972-byte don't-fragment payload" in out
    assert "0/3 replies (100.0% loss)" in out
    assert "molecule-fabric-a2 fabric interface eth0 has MTU 1500, expected 9000" in out
    assert "MTU differs across the pair: molecule-fabric-a1 has 9000, molecule-fabric-a2 has 1500" in out


def test_check_passes_again_once_mtu_restored():
    assert docker_exec(WORKER, "cat", "/sys/class/net/eth0/mtu").strip() == "9000"
    rc, out = run_playbook("playbooks/fabric_check.yml")
    assert rc == 0, out


def test_wrong_interface_in_inventory_stops_the_play():
    rc, out = run_playbook("playbooks/fabric_check.yml", "-e", "sparkfleet_fabric_interface=enp1s0f0np0")
    assert rc != 0, out
    for words in ("molecule-fabric-a1: fabric interface mismatch", "sparkfleet_fabric_interface=enp1s0f0np0",
                  "molecule-fabric-a2: fabric interface mismatch", "host has interfaces:"):
        assert words in out
    assert "eth0" in out.split("host has interfaces:", 1)[1].splitlines()[0]
