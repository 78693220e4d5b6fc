import pytest

from sparkfleet_topology import TopologyError, build_pairs, node_view


def node(pair, role, ip):
    return {"sparkfleet_pair": pair, "sparkfleet_node_role": role, "sparkfleet_fabric_address": ip}


FLEET = {
    "spark-01": node("a", "head", "10.0.0.1/30"),
    "spark-02": node("a", "worker", "10.0.0.2"),
    "spark-03": node("b", "head", "10.0.1.1"),
    "spark-04": node("b", "worker", "10.0.1.2"),
}


def test_pairs_are_derived_from_pair_and_role():
    pairs = build_pairs(FLEET)
    assert pairs == {
        "a": {"head": "spark-01", "worker": "spark-02", "master_addr": "10.0.0.1"},
        "b": {"head": "spark-03", "worker": "spark-04", "master_addr": "10.0.1.1"},
    }


def test_node_view_gives_rank_peer_and_master():
    view = node_view(build_pairs(FLEET), "spark-02")
    assert view == {"pair": "a", "role": "worker", "rank": 1, "nnodes": 2, "head": "spark-01",
                    "worker": "spark-02", "peer": "spark-01", "master_addr": "10.0.0.1"}
    assert node_view(build_pairs(FLEET), "spark-03")["rank"] == 0


@pytest.mark.parametrize("broken, message", [
    ({**FLEET, "spark-05": node("b", "head", "10.0.1.3")}, "pair b has 2 head node(s) (spark-03, spark-05)"),
    ({k: v for k, v in FLEET.items() if k != "spark-02"}, "pair a has 0 worker node(s) (none)"),
    ({**FLEET, "spark-02": node("a", "rank1", "10.0.0.2")}, "host spark-02: sparkfleet_node_role is 'rank1'"),
    ({**FLEET, "spark-02": {"sparkfleet_node_role": "worker"}}, "host spark-02 has no sparkfleet_pair"),
    ({**FLEET, "spark-02": node("a", "worker", None)}, "host spark-02 has no sparkfleet_fabric_address"),
    ({**FLEET, "spark-02": node("a", "worker", "not-an-ip")}, "is not an IP address"),
    ({**FLEET, "spark-04": node("b", "worker", "10.0.1.1")}, "share the fabric address 10.0.1.1"),
    ({}, "no hosts in group sparkfleet_nodes"),
])
def test_bad_topologies_are_refused_with_names(broken, message):
    with pytest.raises(TopologyError) as err:
        build_pairs(broken)
    assert message in str(err.value)


def test_unknown_host():
    with pytest.raises(TopologyError, match="not a member of any pair"):
        node_view(build_pairs(FLEET), "nobody")
