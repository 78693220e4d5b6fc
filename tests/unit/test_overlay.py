"""The overlay, applied to the real vLLM sources of the pinned release.

The file the mxfp4 entry patches is read from the pinned wheel
(sparkfleet_vllm_release, verified by sha256) and laid out in a temporary tree
at its real path, so these tests fail when the overlay no longer fits the
release sparkfleet deploys. Nothing of vLLM is imported.
"""

import ast
import json
import os
import subprocess
import sys

import pytest
import yaml

import sparkfleet_overlay as overlay
import sparkfleet_vllm_release as release
from conftest import ROOT

OVERLAY = os.path.join(ROOT, "files", "overlay")
ENTRY = "mxfp4-moe-cleanup"
TARGET = "vllm/model_executor/layers/quantization/mxfp4.py"
SITE = "        self._setup_kernel(layer, w13, w2, w13_scale, w2_scale, w13_bias, w2_bias)\n"
MARKER = "# sparkfleet overlay (mxfp4-moe-cleanup):"
DEL = "del w13, w2, w13_scale, w2_scale, w13_bias, w2_bias"
EMPTY = "torch.accelerator.empty_cache()"
BLOCK_TAIL = "        %s\n        %s\n" % (DEL, EMPTY)


def pinned_version():
    with open(os.path.join(ROOT, "group_vars", "all", "fleet.yml"), encoding="utf-8") as handle:
        return str(yaml.safe_load(handle)["sparkfleet_vllm_version"])


VERSION = pinned_version()


def _entry_releases():
    with open(os.path.join(OVERLAY, "manifest.yml"), encoding="utf-8") as handle:
        return next(e for e in yaml.safe_load(handle)["entries"] if e["name"] == ENTRY)["releases"]


@pytest.fixture(scope="module", params=_entry_releases())
def version(request):
    """Every release the entry says it was written and tested against."""
    return request.param


@pytest.fixture(scope="module")
def upstream(version):
    """mxfp4.py exactly as the release ships it."""
    with release.Wheel(release.wheel_path(version, ROOT)) as wheel:
        return wheel.read_text(TARGET)


@pytest.fixture
def manifest():
    with open(os.path.join(OVERLAY, "manifest.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture
def hunks():
    with open(os.path.join(OVERLAY, "patches", "mxfp4-moe-cleanup.patch"), encoding="utf-8") as handle:
        return overlay.parse_patch(handle.read(), "patches/mxfp4-moe-cleanup.patch")[1]


@pytest.fixture
def tree(tmp_path, upstream):
    """A tree holding the real mxfp4.py at its real path."""
    root = tmp_path / "tree"
    path = root / TARGET
    path.parent.mkdir(parents=True)
    path.write_text(upstream, encoding="utf-8")
    return str(root)


def read(tree):
    with open(os.path.join(tree, TARGET), encoding="utf-8") as handle:
        return handle.read()


def write(tree, text):
    with open(os.path.join(tree, TARGET), "w", encoding="utf-8") as handle:
        handle.write(text)


def method(source, class_name, name):
    """The FunctionDef `class_name.name` in `source`."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    return item
    raise AssertionError("%s.%s not found" % (class_name, name))


# ---------------------------------------------------------------- the shipped entry

def test_shipped_manifest_is_valid_and_targets_the_pinned_release(manifest):
    assert overlay.validate_manifest(manifest, OVERLAY) == []
    described = overlay.describe(manifest, OVERLAY)
    assert [e["name"] for e in described["entries"]] == [ENTRY]
    assert len(described["manifest_sha256"]) == 64
    entry = manifest["entries"][0]
    assert entry["target"] == TARGET
    assert VERSION in entry["releases"], "the pinned vLLM %s is not in the entry's releases" % VERSION


def test_the_site_is_the_deepseek_v4_moe_method_in_the_real_file(upstream, hunks, version):
    # Two methods end with the same `_setup_kernel` call; DeepSeek-V4-Flash's
    # MXFP4 experts get Mxfp4MoEMethod (the GPT-OSS one is for gpt_oss only).
    assert upstream.count(SITE) == 2
    assert upstream.count(DEL) == 0 and upstream.count(MARKER) == 0
    with release.Wheel(release.wheel_path(version, ROOT)) as wheel:
        quant_config = wheel.read_text("vllm/models/deepseek_v4/quant_config.py")
    assert "return Mxfp4MoEMethod(layer.moe_config" in quant_config
    # The hunk was written against the first release it lists; on a later one
    # the applier finds its context where the method moved.
    site = method(upstream, "Mxfp4MoEMethod", "process_weights_after_loading").end_lineno - 1
    if version == _entry_releases()[0]:
        assert [h.old_start for h in hunks] == [site]
    lines = upstream.splitlines(True)
    for hunk in hunks:
        # Unique context: the applier takes the match nearest the hunk's line,
        # so a context that also matched the GPT-OSS site could patch the wrong one.
        matches = [i for i in range(len(lines)) if lines[i:i + len(hunk.old_lines)] == hunk.old_lines]
        assert matches == [site - 1], hunk.describe()
        assert overlay.find_block(lines, hunk.old_lines, hunk.old_start - 1) == site - 1
        assert overlay.patch_state(upstream, [hunk]) == ["applicable"]


def test_cleanup_applies_once_and_its_invariants_hold(manifest, tree, upstream):
    report = overlay.apply_overlay(manifest, OVERLAY, tree)
    assert report == {"entries": [{"name": ENTRY, "result": "applied"}], "changed": [ENTRY]}
    patched = read(tree)
    assert overlay.check_invariants(manifest["entries"][0], tree) == []
    assert patched.count(MARKER) == 1
    assert patched.count(DEL) == 1
    assert patched.count(BLOCK_TAIL) == 1
    assert patched.count(EMPTY) == upstream.count(EMPTY) + 1
    ast.parse(patched, TARGET)
    # Only lines are added, right after the DeepSeek-V4 site.
    added = patched.splitlines(True)
    assert len(added) - len(upstream.splitlines(True)) == 8
    at = patched.index(SITE, patched.index("class Mxfp4MoEMethod")) + len(SITE)
    assert patched[at:].startswith("\n        " + MARKER)
    assert patched.replace(patched[at:patched.index(BLOCK_TAIL) + len(BLOCK_TAIL)], "", 1) == upstream


def test_the_block_is_in_mxfp4moemethod_and_gpt_oss_is_untouched(manifest, tree, upstream):
    overlay.apply_overlay(manifest, OVERLAY, tree)
    patched = read(tree)
    gpt_oss = [method(text, "GptOssMxfp4MoEMethod", "process_weights_after_loading") for text in (upstream, patched)]
    assert ast.dump(gpt_oss[0]) == ast.dump(gpt_oss[1])
    body = method(patched, "Mxfp4MoEMethod", "process_weights_after_loading").body
    calls = [ast.unparse(statement) for statement in body[-3:]]
    assert calls == ["self._setup_kernel(layer, w13, w2, w13_scale, w2_scale, w13_bias, w2_bias)",
                     "del w13, w2, w13_scale, w2_scale, w13_bias, w2_bias",
                     "torch.accelerator.empty_cache()"]


def test_every_name_deleted_is_bound_on_the_path_to_the_del(manifest, tree):
    overlay.apply_overlay(manifest, OVERLAY, tree)
    function = method(read(tree), "Mxfp4MoEMethod", "process_weights_after_loading")
    deletes = [node for node in ast.walk(function) if isinstance(node, ast.Delete)]
    assert len(deletes) == 1
    # The del is a statement of the method body itself (no branch or loop
    # around it), and every name it deletes is assigned by an earlier
    # statement of that same body, which the path to the del always runs.
    position = function.body.index(deletes[0])
    bound = set()
    for statement in function.body[:position]:
        if isinstance(statement, ast.Assign):
            bound.update(target.id for target in statement.targets if isinstance(target, ast.Name))
    deleted = [target.id for target in deletes[0].targets]
    assert deleted == ["w13", "w2", "w13_scale", "w2_scale", "w13_bias", "w2_bias"]
    assert set(deleted) <= bound


class _Recorder(object):
    def __init__(self):
        self.calls = []


def run_process_weights_after_loading(source):
    """Execute Mxfp4MoEMethod.process_weights_after_loading of `source` with stand-ins.

    Only the method is compiled: vLLM is not imported. Returns the calls it made.
    """
    function = method(source, "Mxfp4MoEMethod", "process_weights_after_loading")
    recorder = _Recorder()

    class Accelerator(object):
        @staticmethod
        def empty_cache():
            recorder.calls.append("empty_cache")

    class Torch(object):
        accelerator = Accelerator

    class Backend(object):
        NONE = "none"
        FLASHINFER_TRTLLM_MXFP4_MXFP8 = "trtllm"

    class Method(object):
        mxfp4_backend = "marlin"
        is_k3_situ_int4_gfx942 = False

        def _setup_kernel(self, layer, *weights):
            recorder.calls.append(("setup", weights))

    class Layer(object):
        w13_weight, w2_weight, w13_weight_scale, w2_weight_scale = "w13", "w2", "s13", "s2"

    namespace = {"torch": Torch, "Mxfp4MoeBackend": Backend, "is_weights_pre_processed": lambda: False,
                 "RoutedExperts": Layer}
    exec(compile(ast.Module(body=[function], type_ignores=[]), TARGET, "exec"), namespace)
    namespace["process_weights_after_loading"](Method(), Layer())
    return recorder.calls


def test_the_patched_method_runs_and_empties_the_cache_after_setup(manifest, tree):
    overlay.apply_overlay(manifest, OVERLAY, tree)
    assert run_process_weights_after_loading(read(tree)) == [
        ("setup", ("w13", "w2", "s13", "s2", None, None)), "empty_cache"]


def test_a_duplicated_block_raises_unbound_local_error_and_the_invariants_catch_it(manifest, tree):
    # Why the `del` must occur once: the field failure, replayed on the method.
    overlay.apply_overlay(manifest, OVERLAY, tree)
    write(tree, read(tree).replace(BLOCK_TAIL, BLOCK_TAIL + BLOCK_TAIL))
    with pytest.raises(UnboundLocalError):
        run_process_weights_after_loading(read(tree))
    broken = overlay.check_invariants(manifest["entries"][0], tree)
    assert "%s: `%s` occurs 2 times in %s, must be exactly 1" % (ENTRY, DEL, TARGET) in "; ".join(broken)


def test_applying_to_a_patched_tree_changes_nothing(manifest, tree):
    overlay.apply_overlay(manifest, OVERLAY, tree)
    before = read(tree)
    report = overlay.apply_overlay(manifest, OVERLAY, tree)
    assert report == {"entries": [{"name": ENTRY, "result": "already-present"}], "changed": []}
    assert read(tree) == before


def test_a_block_pasted_twice_by_hand_is_named(manifest, tree, hunks):
    # The field failure: the cleanup re-applied by hand right under itself.
    overlay.apply_overlay(manifest, OVERLAY, tree)
    patched = read(tree)
    start = patched.index("        " + MARKER)
    block = patched[start:patched.index(BLOCK_TAIL) + len(BLOCK_TAIL)]
    write(tree, patched.replace(block, block + block))
    with pytest.raises(overlay.OverlayError) as err:
        overlay.apply_overlay(manifest, OVERLAY, tree)
    message = str(err.value)
    assert message.startswith("%s: patches/mxfp4-moe-cleanup.patch hunk 1 (%s) neither applies"
                              % (ENTRY, hunks[0].header))
    assert "the file already breaks this entry's invariants" in message
    assert "`%s` occurs 2 times in %s, must be exactly 1" % (MARKER, TARGET) in message
    assert "`%s` occurs 2 times in %s, must be exactly 1" % (DEL, TARGET) in message


def test_a_second_copy_elsewhere_breaks_the_invariants(manifest, tree):
    overlay.apply_overlay(manifest, OVERLAY, tree)
    with open(os.path.join(tree, TARGET), "a", encoding="utf-8") as handle:
        handle.write("\n\ndef again(w13, w2, w13_scale, w2_scale, w13_bias, w2_bias):\n"
                     "        %s\n" % DEL + "        %s\n" % EMPTY)
    with pytest.raises(overlay.OverlayError) as err:
        overlay.apply_overlay(manifest, OVERLAY, tree)
    reasons = {i["literal"]: i["reason"] for i in manifest["entries"][0]["invariants"]}
    assert str(err.value) == (
        "overlay invariants broken after apply: "
        "%s: `%s` occurs 2 times in %s, must be exactly 1 (%s); "
        "%s: `%s` occurs 2 times in %s, must be exactly 1 (%s)"
        % (ENTRY, DEL, TARGET, reasons[DEL], ENTRY, BLOCK_TAIL.replace("\n", "\\n"), TARGET, reasons[BLOCK_TAIL]))


# ---------------------------------------------------------------- another release

@pytest.mark.parametrize("old, new", [
    # the call grows keyword arguments
    (SITE, SITE.replace("w13_bias, w2_bias)", "w13_bias=w13_bias, w2_bias=w2_bias)")),
    # the method after the site is reformatted
    ("    def get_fused_moe_quant_config(\n        self,\n        layer: RoutedExperts,\n",
     "    def get_fused_moe_quant_config(\n        self, layer: RoutedExperts,\n"),
], ids=["setup-call-changed", "next-method-changed"])
def test_a_release_whose_context_differs_fails_naming_entry_and_hunk(manifest, tree, upstream, hunks, old, new):
    assert upstream.count(old) in (1, 2)
    write(tree, upstream.replace(old, new))
    with pytest.raises(overlay.OverlayError) as err:
        overlay.apply_overlay(manifest, OVERLAY, tree)
    message = str(err.value)
    assert message.startswith(
        "%s: patches/mxfp4-moe-cleanup.patch hunk 1 (%s) neither applies to %s nor is "
        "already present; expected near line %d:\n" % (ENTRY, hunks[0].header, TARGET, hunks[0].old_start)), message
    assert hunks[0].header == "@@ -1037,6 +1037,14 @@"
    assert "    |         self._setup_kernel(layer, w13, w2, w13_scale" in message
    assert "the entry was written for vLLM %s" % ", ".join(_entry_releases()) in message
    assert "breaks this entry's invariants" not in message  # an unpatched file, not a duplicated block
    assert read(tree) == upstream.replace(old, new)


def test_a_release_that_only_moves_the_site_still_applies(manifest, tree, upstream):
    moved = upstream.replace("logger = init_logger(__name__)\n", "logger = init_logger(__name__)\n" + "\n" * 40, 1)
    write(tree, moved)
    assert overlay.apply_overlay(manifest, OVERLAY, tree)["changed"] == [ENTRY]
    assert overlay.check_invariants(manifest["entries"][0], tree) == []
    ast.parse(read(tree))


def test_a_tree_without_the_target_is_named(manifest, tmp_path):
    (tmp_path / "vllm").mkdir()
    with pytest.raises(overlay.OverlayError) as err:
        overlay.apply_overlay(manifest, OVERLAY, str(tmp_path))
    assert str(err.value).startswith("%s: target %s does not exist under %s" % (ENTRY, TARGET, tmp_path))


def test_dry_run_writes_nothing(manifest, tree):
    before = read(tree)
    report = overlay.apply_overlay(manifest, OVERLAY, tree, dry_run=True)
    assert report["changed"] == [ENTRY]
    assert read(tree) == before


def test_cli_apply_then_check(manifest, tree, tmp_path):
    (tmp_path / "overlay" / "patches").mkdir(parents=True)
    with open(os.path.join(OVERLAY, "patches", "mxfp4-moe-cleanup.patch"), encoding="utf-8") as handle:
        (tmp_path / "overlay" / "patches" / "mxfp4-moe-cleanup.patch").write_text(handle.read(), encoding="utf-8")
    with open(str(tmp_path / "overlay" / "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    script = os.path.join(ROOT, "plugins", "module_utils", "sparkfleet_overlay.py")
    args = ["--manifest", str(tmp_path / "overlay" / "manifest.json"), "--root", tree]
    check = subprocess.run([sys.executable, script, "check"] + args, capture_output=True, text=True)
    assert check.returncode == 1 and "not applied in this tree: %s" % ENTRY in check.stderr
    assert subprocess.run([sys.executable, script, "apply"] + args, capture_output=True).returncode == 0
    check = subprocess.run([sys.executable, script, "check"] + args, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "%s: already-present" % ENTRY in check.stdout
    ast.parse(read(tree))


# ---------------------------------------------------------------- the applier in general

def test_partly_applied_patch_is_refused(tmp_path):
    (tmp_path / "p.patch").write_text(
        "--- a/t.py\n+++ b/t.py\n@@ -1,2 +1,3 @@\n a\n+X\n b\n@@ -7,2 +8,3 @@\n g\n+Y\n h\n")
    manifest = {"entries": [{"name": "two", "kind": "patch", "source": "p.patch", "target": "t.py", "why": "test"}]}
    (tmp_path / "t.py").write_text("a\nX\nb\nc\nd\ne\nf\ng\nh\n")
    with pytest.raises(overlay.OverlayError) as err:
        overlay.apply_overlay(manifest, str(tmp_path), str(tmp_path))
    assert "partly applied" in str(err.value) and "hunk 2" in str(err.value)
    assert (tmp_path / "t.py").read_text() == "a\nX\nb\nc\nd\ne\nf\ng\nh\n"


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
    ({"name": "x", "kind": "patch", "source": "p", "target": "t", "why": "w", "releases": "0.33.0"},
     "'releases' must be a non-empty list"),
    ({"name": "x", "kind": "patch", "source": "p", "target": "t", "why": "w", "releases": []},
     "'releases' must be a non-empty list"),
    ({"name": "x", "kind": "patch", "source": "p", "target": "t", "why": "w", "releases": [0.33]},
     "'releases' entry 0.33 is not a string (quote versions in YAML)"),
    ({"name": "x", "kind": "patch", "source": "p", "target": "t", "why": "w", "releases": ["v0.33.0"]},
     "'releases' entry 'v0.33.0' is not a vLLM version"),
    ({"name": "x", "kind": "patch", "source": "p", "target": "t", "why": "w", "releases": ["0.33.0", "0.33.0"]},
     "'releases' lists a version twice"),
])
def test_manifest_problems_are_named(entry, problem):
    problems = overlay.validate_manifest({"entries": [entry]})
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("releases", [["0.33.0"], ["0.33.0", "0.33.1rc1", "0.34.0.post1", "0.33.0+cu130"]])
def test_release_lists_are_accepted(releases):
    entry = {"name": "x", "kind": "patch", "source": "p", "target": "t", "why": "w", "releases": releases}
    assert overlay.validate_manifest({"entries": [entry]}) == []
