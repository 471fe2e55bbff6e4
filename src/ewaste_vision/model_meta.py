"""`ModelMeta`: what a trained network is and expects, as plain values.

Kept apart from `runs` (which reads and writes `model.pt` with torch) so that an exported ONNX
file's metadata can be read on a machine without PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ewaste_vision.errors import RunError, UserError

HEADS = ("linear", "icam")
"""Heads a classifier can have: `linear` (pooling, dropout, linear) or `icam` (Iterative Class
Activation Mapping, 002; `models/icam.py`)."""

AGGREGATES = ("weighted", "mean", "sum")
"""How an iCAM head combines the pooled features of its iterations (002, Sec. IV-B)."""


@dataclass(frozen=True)
class HeadSettings:
    """What kind of head a classifier has, as plain values (stored in `ModelMeta.extra["head"]`)."""

    kind: str = "linear"
    """One of `HEADS`."""
    iterations: int = 3
    """iCAM: backbone passes per image (the first on the whole image, each later one on a crop)."""
    aggregate: str = "weighted"
    """iCAM: one of `AGGREGATES`."""
    crop_fraction: float = 0.5
    """iCAM: side of each crop as a fraction of the side of the view it is cut from."""

    def __post_init__(self) -> None:
        if self.kind not in HEADS:
            raise UserError(f"unknown head {self.kind!r}; choose one of {', '.join(HEADS)}")
        if self.iterations < 1:
            raise UserError(f"icam_iterations must be at least 1, got {self.iterations}")
        if self.aggregate not in AGGREGATES:
            raise UserError(f"unknown aggregate {self.aggregate!r}; choose one of {', '.join(AGGREGATES)}")
        if not 0.0 < self.crop_fraction < 1.0:
            raise UserError(f"icam_crop_fraction must be between 0 and 1, got {self.crop_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "iterations": int(self.iterations),
            "aggregate": self.aggregate,
            "crop_fraction": float(self.crop_fraction),
        }

    @classmethod
    def of(cls, meta: ModelMeta, source: Path | str = "model.pt") -> HeadSettings:
        """The head of the network `meta` describes (`linear` for runs that stored none)."""
        values = meta.extra.get("head") or {}
        try:
            return cls(
                kind=str(values.get("kind", "linear")),
                iterations=int(values.get("iterations", 3)),
                aggregate=str(values.get("aggregate", "weighted")),
                crop_fraction=float(values.get("crop_fraction", 0.5)),
            )
        except (AttributeError, TypeError, ValueError, UserError) as exc:
            raise RunError(
                f"{source}: head settings {values!r} are damaged ({exc}); retrain the run"
            ) from exc


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
