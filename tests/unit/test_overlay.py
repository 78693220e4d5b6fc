import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

import sparkfleet_overlay as overlay
from conftest import ROOT

OVERLAY = os.path.join(ROOT, "files", "overlay")
TREE = os.path.join(ROOT, "lab", "vllm_sim", "vllm_tree")
TARGET = "vllm/model_executor/layers/quantization/utils/mxfp4_moe_backend.py"


@pytest.fixture
def manifest():
    with open(os.path.join(OVERLAY, "manifest.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture
def tree(tmp_path):
    shutil.copytree(TREE, str(tmp_path / "tree"))
    return str(tmp_path / "tree")


def read(tree):
    with open(os.path.join(tree, TARGET), encoding="utf-8") as handle:
        return handle.read()


def test_shipped_manifest_is_valid(manifest):
    assert overlay.validate_manifest(manifest, OVERLAY) == []
    described = overlay.describe(manifest, OVERLAY)
    assert [e["name"] for e in described["entries"]] == ["mxfp4-moe-cleanup"]
    assert len(described["manifest_sha256"]) == 64


def test_mxfp4_cleanup_applies_once_and_its_invariants_hold(manifest, tree):
    assert read(tree).count("torch.cuda.empty_cache()") == 1
    report = overlay.apply_overlay(manifest, OVERLAY, tree)
    assert report["changed"] == ["mxfp4-moe-cleanup"]
    patched = read(tree)
    assert patched.count("torch.cuda.empty_cache()") == 2
    assert patched.count("del w13, w2, w13_scale, w2_scale") == 1
    compile(patched, TARGET, "exec")


def test_applying_to_a_patched_tree_changes_nothing(manifest, tree):
    overlay.apply_overlay(manifest, OVERLAY, tree)
    before = read(tree)
    report = overlay.apply_overlay(manifest, OVERLAY, tree)
    assert report["changed"] == []
    assert report["entries"] == [{"name": "mxfp4-moe-cleanup", "result": "already-present"}]
    assert read(tree) == before


BLOCK = "    del w13, w2, w13_scale, w2_scale\n    torch.cuda.empty_cache()\n"


def test_a_block_pasted_twice_by_hand_is_named(manifest, tree):
    # The field failure: the cleanup re-applied by hand right under itself.
    overlay.apply_overlay(manifest, OVERLAY, tree)
    text = read(tree)
    with open(os.path.join(tree, TARGET), "w", encoding="utf-8") as handle:
        handle.write(text.replace(BLOCK, BLOCK + BLOCK))
    with pytest.raises(overlay.OverlayError) as err:
        overlay.apply_overlay(manifest, OVERLAY, tree)
    assert "hunk 1 (@@ -31,6 +31,13 @@) neither applies" in str(err.value)
    assert "`torch.cuda.empty_cache()` occurs 3 times in %s, must be exactly 2" % TARGET in str(err.value)


def test_a_second_copy_elsewhere_breaks_the_invariant(manifest, tree):
    overlay.apply_overlay(manifest, OVERLAY, tree)
    with open(os.path.join(tree, TARGET), "a", encoding="utf-8") as handle:
        handle.write("\n\ndef again(w13, w2, w13_scale, w2_scale):\n" + BLOCK)
    with pytest.raises(overlay.OverlayError) as err:
        overlay.apply_overlay(manifest, OVERLAY, tree)
    assert str(err.value) == (
        "overlay invariants broken after apply: mxfp4-moe-cleanup: `torch.cuda.empty_cache()` occurs 3 times in "
        "%s, must be exactly 2 (one upstream, one from this entry; more means the cleanup block is duplicated); "
        "mxfp4-moe-cleanup: `del w13, w2, w13_scale, w2_scale` occurs 2 times in %s, must be exactly 1 "
        "(a second `del` of the same locals raises UnboundLocalError at load)" % (TARGET, TARGET))


def test_conflicting_patch_names_file_and_hunk(manifest, tree):
    path = os.path.join(tree, TARGET)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace("    layer.mxfp4_kernel = kernel\n", "    layer.kernel = kernel\n"))
    with pytest.raises(overlay.OverlayError) as err:
        overlay.apply_overlay(manifest, OVERLAY, tree)
    message = str(err.value)
    assert message.startswith("mxfp4-moe-cleanup: patches/mxfp4-moe-cleanup.patch hunk 1 (@@ -31,6 +31,13 @@)")
    assert "neither applies to %s nor is already present; expected near line 31" % TARGET in message
    assert "layer.mxfp4_kernel = kernel" in message


def test_dry_run_writes_nothing(manifest, tree):
    before = read(tree)
    report = overlay.apply_overlay(manifest, OVERLAY, tree, dry_run=True)
    assert report["changed"] == ["mxfp4-moe-cleanup"]
    assert read(tree) == before


def test_partly_applied_patch_is_refused(tmp_path):
    (tmp_path / "t.py").write_text("a\nb\nc\nd\ne\nf\ng\nh\n")
    (tmp_path / "p.patch").write_text(
        "--- a/t.py\n+++ b/t.py\n@@ -1,2 +1,3 @@\n a\n+X\n b\n@@ -7,2 +8,3 @@\n g\n+Y\n h\n")
    manifest = {"entries": [{"name": "two", "kind": "patch", "source": "p.patch", "target": "t.py", "why": "test"}]}
    (tmp_path / "t.py").write_text("a\nX\nb\nc\nd\ne\nf\ng\nh\n")
    with pytest.raises(overlay.OverlayError) as err:
        overlay.apply_overlay(manifest, str(tmp_path), str(tmp_path))
    assert "partly applied" in str(err.value) and "hunk 2" in str(err.value)


def test_two_hunks_apply_with_offsets(tmp_path):
    (tmp_path / "t.py").write_text("0\na\nb\nc\nd\ne\nf\ng\nh\n")
    (tmp_path / "p.patch").write_text(
        "--- a/t.py\n+++ b/t.py\n@@ -1,2 +1,3 @@\n a\n+X\n b\n@@ -7,2 +8,2 @@\n g\n-h\n+H\n")
    manifest = {"entries": [{"name": "two", "kind": "patch", "source": "p.patch", "target": "t.py", "why": "test"}]}
    overlay.apply_overlay(manifest, str(tmp_path), str(tmp_path))
    assert (tmp_path / "t.py").read_text() == "0\na\nX\nb\nc\nd\ne\nf\ng\nH\n"
    assert overlay.apply_overlay(manifest, str(tmp_path), str(tmp_path))["changed"] == []


def test_replacement_file_refuses_an_unknown_upstream_version(tmp_path):
    (tmp_path / "new.py").write_text("new\n")
    (tmp_path / "t.py").write_text("someone else's\n")
    known = overlay.sha256_bytes(b"upstream\n")
    manifest = {"entries": [{"name": "swap", "kind": "file", "source": "new.py", "target": "t.py", "why": "test",
                             "replaces_sha256": [known]}]}
    with pytest.raises(overlay.OverlayError) as err:
        overlay.apply_overlay(manifest, str(tmp_path), str(tmp_path))
    assert "neither the overlay's version nor one it is meant to replace" in str(err.value)
    (tmp_path / "t.py").write_text("upstream\n")
    assert overlay.apply_overlay(manifest, str(tmp_path), str(tmp_path))["changed"] == ["swap"]
    assert overlay.apply_overlay(manifest, str(tmp_path), str(tmp_path))["changed"] == []


@pytest.mark.parametrize("entry, problem", [
    ({"kind": "patch", "source": "p", "target": "t", "why": "w"}, "'name' must be"),
    ({"name": "x", "kind": "sed", "source": "p", "target": "t", "why": "w"}, "'kind' must be one of"),
    ({"name": "x", "kind": "patch", "source": "p", "target": "/etc/t", "why": "w"}, "must be a relative path"),
    ({"name": "x", "kind": "patch", "source": "p", "target": "t"}, "'why' is required"),
    ({"name": "x", "kind": "patch", "source": "p", "target": "t", "why": "w",
      "invariants": [{"literal": "a", "count": -1}]}, "'count' must be a whole number"),
])
def test_manifest_problems_are_named(entry, problem):
    problems = overlay.validate_manifest({"entries": [entry]})
    assert any(problem in p for p in problems), problems


def test_cli_apply_then_check(manifest, tree, tmp_path):
    shutil.copytree(OVERLAY, str(tmp_path / "overlay"))
    with open(str(tmp_path / "overlay" / "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    script = os.path.join(ROOT, "plugins", "module_utils", "sparkfleet_overlay.py")
    args = ["--manifest", str(tmp_path / "overlay" / "manifest.json"), "--root", tree]
    check = subprocess.run([sys.executable, script, "check"] + args, capture_output=True, text=True)
    assert check.returncode == 1 and "not applied in this tree: mxfp4-moe-cleanup" in check.stderr
    assert subprocess.run([sys.executable, script, "apply"] + args, capture_output=True).returncode == 0
    check = subprocess.run([sys.executable, script, "check"] + args, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "mxfp4-moe-cleanup: already-present" in check.stdout
