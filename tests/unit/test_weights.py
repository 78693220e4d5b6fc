import json
import os
import sys

import pytest

import sparkfleet_weights as weights
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "lab"))
import sparkfleet_lab_lib as lab  # noqa: E402

INDEX = "model.safetensors.index.json"
SHARD2 = "model-00002-of-00003.safetensors"


@pytest.fixture
def head(tmp_path):
    lab.write_fixture_checkpoint(str(tmp_path / "head"), (4096, 4096, 1024))
    return str(tmp_path / "head")


def test_reference_node_hashes_once_then_trusts_its_stamp(head):
    first = weights.verify(head, INDEX)
    assert first["bad"] == {}
    assert SHARD2 in first["manifest"] and INDEX in first["manifest"]
    assert first["hashed"] == sorted(first["manifest"])
    second = weights.verify(head, INDEX)
    assert second["hashed"] == [] and second["skipped"]
    assert second["manifest"] == first["manifest"]
    assert weights.verify(head, INDEX, rehash=True)["hashed"] == first["hashed"]


def test_reference_missing_a_shard_of_its_index_fails(head):
    os.unlink(os.path.join(head, SHARD2))
    with pytest.raises(weights.WeightsError) as err:
        weights.verify(head, INDEX)
    assert "lacks shards its index lists: %s" % SHARD2 in str(err.value)


def copy_tree(src, dst):
    os.makedirs(dst)
    for name in weights.list_files(src):
        with open(os.path.join(src, name), "rb") as a, open(os.path.join(dst, name), "wb") as b:
            b.write(a.read())


def test_worker_missing_and_corrupt_shards_are_named(head, tmp_path):
    manifest = weights.verify(head, INDEX)["manifest"]
    worker = str(tmp_path / "worker")
    copy_tree(head, worker)
    assert weights.verify(worker, INDEX, manifest)["bad"] == {}
    os.unlink(os.path.join(worker, "model-00001-of-00003.safetensors"))
    with open(os.path.join(worker, SHARD2), "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff")  # same size, different bytes: only the hash sees it
    result = weights.verify(worker, INDEX, manifest)
    assert result["bad"]["model-00001-of-00003.safetensors"] == "missing"
    assert result["bad"][SHARD2].startswith("sha256 ")
    assert result["hashed"] == [SHARD2]  # the others are unchanged since their stamp


def test_worker_truncated_shard_is_caught_by_size_without_hashing(head, tmp_path):
    manifest = weights.verify(head, INDEX)["manifest"]
    worker = str(tmp_path / "worker")
    copy_tree(head, worker)
    weights.verify(worker, INDEX, manifest)
    with open(os.path.join(worker, SHARD2), "r+b") as handle:
        handle.truncate(10)
    result = weights.verify(worker, INDEX, manifest)
    assert result["bad"] == {SHARD2: "size 10, expected %d" % manifest[SHARD2]["size"]}
    assert result["hashed"] == []


def test_missing_directory_on_the_worker_means_everything_is_missing(head, tmp_path):
    manifest = weights.verify(head, INDEX)["manifest"]
    result = weights.verify(str(tmp_path / "nothing"), INDEX, manifest)
    assert set(result["bad"]) == set(manifest)


def test_index_naming_a_shard_outside_the_manifest_fails(head, tmp_path):
    manifest = weights.verify(head, INDEX)["manifest"]
    del manifest[SHARD2]
    with pytest.raises(weights.WeightsError) as err:
        weights.verify(head, INDEX, manifest)
    assert "names shards the manifest lacks: %s" % SHARD2 in str(err.value)


def test_seed_copies_only_what_is_missing(head, tmp_path):
    target = str(tmp_path / "target")
    assert len(weights.seed(target, head)) == 5
    assert weights.seed(target, head) == []
    os.unlink(os.path.join(target, SHARD2))
    assert weights.seed(target, head) == [SHARD2]


def test_fixture_is_a_safetensors_checkpoint(head):
    with open(os.path.join(head, INDEX), encoding="utf-8") as handle:
        shards = sorted(set(json.load(handle)["weight_map"].values()))
    assert shards == ["model-0000%d-of-00003.safetensors" % n for n in (1, 2, 3)]
    with open(os.path.join(head, shards[0]), "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    assert list(header.values())[0]["data_offsets"] == [0, 4096]


def test_would_seed_predicts_what_seed_copies(head, tmp_path):
    target = str(tmp_path / "target")
    predicted = weights.would_seed(target, head)
    assert predicted == weights.seed(target, head)
    assert weights.would_seed(target, head) == []
