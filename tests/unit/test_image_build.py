import os
import sys

import jinja2
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "plugins", "filter"))
import sparkfleet as filters  # noqa: E402

OVERLAY = os.path.join(ROOT, "files", "overlay")
BASE = "nvcr.io/nvidia/vllm@sha256:" + "ab" * 32


def render(**overrides):
    values = {
        "spark_image_base": BASE,
        "spark_image_base_digest": "sha256:" + "ab" * 32,
        "spark_image_vllm_source_repo": "https://github.com/vllm-project/vllm.git",
        "spark_image_vllm_ref": "3519c3b88",
        "spark_image_vllm_version": "0.33.0",
        "spark_image_build_args": {"TORCH_CUDA_ARCH_LIST": "12.1a"},
        "spark_image_kernel_pins": {"deepgemm_repo": "https://github.com/jasl/DeepGEMM.git",
                                    "deepgemm_commit": "7a7a41a1bac7dacabe74057e7600e59f98f85bce",
                                    "cutlass_dsl": "4.5.0"},
        "spark_image_overlay": filters.sparkfleet_overlay(OVERLAY),
    }
    values.update(overrides)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROOT, "roles", "spark_image", "templates")),
                             trim_blocks=True)
    return env.get_template("Dockerfile.j2").render(**values)


def test_dockerfile_pins_base_arch_and_kernels():
    text = render()
    assert text.startswith("# Rendered by sparkfleet")
    assert "FROM %s\n" % BASE in text
    assert "ARG TORCH_CUDA_ARCH_LIST=12.1a\nENV TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}" in text
    assert '"nvidia-cutlass-dsl[cu13]==4.5.0"' in text
    assert "checkout --detach 7a7a41a1bac7dacabe74057e7600e59f98f85bce" in text
    assert "submodule update --init --recursive" in text
    assert "checkout --detach 3519c3b88" in text
    assert "sparkfleet_overlay.py apply --manifest" in text and "sparkfleet_overlay.py check --manifest" in text
    assert 'io.sparkfleet.overlay.mxfp4-moe-cleanup="patch ' in text


def test_offline_build_skips_the_fetch_steps():
    text = render(spark_image_kernel_pins={}, spark_image_vllm_source_repo="", spark_image_vllm_ref="vllm-sim")
    assert "git clone" not in text and "pip install" not in text
    assert 'io.sparkfleet.vllm-source="base image"' in text


def test_tag_follows_every_input_and_nothing_else():
    tag = filters.sparkfleet_content_tag(render())
    assert len(tag) == 16
    assert filters.sparkfleet_content_tag(render()) == tag
    changed = [render(spark_image_vllm_ref="deadbeef"),
               render(spark_image_vllm_version="0.34.0"),
               render(spark_image_build_args={"TORCH_CUDA_ARCH_LIST": "12.0"}),
               render(spark_image_kernel_pins={"cutlass_dsl": "4.5.1"}),
               render(spark_image_base=BASE.replace("ab", "cd"))]
    overlay = dict(filters.sparkfleet_overlay(OVERLAY), manifest_sha256="0" * 64)
    changed.append(render(spark_image_overlay=overlay))
    tags = {filters.sparkfleet_content_tag(text) for text in changed}
    assert tag not in tags and len(tags) == len(changed)


def test_build_time_is_a_build_arg_not_an_input():
    text = render()
    assert "ARG SPARKFLEET_BUILD_TIME=unknown" in text
    assert 'io.sparkfleet.build-time="${SPARKFLEET_BUILD_TIME}"' in text


def test_bad_overlay_manifest_stops_on_the_controller(tmp_path):
    (tmp_path / "manifest.yml").write_text("entries:\n  - name: x\n    kind: patch\n    source: nope.patch\n"
                                           "    target: vllm/x.py\n    why: test\n")
    with pytest.raises(Exception) as err:
        filters.sparkfleet_overlay(str(tmp_path))
    assert "source %s does not exist" % (tmp_path / "nope.patch") in str(err.value)


def test_repair_list_takes_sizes_and_hashes_from_the_reference():
    manifest = {"a": {"size": 3, "sha256": "x"}, "b": {"size": 4, "sha256": "y"}}
    assert filters.sparkfleet_repair_list({"b": "missing"}, manifest) == [{"path": "b", "size": 4, "sha256": "y"}]
    with pytest.raises(Exception):
        filters.sparkfleet_repair_list({"c": "missing"}, manifest)


def test_build_fails_unless_the_image_carries_the_pinned_vllm():
    text = render()
    assert 'VLLM_TARGET_DEVICE=cpu vllm --version' in text
    assert '[ "$found" != "0.33.0" ]' in text
    assert 'io.sparkfleet.vllm-version="0.33.0"' in text
