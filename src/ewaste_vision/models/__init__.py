"""Models: the backbone registry, offline weights, and the heads put on top."""

from ewaste_vision.models.registry import (
    BackboneSpec,
    available_backbones,
    create_backbone,
    get_backbone_spec,
)

__all__ = ["BackboneSpec", "available_backbones", "create_backbone", "get_backbone_spec"]
