"""One registry of backbones, filled by `register_backbone`, read by the CLI, the app and the docs.

A backbone is a network that maps an image batch [B, 3, H, W] to a feature map [B, C, h, w]. Heads
(pooling, dropout, linear) are added by `ewaste_vision.models.classifier`, so every backbone serves
every task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ewaste_vision.errors import UserError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """What the rest of the toolkit needs to know about a backbone."""

    name: str
    """Registry name, as typed on the command line."""
    build: Callable[[], nn.Module]
    """Makes the untrained network; it must expose `num_features` and map images to a feature map."""
    load_pretrained: Callable[[nn.Module], str] | None
    """Puts ImageNet weights into the network and returns where they came from; raises
    `PretrainedUnavailable` when they cannot be had (for example offline)."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    """Default input resolution (`--image-size 0`)."""
    trainable_tail: tuple[str, ...] = ()
    """Module-name prefixes unfrozen by the `finetune` strategy (the last stages)."""
    early_stages: tuple[str, ...] = ()
    """Module-name prefixes of the stages at strides 2 and 4, which detectors keep frozen."""
    cam_layer: str = ""
    """Name of the module whose output is the last feature map (the Grad-CAM target)."""
    summary: str = ""
    """One line for `ewaste models`."""
    offline: bool = False
    """True when pretrained weights ship with an installed package (no download)."""


class PretrainedUnavailable(RuntimeError):
    """Pretrained weights could not be obtained (no network, no cache)."""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add `spec` to the registry; a second registration of one name is a programming error."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def available_backbones() -> list[str]:
    """Registered backbone names, in registration order."""
    _ensure_builtin_backbones()
    return list(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    """The spec registered under `name`, or a `UserError` that lists the choices."""
    _ensure_builtin_backbones()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown backbone {name!r}; choose one of: {', '.join(_REGISTRY)} (see `ewaste models`)"
        ) from None


_warned_untrained: set[str] = set()


def create_backbone(
    name: str, pretrained: bool = True, weights: Path | str | None = None
) -> tuple[nn.Module, str]:
    """Build backbone `name` and fill its weights.

    Args:
        name: a registered backbone.
        pretrained: load ImageNet weights when they can be had.
        weights: a local file of weights for this backbone (a state dict saved with `torch.save`),
            used instead of any download.

    Returns:
        The network and a short description of where its weights came from.
    """
    spec = get_backbone_spec(name)
    network = spec.build()
    if weights is not None:
        return network, load_local_weights(network, Path(weights))
    if not pretrained or spec.load_pretrained is None:
        return network, "untrained"
    try:
        return network, spec.load_pretrained(network)
    except PretrainedUnavailable as exc:
        if name not in _warned_untrained:
            _warned_untrained.add(name)
            offline = ", ".join(n for n, s in _REGISTRY.items() if s.offline and n != name)
            log.warning(
                "%s: ImageNet weights unavailable (%s); it starts untrained. Pass --weights FILE, "
                "or use a backbone whose weights ship offline: %s.",
                name,
                exc,
                offline,
            )
        return network, "untrained"


def load_local_weights(network: nn.Module, path: Path) -> str:
    """Load a state dict from `path` into `network` (safely: tensors only)."""
    if not path.is_file():
        raise UserError(f"{path}: weights file not found; pass an existing file to --weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        raise UserError(f"{path}: not a PyTorch weights file ({type(exc).__name__}); check the file") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds no state dict; save weights with torch.save(model.state_dict())")
    own = network.state_dict()
    matching = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    if not matching:
        raise UserError(f"{path}: no tensor matches this backbone's layers; is it for another network?")
    network.load_state_dict(matching, strict=False)
    matched, unexpected = len(matching), len(state) - len(matching)
    left = len(own) - matched
    if left:
        log.warning("%s: %d backbone tensors not in the file keep their initial values", path, left)
    return f"file {path} ({matched} tensors, {unexpected} ignored)"


def _ensure_builtin_backbones() -> None:
    # Importing the module registers the built-in backbones; deferred so that importing the
    # registry does not import timm.
    from ewaste_vision.models import backbones  # noqa: F401
