"""sparkfleet_rdma: discovery and inventory checks against fake sysfs trees."""

import pytest

from sparkfleet_rdma import DEFAULT_GID_INDEX, FabricMismatch, check, choose_gid_index, gid_ipv4, port_state, scan

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
