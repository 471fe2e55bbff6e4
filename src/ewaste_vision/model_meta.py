"""`ModelMeta`: what a trained network is and expects, as plain values.

Kept apart from `runs` (which reads and writes `model.pt` with torch) so that an exported ONNX
file's metadata can be read on a machine without PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ewaste_vision.errors import RunError


@dataclass
class ModelMeta:
    """What is needed to rebuild and feed a trained network."""

    task: str
    class_names: list[str]
    backbone: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dropout: float = 0.2
    extra: dict[str, Any] = field(default_factory=dict)
    """Task-specific values (for example per-class decision thresholds)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "class_names": list(self.class_names),
            "backbone": self.backbone,
            "image_size": int(self.image_size),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "dropout": float(self.dropout),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: Path) -> ModelMeta:
        try:
            return cls(
                task=str(values["task"]),
                class_names=[str(c) for c in values["class_names"]],
                backbone=str(values["backbone"]),
                image_size=int(values["image_size"]),
                mean=tuple(float(v) for v in values["mean"]),
                std=tuple(float(v) for v in values["std"]),
                dropout=float(values.get("dropout", 0.2)),
                extra=dict(values.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(
                f"{source}: model metadata is incomplete ({exc}); retrain with `ewaste train`"
            ) from exc
