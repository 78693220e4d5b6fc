"""sparkfleet_rdma: discovery and inventory checks against fake sysfs trees."""

import os

import pytest

from sparkfleet_fabric import env_lines
from sparkfleet_rdma import (DEFAULT_GID_INDEX, FabricMismatch, are_twins, check, choose_gid_index, gid_ipv4,
                             pci_location, port_state, scan)

GID_ZERO = "0000:0000:0000:0000:0000:0000:0000:0000"
GID_LINK_LOCAL = "fe80:0000:0000:0000:0a5c:a2ff:fe11:2233"


def ipv4_gid(ip):
    a, b, c, d = (int(x) for x in ip.split("."))
    return "0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x" % (a, b, c, d)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def add_netdev(root, name, mtu=9000, operstate="up"):
    base = root / "class" / "net" / name
    write(base / "mtu", str(mtu))
    write(base / "operstate", operstate)
    write(base / "carrier", "1")


def add_hca(root, name, netdev, state="4: ACTIVE", gids=None):
    """gids: {index: (type, gid)}; the types entry of an unused index is left out like EINVAL."""
    base = root / "class" / "infiniband" / name
    write(base / "ports" / "1" / "state", state)
    write(base / "ports" / "1" / "link_layer", "Ethernet")
    (base / "device" / "net" / netdev).mkdir(parents=True)
    for index, (kind, gid) in (gids or {}).items():
        write(base / "ports" / "1" / "gids" / str(index), gid)
        if kind is not None:
            write(base / "ports" / "1" / "gid_attrs" / "types" / str(index), kind)


def spark(root, address="10.0.0.1"):
    """A Spark: two CX-7 ports, the cable in port 0, the standard 4-entry GID table."""
    add_netdev(root, "enP7s7", mtu=1500)
    add_netdev(root, "enp1s0f0np0")
    add_netdev(root, "enp1s0f1np1", operstate="down")
    add_hca(root, "rocep1s0f0", "enp1s0f0np0", gids={
        0: ("IB/RoCE v1", GID_LINK_LOCAL), 1: ("RoCE v2", GID_LINK_LOCAL),
        2: ("IB/RoCE v1", ipv4_gid(address)), 3: ("RoCE v2", ipv4_gid(address)), 4: (None, GID_ZERO)})
    add_hca(root, "rocep1s0f1", "enp1s0f1np1", state="1: DOWN")
    return root


def test_port_state_and_gid_parsing():
    assert port_state("4: ACTIVE") == "ACTIVE"
    assert port_state(None) is None
    assert gid_ipv4(ipv4_gid("10.0.0.2")) == "10.0.0.2"
    assert gid_ipv4(GID_LINK_LOCAL) is None
    assert gid_ipv4("") is None


def test_matching_inventory_finds_hca_and_gid_index(tmp_path):
    found = check("spark-01", "enp1s0f0np0", hca="rocep1s0f0", address="10.0.0.1", sysfs_root=str(spark(tmp_path)))
    assert found["hca"] == "rocep1s0f0"
    assert found["gid_index"] == 3
    assert found["gid_source"].startswith("sysfs")
    assert found["interface"]["mtu"] == 9000 and found["interface"]["operstate"] == "up"
    assert found["rdma_present"] is True


def test_hca_discovered_from_interface_when_not_named(tmp_path):
    found = check("spark-01", "enp1s0f0np0", sysfs_root=str(spark(tmp_path)))
    assert found["hca"] == "rocep1s0f0"


def test_gid_index_prefers_the_fabric_address(tmp_path):
    add_netdev(tmp_path, "eth9")
    add_hca(tmp_path, "mlx5_0", "eth9", gids={
        3: ("RoCE v2", ipv4_gid("192.168.9.9")), 5: ("RoCE v2", ipv4_gid("10.0.0.1"))})
    assert check("h", "eth9", address="10.0.0.1", sysfs_root=str(tmp_path))["gid_index"] == 5
    assert check("h", "eth9", address="10.9.9.9", sysfs_root=str(tmp_path))["gid_index"] == 3


def test_gid_index_falls_back_to_3_without_roce_v2_ipv4(tmp_path):
    add_netdev(tmp_path, "eth9")
    add_hca(tmp_path, "mlx5_0", "eth9", gids={0: ("IB/RoCE v1", GID_LINK_LOCAL), 1: ("RoCE v2", GID_LINK_LOCAL)})
    found = check("h", "eth9", sysfs_root=str(tmp_path))
    assert found["gid_index"] == DEFAULT_GID_INDEX
    assert found["gid_source"].startswith("default")
    assert choose_gid_index([], None, default=7) == (7, "default (no RoCE v2 IPv4 GID in sysfs)")


def test_mismatching_hca_names_host_expected_and_found(tmp_path):
    with pytest.raises(FabricMismatch) as exc:
        check("spark-02", "enp1s0f0np0", hca="roceP2p1s0f0", sysfs_root=str(spark(tmp_path)))
    msg = str(exc.value)
    assert "spark-02" in msg and "roceP2p1s0f0" in msg
    assert "rocep1s0f0 -> enp1s0f0np0 (ACTIVE)" in msg and "rocep1s0f1 -> enp1s0f1np1 (DOWN)" in msg


def test_hca_on_another_interface_is_a_mismatch(tmp_path):
    with pytest.raises(FabricMismatch) as exc:
        check("spark-02", "enp1s0f0np0", hca="rocep1s0f1", sysfs_root=str(spark(tmp_path)))
    assert "expects rocep1s0f1 on interface enp1s0f0np0, found rocep1s0f1 on enp1s0f1np1" in str(exc.value)


def test_inactive_port_stops(tmp_path):
    with pytest.raises(FabricMismatch) as exc:
        check("spark-02", "enp1s0f1np1", sysfs_root=str(spark(tmp_path)))
    assert "spark-02" in str(exc.value) and "DOWN" in str(exc.value) and "rocep1s0f1" in str(exc.value)


def test_wrong_interface_names_host_expected_and_found(tmp_path):
    with pytest.raises(FabricMismatch) as exc:
        check("spark-01", "enp1s0f0np1", sysfs_root=str(spark(tmp_path)))
    msg = str(exc.value)
    assert "spark-01" in msg and "enp1s0f0np1" in msg
    assert "enp1s0f0np0" in msg and "enP7s7" in msg


def test_without_infiniband_the_interface_must_exist(tmp_path):
    add_netdev(tmp_path, "eth0")
    add_netdev(tmp_path, "eth1")
    found = check("spark-a1", "eth1", sysfs_root=str(tmp_path))
    assert found["rdma_present"] is False and found["hca"] is None and found["gid_index"] == 3
    with pytest.raises(FabricMismatch) as exc:
        check("spark-a1", "eth7", sysfs_root=str(tmp_path))
    assert "spark-a1" in str(exc.value) and "eth7" in str(exc.value) and "eth0, eth1" in str(exc.value)


def test_without_infiniband_a_named_hca_is_a_mismatch(tmp_path):
    add_netdev(tmp_path, "eth1")
    with pytest.raises(FabricMismatch) as exc:
        check("spark-a1", "eth1", hca="rocep1s0f0", sysfs_root=str(tmp_path))
    assert "spark-a1" in str(exc.value) and "rocep1s0f0" in str(exc.value) and "class/infiniband" in str(exc.value)
    with pytest.raises(FabricMismatch):
        check("spark-a1", "eth1", require_rdma=True, sysfs_root=str(tmp_path))


def test_scan_lists_every_device(tmp_path):
    devices = scan(str(spark(tmp_path)), "10.0.0.1")
    assert [d["name"] for d in devices] == ["rocep1s0f0", "rocep1s0f1"]
    assert devices[0]["roce_v2_ipv4_gids"] == [{"index": 3, "ipv4": "10.0.0.1"}]
    assert scan(str(tmp_path / "nothing")) is None


# --- Socket Direct twins -----------------------------------------------------
# A DGX Spark: each ConnectX-7 port is driven by two PCIe x4 functions in PCI
# domains 0 and 2, so two ports show as four RoCE devices and four netdevs.
# The cable is in the outer port (f1); the address sits on the domain-0 netdev.

def socket_direct_spark(root, address="10.0.0.1", twin_state="4: ACTIVE"):
    add_netdev(root, "enP7s7", mtu=1500)
    add_netdev(root, "enp1s0f1np1")
    add_netdev(root, "enP2p1s0f1np1")
    add_netdev(root, "enp1s0f0np0", operstate="down")
    add_netdev(root, "enP2p1s0f0np0", operstate="down")
    add_hca(root, "rocep1s0f1", "enp1s0f1np1", gids={
        0: ("IB/RoCE v1", GID_LINK_LOCAL), 1: ("RoCE v2", GID_LINK_LOCAL),
        2: ("IB/RoCE v1", ipv4_gid(address)), 3: ("RoCE v2", ipv4_gid(address))})
    # The twin's netdev carries no address: only its link-local GIDs.
    add_hca(root, "roceP2p1s0f1", "enP2p1s0f1np1", state=twin_state, gids={
        0: ("IB/RoCE v1", GID_LINK_LOCAL), 1: ("RoCE v2", GID_LINK_LOCAL)})
    add_hca(root, "rocep1s0f0", "enp1s0f0np0", state="1: DOWN")
    add_hca(root, "roceP2p1s0f0", "enP2p1s0f0np0", state="1: DOWN")
    return str(root)


def test_pci_names_parse_like_the_kernel_names_them():
    assert pci_location("rocep1s0f1") == {"domain": 0, "bus": 1, "slot": 0, "function": 1, "port": None}
    assert pci_location("roceP2p1s0f1") == {"domain": 2, "bus": 1, "slot": 0, "function": 1, "port": None}
    assert pci_location("enP2p1s0f0np0") == {"domain": 2, "bus": 1, "slot": 0, "function": 0, "port": 0}
    for name in ("mlx5_0", "eth1", "enP7s7", "rocep1s0f1x"):
        assert pci_location(name) is None


def test_twins_differ_only_in_pci_domain(tmp_path):
    devices = {d["name"]: d for d in scan(socket_direct_spark(tmp_path))}
    assert are_twins(devices["rocep1s0f1"], devices["roceP2p1s0f1"])
    assert are_twins(devices["rocep1s0f0"], devices["roceP2p1s0f0"])
    assert not are_twins(devices["rocep1s0f1"], devices["rocep1s0f0"])      # same domain, other port
    assert not are_twins(devices["rocep1s0f1"], devices["roceP2p1s0f0"])    # other domain, other port
    assert not are_twins(devices["rocep1s0f1"], devices["rocep1s0f1"])


@pytest.mark.parametrize("named", [None, "rocep1s0f1"], ids=["none named", "one named"])
def test_twin_joins_the_cabled_hca(tmp_path, named):
    found = check("spark-01", "enp1s0f1np1", hca=named, address="10.0.0.1", sysfs_root=socket_direct_spark(tmp_path))
    assert found["hcas"] == ["rocep1s0f1", "roceP2p1s0f1"]
    assert found["hca"] == "rocep1s0f1" and found["addressed_hca"] == "rocep1s0f1"
    assert found["twins"] == [{"name": "roceP2p1s0f1", "netdevs": ["enP2p1s0f1np1"], "state": "ACTIVE",
                               "used": True}]
    assert found["notes"] == []
    # The GID index is the addressed HCA's (the twin's netdev has no address).
    assert (found["gid_index"], found["gid_source"]) == (3, "sysfs (RoCE v2 GID of 10.0.0.1)")
    assert found["hcas_source"] == ("inventory + twins" if named else "discovered")


def test_the_address_on_the_domain_2_netdev_puts_that_hca_first(tmp_path):
    root = socket_direct_spark(tmp_path)
    found = check("spark-03", "enP2p1s0f1np1", address="10.0.0.1", sysfs_root=root)
    assert found["hcas"] == ["roceP2p1s0f1", "rocep1s0f1"]


def test_down_twin_is_reported_and_left_out(tmp_path):
    root = socket_direct_spark(tmp_path, twin_state="1: DOWN")
    found = check("spark-02", "enp1s0f1np1", hca="rocep1s0f1", sysfs_root=root)
    assert found["hcas"] == ["rocep1s0f1"]
    assert found["twins"] == [{"name": "roceP2p1s0f1", "netdevs": ["enP2p1s0f1np1"], "state": "DOWN", "used": False}]
    assert len(found["notes"]) == 1
    for words in ("spark-02", "roceP2p1s0f1", "enP2p1s0f1np1", "DOWN", "twin of rocep1s0f1",
                  "left out of NCCL_IB_HCA", "1 of the port's 2 paths"):
        assert words in found["notes"][0]


def test_inventory_list_is_used_as_given(tmp_path):
    found = check("spark-01", "enp1s0f1np1", hca=" roceP2p1s0f1 , rocep1s0f1", address="10.0.0.1",
                  sysfs_root=socket_direct_spark(tmp_path))
    assert found["hcas"] == ["roceP2p1s0f1", "rocep1s0f1"] and found["hca"] == "roceP2p1s0f1"
    assert found["hcas_source"] == "inventory"
    assert found["addressed_hca"] == "rocep1s0f1" and found["gid_index"] == 3


def test_inventory_list_naming_a_missing_hca_is_refused(tmp_path):
    with pytest.raises(FabricMismatch) as exc:
        check("spark-02", "enp1s0f1np1", hca="rocep1s0f1,roceP3p1s0f1", sysfs_root=socket_direct_spark(tmp_path))
    msg = str(exc.value)
    assert msg.startswith("spark-02: fabric HCA mismatch: inventory expects "
                          "sparkfleet_fabric_hca=rocep1s0f1,roceP3p1s0f1 (roceP3p1s0f1 missing), found: ")
    assert "roceP2p1s0f1 -> enP2p1s0f1np1 (ACTIVE)" in msg and "rocep1s0f0 -> enp1s0f0np0 (DOWN)" in msg


def test_inventory_list_naming_a_down_hca_is_refused(tmp_path):
    root = socket_direct_spark(tmp_path, twin_state="1: DOWN")
    with pytest.raises(FabricMismatch) as exc:
        check("spark-02", "enp1s0f1np1", hca="rocep1s0f1,roceP2p1s0f1", sysfs_root=root)
    assert "spark-02: fabric port not active: inventory expects roceP2p1s0f1 (enP2p1s0f1np1) ACTIVE, " \
           "found port 1 state DOWN" in str(exc.value)


def test_inventory_list_of_the_other_port_is_refused(tmp_path):
    with pytest.raises(FabricMismatch) as exc:
        check("spark-02", "enp1s0f1np1", hca="rocep1s0f0,roceP2p1s0f0", sysfs_root=socket_direct_spark(tmp_path))
    msg = str(exc.value)
    assert "spark-02" in msg and "rocep1s0f0,roceP2p1s0f0 on interface enp1s0f1np1" in msg
    assert "rocep1s0f1 -> enp1s0f1np1 (ACTIVE)" in msg


def test_inventory_list_with_a_name_twice_is_refused(tmp_path):
    with pytest.raises(FabricMismatch) as exc:
        check("spark-02", "enp1s0f1np1", hca="rocep1s0f1,rocep1s0f1", sysfs_root=socket_direct_spark(tmp_path))
    assert "spark-02" in str(exc.value) and "names rocep1s0f1 more than once" in str(exc.value)


def test_naming_only_the_unaddressed_twin_says_which_to_name(tmp_path):
    with pytest.raises(FabricMismatch) as exc:
        check("spark-02", "enp1s0f1np1", hca="roceP2p1s0f1", sysfs_root=socket_direct_spark(tmp_path))
    msg = str(exc.value)
    assert "expects roceP2p1s0f1 on interface enp1s0f1np1, found roceP2p1s0f1 on enP2p1s0f1np1" in msg
    assert "Socket Direct twin of rocep1s0f1" in msg and "sparkfleet_fabric_hca=rocep1s0f1,roceP2p1s0f1" in msg


def test_unlisted_active_twin_is_reported(tmp_path):
    # Several names given (here the cabled HCA and the other port's, both up):
    # used as given, and the port's twin left out is said.
    root = socket_direct_spark(tmp_path)
    add_netdev(tmp_path, "enp1s0f0np0")
    write(tmp_path / "class" / "infiniband" / "rocep1s0f0" / "ports" / "1" / "state", "4: ACTIVE")
    found = check("spark-01", "enp1s0f1np1", hca="rocep1s0f1,rocep1s0f0", sysfs_root=root)
    assert found["hcas"] == ["rocep1s0f1", "rocep1s0f0"]
    assert found["twins"][0]["used"] is False
    assert "roceP2p1s0f1" in found["notes"][0] and "NCCL leaves that path unused" in found["notes"][0]


def test_twin_with_its_ipv4_gid_elsewhere_is_reported(tmp_path):
    root = socket_direct_spark(tmp_path)
    add_hca_gid = tmp_path / "class" / "infiniband" / "roceP2p1s0f1" / "ports" / "1"
    write(add_hca_gid / "gids" / "5", ipv4_gid("10.0.0.5"))
    write(add_hca_gid / "gid_attrs" / "types" / "5", "RoCE v2")
    found = check("spark-01", "enp1s0f1np1", address="10.0.0.1", sysfs_root=root)
    assert found["hcas"] == ["rocep1s0f1", "roceP2p1s0f1"] and found["gid_index"] == 3
    assert "roceP2p1s0f1" in found["notes"][0] and "index 5" in found["notes"][0]


def test_twins_found_from_the_pci_address_when_names_are_mlx5(tmp_path):
    """Without udev's PCI-path names (mlx5_N), the device link's PCI address decides."""
    for name, pci, netdev in (("mlx5_0", "0000:01:00.1", "eth2"), ("mlx5_1", "0002:01:00.1", "eth3"),
                              ("mlx5_2", "0000:01:00.0", "eth4")):
        add_netdev(tmp_path, netdev)
        device = tmp_path / "devices" / "pci" / pci
        (device / "net" / netdev).mkdir(parents=True)
        port = tmp_path / "class" / "infiniband" / name / "ports" / "1"
        write(port / "state", "4: ACTIVE")
        os.symlink(os.path.relpath(device, port.parent.parent), port.parent.parent / "device")
    found = check("h", "eth2", sysfs_root=str(tmp_path))
    assert found["hcas"] == ["mlx5_0", "mlx5_1"]


def test_env_file_names_both_twins(tmp_path):
    found = check("spark-01", "enp1s0f1np1", address="10.0.0.1", sysfs_root=socket_direct_spark(tmp_path))
    lines = env_lines({"host": "spark-01", "interface": "enp1s0f1np1", "address": "10.0.0.1",
                       "hca": ",".join(found["hcas"]), "gid_index": found["gid_index"]})
    assert "NCCL_IB_HCA=rocep1s0f1,roceP2p1s0f1" in lines and "NCCL_IB_GID_INDEX=3" in lines
    assert "NCCL_SOCKET_IFNAME=enp1s0f1np1" in lines


def test_single_function_ports_have_no_twins(tmp_path):
    found = check("spark-01", "enp1s0f0np0", sysfs_root=str(spark(tmp_path)))
    assert found["hcas"] == ["rocep1s0f0"] and found["twins"] == [] and found["notes"] == []


def test_without_infiniband_the_list_is_empty(tmp_path):
    add_netdev(tmp_path, "eth1")
    found = check("spark-a1", "eth1", sysfs_root=str(tmp_path))
    assert found["hcas"] == [] and found["twins"] == [] and found["hca"] is None
    with pytest.raises(FabricMismatch) as exc:
        check("spark-a1", "eth1", hca="rocep1s0f1,roceP2p1s0f1", sysfs_root=str(tmp_path))
    assert "sparkfleet_fabric_hca=rocep1s0f1,roceP2p1s0f1 on eth1" in str(exc.value)
