"""003's hybrid network: its layer count, its shapes, and that it trains as a registry backbone."""

from __future__ import annotations

import math

import pytest
import torch

from ewaste_vision.models.classifier import build_classifier
from ewaste_vision.models.hybrid import HybridResInception, InceptionResidualBlock, matlab_layer_count
from ewaste_vision.models.registry import create_backbone, get_backbone_spec


def test_the_hybrid_has_003s_67_layers_in_three_residual_inception_modules():
    network, source = create_backbone("hybrid_res_inception", pretrained=True)
    assert source == "untrained"  # no ImageNet weights exist for it; it never downloads
    assert isinstance(network, HybridResInception)
    assert matlab_layer_count(network) == 67
    blocks = [m for m in network.modules() if isinstance(m, InceptionResidualBlock)]
    assert len(blocks) == 3
    widths = [block.out_channels for block in blocks]
    assert widths == sorted(widths) and len(set(widths)) == 3  # filters grow with depth
    kernels = {m.kernel_size for m in network.stem.modules() if isinstance(m, torch.nn.Conv2d)}
    assert kernels == {(7, 7), (1, 1), (3, 3)}
    branch_kernels = {m.kernel_size for m in blocks[0].modules() if isinstance(m, torch.nn.Conv2d)}
    assert {(1, 1), (3, 3), (5, 5)} <= branch_kernels
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in blocks[0].branch_pool)


@pytest.mark.parametrize("size", [64, 112, 128, 224])
def test_output_and_pyramid_shapes(size: int):
    network = HybridResInception().eval()
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = network(images)
        pyramid = network.feature_pyramid(images)
    side = math.ceil(size / 32)  # every stride-2 layer pads, so odd sides round up
    assert features.shape == (2, network.num_features, side, side)
    assert [m.shape for m in pyramid] == [
        (2, channels, math.ceil(size / stride), math.ceil(size / stride))
        for channels, stride in zip(network.pyramid_channels, network.pyramid_strides, strict=True)
    ]
    assert torch.equal(pyramid[-1], features)


def test_the_residual_connection_carries_the_input_when_the_inception_branches_are_silent():
    block = InceptionResidualBlock(8, 4, 4, 4, 2, 4, 4).eval()
    torch.nn.init.zeros_(block.norm.weight)  # the concatenated branches contribute nothing
    x = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        assert torch.allclose(block(x), torch.relu(block.shortcut(x)))


def test_a_hybrid_classifier_learns_a_batch_from_scratch():
    torch.manual_seed(0)
    model, _ = build_classifier("hybrid_res_inception", 3, dropout=0.4, pretrained=False)
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2
    spec = get_backbone_spec("hybrid_res_inception")
    modules = dict(model.backbone.named_modules())
    assert spec.cam_layer in modules and all(prefix in modules for prefix in spec.trainable_tail)
