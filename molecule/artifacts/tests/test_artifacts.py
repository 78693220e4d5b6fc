"""Verify a pair's artifacts: one overlaid image on both nodes, identical weights."""

import json

import pytest

HEAD = "molecule-art-a1"
WORKER = "molecule-art-a2"
testinfra_hosts = [HEAD, WORKER]
# The real vllm file of the image's release (the simulator image carries it
# from the pinned wheel) and, per release, the line of Mxfp4MoEMethod's
# `_setup_kernel` call the patch's hunk is anchored on; the same call text also
# sits in the GPT-OSS method (403 in 0.33.0, 405 in 0.34.0), which the patch
# leaves alone.
TARGET = "vllm/model_executor/layers/quantization/mxfp4.py"
SETUP_KERNEL_LINES = {"0.33.0": 1038, "0.34.0": 1052}
SETUP_KERNEL_CALL = "self._setup_kernel(layer, w13, w2, w13_scale, w2_scale, w13_bias, w2_bias)"
MARKER = "# sparkfleet overlay (mxfp4-moe-cleanup):"
DEL_LINE = "del w13, w2, w13_scale, w2_scale, w13_bias, w2_bias"
HUNK = "@@ -1037,6 +1037,14 @@"
MODEL_DIR = "/var/lib/sparkfleet/models/DeepSeek-V4-Flash"
SHARDS = ["model-0000%d-of-00003.safetensors" % n for n in (1, 2, 3)]


def serving_images(host):
    out = host.check_output("docker image ls --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' "
                            "sparkfleet/vllm-spark")
    return dict(line.split() for line in out.splitlines())


@pytest.fixture(scope="module")
def head_image(host):
    images = serving_images(host.get_host("docker://" + HEAD))
    assert len(images) == 1, images
    return next(iter(images.items()))


@pytest.fixture(scope="module")
def setup_kernel_line(host, head_image):
    release = host.check_output("docker image inspect --format "
                                "'{{index .Config.Labels \"io.sparkfleet.vllm-version\"}}' %s" % head_image[0])
    return SETUP_KERNEL_LINES[release.strip()]


def in_image(host, ref, script):
    return host.run("docker run --rm --network=none --entrypoint sh %s -c %s" % (ref, _quote(script)))


def _quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_both_nodes_hold_the_same_image_id(host, head_image):
    assert serving_images(host) == {head_image[0]: head_image[1]}


def test_tag_is_derived_from_the_dockerfile(host, head_image):
    if host.backend.get_hostname() != HEAD:
        pytest.skip("the build context lives on the head")
    tag = head_image[0].split(":")[1]
    dockerfile = host.file("/var/lib/sparkfleet/image-build/%s/Dockerfile" % tag)
    assert dockerfile.exists
    assert host.check_output("sha256sum %s" % dockerfile.path).split()[0][:16] == tag


def test_image_carries_its_provenance(host, head_image):
    labels = json.loads(host.check_output("docker image inspect --format '{{json .Config.Labels}}' %s"
                                          % head_image[0]))
    base_id = labels["io.sparkfleet.base-digest"]
    assert base_id.startswith("sha256:")
    assert labels["io.sparkfleet.vllm-ref"] == "vllm-sim"
    assert len(labels["io.sparkfleet.overlay.manifest-sha256"]) == 64
    assert labels["io.sparkfleet.overlay.mxfp4-moe-cleanup"].startswith("patch ")
    assert labels["io.sparkfleet.build-args"] == "TORCH_CUDA_ARCH_LIST=12.1a"
    assert labels["io.sparkfleet.build-time"].endswith("Z")


def test_overlay_is_applied_exactly_once_in_the_image(host, head_image, setup_kernel_line):
    for literal in (MARKER, DEL_LINE):
        result = in_image(host, head_image[0], "grep -cF %s /usr/local/lib/python3.11/dist-packages/%s"
                          % (_quote(literal), TARGET))
        assert result.stdout.strip() == "1", literal
    # the block opens right after Mxfp4MoEMethod's kernel setup (not the GPT-OSS
    # call): the call, a blank line, the marker comment ... del, empty_cache
    result = in_image(host, head_image[0], "sed -n '%d,%dp' /usr/local/lib/python3.11/dist-packages/%s"
                      % (setup_kernel_line, setup_kernel_line + 12, TARGET))
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[0] == SETUP_KERNEL_CALL and lines[2].startswith(MARKER)
    assert DEL_LINE + "\ntorch.accelerator.empty_cache()" in "\n".join(lines)


def test_reapplying_the_overlay_changes_nothing(host, head_image):
    result = in_image(host, head_image[0],
                      "f=/usr/local/lib/python3.11/dist-packages/%s; before=$(sha256sum $f); "
                      "python3 /opt/sparkfleet/overlay/sparkfleet_overlay.py apply "
                      "--manifest /opt/sparkfleet/overlay/manifest.json && "
                      "test \"$before\" = \"$(sha256sum $f)\"" % TARGET)
    assert result.rc == 0, result.stderr
    assert "mxfp4-moe-cleanup: already-present" in result.stdout
    assert '"changed": []' in result.stdout


def test_conflicting_patch_fails_naming_file_and_hunk(host, head_image, setup_kernel_line):
    # Upstream changes the context of the hunk: Mxfp4MoEMethod's kernel setup
    # call (not the GPT-OSS one) gets another argument.
    result = in_image(host, head_image[0],
                      "f=/usr/local/lib/python3.11/dist-packages/%s; "
                      "sed -i '%ds/w13_bias, w2_bias)$/w13_bias, w2_bias, None)/' $f; "
                      "sed -n '%dp' $f | grep -qF 'w2_bias, None)' || { echo 'sed missed line %d' >&2; exit 3; }; "
                      "python3 /opt/sparkfleet/overlay/sparkfleet_overlay.py apply "
                      "--manifest /opt/sparkfleet/overlay/manifest.json"
                      % (TARGET, setup_kernel_line, setup_kernel_line, setup_kernel_line))
    assert result.rc == 1, result.stderr
    assert ("mxfp4-moe-cleanup: patches/mxfp4-moe-cleanup.patch hunk 1 (%s) neither applies "
            "to %s nor is already present" % (HUNK, TARGET)) in result.stderr


def test_weights_are_identical_on_both_nodes(host):
    head = host.get_host("docker://" + HEAD)
    listing = "cd %s && sha256sum config.json model.safetensors.index.json %s" % (MODEL_DIR, " ".join(SHARDS))
    assert host.check_output(listing) == head.check_output(listing)
    assert not host.run("ls %s/*.partial" % MODEL_DIR).succeeded


def test_verification_stamp_records_every_file(host):
    stamp = json.loads(host.file(MODEL_DIR + "/.sparkfleet/verified.json").content_string)
    assert set(SHARDS) <= set(stamp["files"])


def test_worker_repair_moved_only_what_was_damaged(host):
    if host.backend.get_hostname() != WORKER:
        pytest.skip("the repair happened on the worker")
    record = json.loads(host.file("/var/lib/sparkfleet-test/repair.json").content_string)
    moved = {item["path"]: item for item in record["model"]}
    assert sorted(moved) == SHARDS
    assert moved[SHARDS[2]]["resumed_from"] == 524288
    assert moved[SHARDS[0]]["resumed_from"] == 0
    assert record["image"][0]["wire_bytes"] > 0

