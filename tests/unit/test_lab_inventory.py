"""Lab helpers: address plan, generated inventory, input hashing (no Docker needed)."""

import os
import sys

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lab"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "module_utils"))

import sparkfleet_lab_lib as lib  # noqa: E402
from sparkfleet_topology import build_pairs  # noqa: E402


def test_address_plan_two_pairs():
    nodes, endpoint = lib.address_plan(2)
    assert [n["name"] for n in nodes] == ["spark-a1", "spark-a2", "spark-b1", "spark-b2"]
    assert [n["role"] for n in nodes] == ["head", "worker", "head", "worker"]
    assert nodes[3]["mgmt_address"] == "10.77.0.22" and nodes[3]["fabric_address"] == "10.78.2.22"
    assert nodes[0]["fabric_network"] == "sparkfleet-lab-fabric-a"
    assert endpoint == {"name": "lab-endpoint", "mgmt_address": "10.77.0.5"}
    assert lib.address_plan(1, endpoint=False)[1] is None
    with pytest.raises(ValueError):
        lib.address_plan(0)


def test_rendered_inventory_is_a_valid_fleet():
    nodes, endpoint = lib.address_plan(2)
    for node in nodes:
        node["fabric_interface"] = "eth1"
    inventory = yaml.safe_load(lib.render_inventory(nodes, endpoint, "sparkfleet/vllm-sim:abc"))
    hosts = inventory["all"]["children"]["sparkfleet_nodes"]["hosts"]
    assert hosts["spark-b2"]["ansible_host"] == "sparkfleet-lab-spark-b2"
    assert hosts["spark-b2"]["sparkfleet_image_ref"] == "sparkfleet/vllm-sim:abc"
    assert build_pairs(hosts) == {
        "a": {"head": "spark-a1", "worker": "spark-a2", "master_addr": "10.78.1.11"},
        "b": {"head": "spark-b1", "worker": "spark-b2", "master_addr": "10.78.2.21"},
    }
    assert "lab-endpoint" in inventory["all"]["children"]["sparkfleet_endpoint"]["hosts"]
    assert inventory["all"]["vars"]["ansible_connection"] == "community.docker.docker"


def test_input_hash_follows_content(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    first = lib.hash_inputs([str(tmp_path)], "base")
    assert lib.hash_inputs([str(tmp_path)], "base") == first
    (tmp_path / "a.py").write_text("x = 2\n")
    assert lib.hash_inputs([str(tmp_path)], "base") != first
    assert lib.hash_inputs([str(tmp_path)], "other") != lib.hash_inputs([str(tmp_path)], "base")


def test_spark_meminfo_passes_the_preflight_for_every_profile():
    import sparkfleet_memory as mem
    info = mem.parse_meminfo(lib.SPARK_MEMINFO)
    assert mem.check(info, 0.88, 2.0)["mem_total_gib"] == 119.7


def test_image_vars_pin_the_simulator_base_by_id():
    import yaml
    text = lib.render_image_vars("sparkfleet/vllm-sim:abc", "sha256:" + "1" * 64)
    assert yaml.safe_load(text) == {"spark_image_base": "sparkfleet/vllm-sim:abc",
                                    "spark_image_base_digest": "sha256:" + "1" * 64}


def test_sim_image_stages_the_pinned_vllm_files_checked_against_the_fingerprint(tmp_path):
    import hashlib
    import json

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    version = lib.pinned_vllm_version(root)
    with open(lib.fingerprint_path(root, version), encoding="utf-8") as handle:
        fingerprint = json.load(handle)
    assert "vllm/model_executor/layers/quantization/mxfp4.py" in fingerprint["files"]
    data = b"def real():\n    pass\n"
    fake = {"release": fingerprint["release"],
            "files": {"vllm/a/b.py": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}}
    assert lib.stage_vllm_files(fake, lambda member: data, str(tmp_path)) == ["vllm/a/b.py"]
    assert (tmp_path / "vllm" / "a" / "b.py").read_bytes() == data
    assert (tmp_path / "SHA256SUMS").read_text() == "%s  vllm/a/b.py\n" % hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError, match="the fingerprint pins"):
        lib.stage_vllm_files(fake, lambda member: data + b"#", str(tmp_path / "other"))
    with pytest.raises(ValueError, match="not a path inside the vllm package"):
        lib.fingerprint_files({"files": {"../etc/passwd": {"sha256": "0", "size": 1}}})
    # the image key follows the pinned files, not only the sources
    key = lib.sim_image_key([str(tmp_path)], fake, "sha256:base")
    moved = dict(fake, files={"vllm/a/b.py": {"sha256": "1" * 64, "size": len(data)}})
    assert lib.sim_image_key([str(tmp_path)], moved, "sha256:base") != key
