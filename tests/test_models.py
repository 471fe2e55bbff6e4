"""The backbone registry: every backbone honours the contract the rest of the toolkit relies on."""

from __future__ import annotations

import logging

import pytest
import torch

from ewaste_vision.errors import UserError
from ewaste_vision.models.classifier import build_classifier, set_trainable
from ewaste_vision.models.registry import (
    BackboneSpec,
    available_backbones,
    create_backbone,
    get_backbone_spec,
    register_backbone,
)


def test_the_promised_backbones_are_registered():
    assert {
        "resnet50",
        "resnet18",
        "inception_v3",
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "tiny",
    } <= set(available_backbones())


@pytest.mark.parametrize("name", available_backbones())
def test_backbone_contract(name: str):
    spec = get_backbone_spec(name)
    network, source = create_backbone(name, pretrained=False)
    assert source == "untrained"
    size = 96 if name == "inception_v3" else 64  # slow models are checked at a small size
    with torch.no_grad():
        features = network.eval()(torch.randn(1, 3, size, size))
    assert features.dim() == 4 and features.shape[1] == network.num_features
    modules = dict(network.named_modules())
    assert spec.cam_layer in modules, spec.cam_layer
    parameter_names = [n for n, _ in network.named_parameters()]
    for prefix in spec.trainable_tail + spec.early_stages:
        assert any(n.startswith(prefix + ".") for n in parameter_names), prefix


@pytest.mark.parametrize("strategy,trainable_backbone", [("linear", 0), ("finetune", None), ("full", 1)])
def test_strategies_freeze_what_they_say(strategy: str, trainable_backbone: float | None):
    model, _ = build_classifier("tiny", 3, pretrained=False)
    set_trainable(model, "tiny", strategy)
    flags = [p.requires_grad for p in model.backbone.parameters()]
    share = sum(flags) / len(flags)
    if trainable_backbone is None:
        assert 0 < share < 1
    else:
        assert share == trainable_backbone
    assert all(p.requires_grad for p in model.head.parameters())


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        register_backbone(BackboneSpec(name="tiny", build=torch.nn.Identity, load_pretrained=None))


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(UserError, match="efficientnet_lite0"):
        get_backbone_spec("vgg16")


def test_unavailable_weights_are_announced_once(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    from ewaste_vision.models import registry

    registry._warned_untrained.discard("resnet18")
    for _ in range(2):
        _, source = create_backbone("resnet18")
        assert source == "untrained"
    assert sum("starts untrained" in r.getMessage() for r in caplog.records) == 1


def test_local_weights_file_is_loaded_and_checked(tmp_path):
    network, _ = create_backbone("tiny")
    path = tmp_path / "w.pt"
    torch.save(network.state_dict(), path)
    loaded, source = create_backbone("tiny", weights=path)
    assert "file" in source
    expected = network.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match=r"foreign\.pt"):
        create_backbone("tiny", weights=tmp_path / "foreign.pt")
