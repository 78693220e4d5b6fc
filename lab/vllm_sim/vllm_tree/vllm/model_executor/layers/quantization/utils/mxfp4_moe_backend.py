# SPDX-License-Identifier: Apache-2.0
# sparkfleet lab fixture: a stand-in for the vLLM source file that the
# sparkfleet overlay patches. It is never imported or executed.
"""MXFP4 MoE kernel setup helpers (simulated source tree)."""

import torch

from vllm.model_executor.layers.fused_moe.mxfp4 import (
    prepare_mxfp4_moe_weights, select_mxfp4_moe_kernel)


def _swizzle_scales(scale: torch.Tensor) -> torch.Tensor:
    num_experts, rows, cols = scale.shape
    return scale.view(num_experts, rows // 32, 32, cols).permute(0, 1, 3, 2).contiguous()


def setup_mxfp4_moe_kernels(layer: torch.nn.Module) -> None:
    """Repack the expert weights of `layer` for the selected MXFP4 kernel."""
    kernel = select_mxfp4_moe_kernel(layer.moe_config)

    # Temporary, kernel-layout copies of the gate/up and down projections.
    w13 = layer.w13_weight.data.clone()
    w2 = layer.w2_weight.data.clone()
    w13_scale = _swizzle_scales(layer.w13_weight_scale.data)
    w2_scale = _swizzle_scales(layer.w2_weight_scale.data)

    w13, w2 = prepare_mxfp4_moe_weights(
        kernel, w13, w2, w13_scale, w2_scale, layer.w13_bias, layer.w2_bias)

    layer.w13_weight = torch.nn.Parameter(w13, requires_grad=False)
    layer.w2_weight = torch.nn.Parameter(w2, requires_grad=False)
    layer.mxfp4_kernel = kernel


def release_mxfp4_staging_buffers(layer: torch.nn.Module) -> None:
    """Drop staging tensors left behind after weight loading."""
    for name in ("w13_weight_staging", "w2_weight_staging"):
        if hasattr(layer, name):
            delattr(layer, name)
    torch.cuda.empty_cache()
