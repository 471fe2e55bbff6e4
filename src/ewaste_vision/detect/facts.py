"""What a loaded detector says about itself (classes, modality, tile side) and which boxes are shown;
free of torch, so ONNX-only installs can use it."""

from __future__ import annotations

from typing import Any

SHOWN_CONFIDENCE = 0.5
"""Boxes drawn and listed: those 001 would count (confidence above 0.5)."""


class DetectorFacts:
    """What a loaded detector (PyTorch or ONNX) says about itself, read from its `meta`."""

    meta: Any

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names)

    @property
    def modality(self) -> str:
        """`rgb` or `xray` (dual-energy pairs), as trained."""
        return str(self.meta.extra.get("modality", "rgb"))


def tile_side(meta: Any) -> int:
    """Side of the tiles a large photo is cut into: the typical side of the training photos.

    The detector learnt parts at the scale its training photos had after being resized to its
    input size; a tile of the same side, resized the same way, shows parts at that scale. Photos
    up to 1.25 times that side are not tiled. Runs without the figure fall back to the input size.
    """
    return int(meta.extra.get("source_size", meta.image_size))
