"""The offline EfficientNet-Lite0, -Lite1 and -Lite2 weights land in the right tensors.

The packaged state dict is run through an independent, functional re-implementation of the
network written from its source naming; the timm model with renamed weights must give the same
feature map. Any misplaced tensor (a swapped batch-norm weight and bias, two blocks exchanged)
changes the output, so this test fails on a wrong mapping where a shape check would pass.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ewaste_vision.models.efficientnet_lite import packaged_state_dict, rename_to_timm
from ewaste_vision.models.registry import create_backbone

# EfficientNet's seven stages start with these strides (all Lite variants); how many blocks each
# stage repeats and the kernel sizes are read from the weights.
STAGE_STRIDES = [1, 2, 2, 2, 1, 2, 1]
VARIANTS = [0, 1, 2]


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    # TensorFlow "SAME": output = ceil(input / stride), extra padding on the bottom/right.
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _conv_bn(x, sd, conv, bn, stride=1, groups=1, act=True):
    weight = sd[f"{conv}.weight"]
    x = F.conv2d(_same_pad(x, weight.shape[-1], stride), weight, stride=stride, groups=groups)
    x = F.batch_norm(
        x,
        sd[f"{bn}.running_mean"],
        sd[f"{bn}.running_var"],
        sd[f"{bn}.weight"],
        sd[f"{bn}.bias"],
        training=False,
        eps=1e-3,
    )
    return F.relu6(x) if act else x


def reference_features(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    x = _conv_bn(x, sd, "_conv_stem", "_bn0", stride=2)
    stage_strides = iter(STAGE_STRIDES)
    block = 0
    while f"_blocks.{block}._project_conv.weight" in sd:
        p = f"_blocks.{block}"
        # A stage's first block changes the channel count; its repeats keep it.
        starts_stage = sd[f"{p}._project_conv.weight"].shape[0] != x.shape[1]
        stride = next(stage_strides) if starts_stage else 1
        inputs = x
        if f"{p}._expand_conv.weight" in sd:
            x = _conv_bn(x, sd, f"{p}._expand_conv", f"{p}._bn0")
        x = _conv_bn(x, sd, f"{p}._depthwise_conv", f"{p}._bn1", stride=stride, groups=x.shape[1])
        x = _conv_bn(x, sd, f"{p}._project_conv", f"{p}._bn2", act=False)
        if not starts_stage:
            x = x + inputs
        block += 1
    assert next(stage_strides, None) is None, "the weights hold fewer stages than EfficientNet's seven"
    return _conv_bn(x, sd, "_conv_head", "_bn1")


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: f"lite{v}")
def variant(request) -> int:
    return request.param


@pytest.fixture(scope="module")
def source_weights(variant) -> dict[str, torch.Tensor]:
    return packaged_state_dict(variant)


def test_renamed_weights_reproduce_the_reference_network(variant, source_weights):
    backbone, origin = create_backbone(f"efficientnet_lite{variant}")
    assert "offline" in origin
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = backbone.eval()(x)
        reference = reference_features(source_weights, x)
    assert ours.shape == reference.shape == (2, 1280, 4, 4)
    assert torch.allclose(ours, reference, atol=1e-4), (ours - reference).abs().max()


def test_the_reference_detects_a_single_misplaced_tensor(source_weights):
    # Guards the guard: exchanging one batch norm's weight and bias must change the features.
    damaged = dict(source_weights)
    damaged["_blocks.7._bn1.weight"], damaged["_blocks.7._bn1.bias"] = (
        source_weights["_blocks.7._bn1.bias"],
        source_weights["_blocks.7._bn1.weight"],
    )
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.allclose(
            reference_features(damaged, x), reference_features(source_weights, x), atol=1e-3
        )


def test_every_tensor_is_mapped_once_with_its_shape(variant, source_weights):
    backbone, _ = create_backbone(f"efficientnet_lite{variant}", pretrained=False)
    renamed = rename_to_timm(source_weights, backbone.body)
    assert set(renamed) == set(backbone.body.state_dict())
    assert len({id(t) for t in renamed.values()}) == len(renamed)
