"""What a loaded detector says about itself; free of torch, so ONNX-only installs can use it."""

from __future__ import annotations

from typing import Any


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
