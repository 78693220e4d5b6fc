"""Lab helpers: address plan, generated inventory, input hashing (no Docker needed)."""

import os
import sys

import pytest
import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lab"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "module_utils"))

import sparkfleet_lab_lib as lib  # noqa: E402
from sparkfleet_topology import build_pairs  # noqa: E402


def test_address_plan_two_pairs():
    nodes, endpoints = lib.address_plan(2)
    assert [n["name"] for n in nodes] == ["spark-a1", "spark-a2", "spark-b1", "spark-b2"]
    assert [n["role"] for n in nodes] == ["head", "worker", "head", "worker"]
    assert nodes[3]["mgmt_address"] == "10.77.0.22" and nodes[3]["fabric_address"] == "10.78.2.22"
    assert nodes[0]["fabric_network"] == "sparkfleet-lab-fabric-a"
    assert endpoints == [{"name": "lab-endpoint", "mgmt_address": "10.77.0.5"},
                         {"name": "lab-endpoint2", "mgmt_address": "10.77.0.6"}]
    assert lib.address_plan(1, endpoints=0)[1] == []
    with pytest.raises(ValueError):
        lib.address_plan(0)


def test_rendered_inventory_is_a_valid_fleet():
    nodes, endpoints = lib.address_plan(2)
    for node in nodes:
        node["fabric_interface"] = "eth1"
    inventory = yaml.safe_load(lib.render_inventory(nodes, endpoints))
    hosts = inventory["all"]["children"]["sparkfleet_nodes"]["hosts"]
    assert hosts["spark-b2"]["ansible_host"] == "10.77.0.22"
    assert hosts["spark-b2"]["sparkfleet_fabric_hca"] == "rocep1s0f1,roceP2p1s0f1"
    assert build_pairs(hosts) == {
        "a": {"head": "spark-a1", "worker": "spark-a2", "master_addr": "10.78.1.11"},
        "b": {"head": "spark-b1", "worker": "spark-b2", "master_addr": "10.78.2.21"},
    }
    assert inventory["all"]["children"]["sparkfleet_endpoint"]["hosts"] == {
        "lab-endpoint": {"ansible_host": "10.77.0.5"}, "lab-endpoint2": {"ansible_host": "10.77.0.6"}}
    # ssh + sudo, as on DGX OS, scoped to the groups Ansible logs in to: the
    # controller's implicit localhost takes `all` vars and must never become.
    assert "vars" not in inventory["all"]
    for group in ("sparkfleet_nodes", "sparkfleet_endpoint"):
        assert {k: v for k, v in inventory["all"]["children"][group]["vars"].items()
                if k.startswith("ansible_")} == {"ansible_user": "sparkops", "ansible_become": True}
    # Two endpoint hosts hold one virtual IP, as inventory/example's.
    assert inventory["all"]["children"]["sparkfleet_endpoint"]["vars"]["fleet_endpoint_vip"] == "10.77.0.100"
    single = yaml.safe_load(lib.render_inventory(nodes, endpoints[:1]))
    assert "fleet_endpoint_vip" not in single["all"]["children"]["sparkfleet_endpoint"]["vars"]


def _shape(inventory):
    """{group: (host keys, group var keys)} of an inventory's hosts.yml."""
    children = inventory["all"]["children"]
    return {group: ({key for hv in body["hosts"].values() for key in hv}, set(body.get("vars") or {}))
            for group, body in children.items()}, set(inventory["all"].get("vars") or {})


def test_lab_inventory_has_exactly_the_example_inventorys_shape():
    nodes, endpoints = lib.address_plan(2)
    for node in nodes:
        node["fabric_interface"] = "eth1"
    lab = yaml.safe_load(lib.render_inventory(nodes, endpoints))
    with open(os.path.join(ROOT, "inventory", "example", "hosts.yml"), encoding="utf-8") as handle:
        example = yaml.safe_load(handle)
    assert _shape(lab) == _shape(example)
    # Every host key the example states, and nothing the lab alone needs.
    host_keys = _shape(lab)[0]["sparkfleet_nodes"][0]
    assert host_keys == {"ansible_host", "sparkfleet_pair", "sparkfleet_node_role", "sparkfleet_fabric_interface",
                         "sparkfleet_fabric_hca", "sparkfleet_fabric_address", "sparkfleet_fabric_prefix"}


# What the lab truly sets differently from a Spark fleet, and nothing more:
# a new key here is a new lab-only branch to justify (and to cover by a test).
LAB_OVERRIDES = {
    # connection: the lab's own key and throw-away host keys
    "ansible_ssh_private_key_file", "ansible_ssh_common_args",
    # hardware the lab machine does not have
    "sparkfleet_meminfo_path", "sparkfleet_drop_caches_path", "spark_fabric_sysfs_root",
    "sparkfleet_memlock_bytes", "sparkfleet_shm_size", "spark_fabric_nccl_check_skip_reason",
    "spark_fabric_manage_link", "spark_host_install_docker", "sparkfleet_reboot_method",
    "sparkfleet_reboot_container",
    # the image source: the simulator, offline
    "sparkfleet_image_build", "spark_image_base_archive", "spark_image_vllm_ref", "spark_image_kernel_pins",
    "sparkfleet_image_ref", "spark_image_archive", "spark_image_build_need_gib", "sparkfleet_disk_reserve_gib",
    "spark_model_seed_dir",
    # the simulator's pace
    "sparkfleet_roll_drain_cap", "spark_service_env_extra", "spark_service_env_unchecked_pattern",
    "spark_health_startup_timeout",
    # where the lab keeps its state
    "sparkfleet_fleet_name", "sparkfleet_benchmark_dir",
}


def test_lab_overrides_live_in_one_file_each_with_its_reason():
    group_vars = os.path.join(ROOT, "inventory", "lab", "group_vars")
    path = os.path.join(group_vars, "sparkfleet_nodes.yml")
    assert os.path.realpath(os.path.join(group_vars, "sparkfleet_endpoint.yml")) == os.path.realpath(path)
    assert sorted(n for n in os.listdir(group_vars) if n != "all.yml") == ["sparkfleet_endpoint.yml",
                                                                          "sparkfleet_nodes.yml"]
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert set(yaml.safe_load(text)) == LAB_OVERRIDES
    # Each key is under a comment: the line above it is a comment or another key of its group.
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-")):
            above = lines[number - 1]
            assert above.startswith("#") or (above and not above.startswith(" ")), "no reason above: %s" % line
    # No lab-only GPU switch: the serving argv keeps --gpus, as on a Spark.
    assert "spark_service_gpus" not in text


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


def test_image_vars_pin_each_release_simulator_base_by_id_and_each_node_takes_its_own():
    import jinja2
    import yaml
    text = lib.render_image_vars({"0.33.0": ("sparkfleet/vllm-sim:abc", "sha256:" + "1" * 64),
                                  "0.34.0": ("sparkfleet/vllm-sim:def", "sha256:" + "2" * 64)})
    data = yaml.safe_load(text)
    assert data["lab_sim_images"] == {"0.33.0": {"ref": "sparkfleet/vllm-sim:abc", "id": "sha256:" + "1" * 64},
                                      "0.34.0": {"ref": "sparkfleet/vllm-sim:def", "id": "sha256:" + "2" * 64}}
    for version, ref, image in (("0.33.0", "abc", "1"), ("0.34.0", "def", "2")):
        env = {"lab_sim_images": data["lab_sim_images"], "sparkfleet_vllm_version": version}
        assert jinja2.Template(data["spark_image_base"]).render(env) == "sparkfleet/vllm-sim:" + ref
        assert jinja2.Template(data["spark_image_base_digest"]).render(env) == "sha256:" + image * 64


def test_the_lab_builds_a_simulator_for_every_pinned_release():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    assert lib.pinned_vllm_releases(root) == ["0.33.0", "0.34.0"]
    assert lib.pinned_vllm_version(root) in lib.pinned_vllm_releases(root)


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


def test_node_docker_trusts_only_the_lab_registry_over_plain_http():
    import json

    daemon = json.loads(lib.node_docker_daemon_json())
    assert daemon == {"storage-driver": "overlay2", "insecure-registries": ["10.77.0.5:5000"]}
    _, endpoints = lib.address_plan(1)
    assert lib.LAB_REGISTRY == endpoints[0]["mgmt_address"] + ":5000"
