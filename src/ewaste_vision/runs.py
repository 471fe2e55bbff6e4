"""The run directory: the unit of work. Training writes it; every other command reads it.

Layout (files appear as a run progresses; each is written atomically):
    config.yaml        resolved training settings
    run.json           what the model is: task, classes, backbone, input size, normalisation
    split.csv          every image with its label, split and duplicate group
    model.pt           weights + the same metadata (tensors and plain types only)
    checkpoints/       Lightning checkpoints (`last.ckpt` for --resume, best by validation loss)
    logs/metrics.csv   per-epoch losses and metrics
    metrics.json       test metrics;  report.md + plots/  the human report
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ewaste_vision import __version__
from ewaste_vision.errors import RunError
from ewaste_vision.io.atomic import atomic_path, write_json

MODEL_FORMAT = "ewaste-vision-model/1"
MODEL_FILE = "model.pt"
RUN_FILE = "run.json"


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


def save_model(run_dir: Path, state_dict: dict[str, torch.Tensor], meta: ModelMeta) -> Path:
    """Write `model.pt` with tensors and plain values only, so it loads with weights_only=True."""
    payload = {
        "format": MODEL_FORMAT,
        "version": __version__,
        "meta": meta.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
    }
    target = run_dir / MODEL_FILE
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    write_json(run_dir / RUN_FILE, {"format": MODEL_FORMAT, "version": __version__, **meta.to_dict()})
    return target


def read_model_file(path: Path) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """Load a `model.pt` safely (`weights_only=True`) and check it is one of ours."""
    if not path.is_file():
        raise RunError(f"{path}: no trained model here; train one with `ewaste train DATA --out RUN`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise RunError(
            f"{path}: corrupt or not an ewaste-vision model ({type(exc).__name__}); retrain or restore it"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise RunError(
            f"{path}: not an ewaste-vision model file (foreign checkpoint); use a RUN made by `ewaste train`"
        )
    return payload["state_dict"], ModelMeta.from_dict(payload["meta"], path)


def resolve_run_dir(run_dir: Path | str) -> Path:
    """Check that `run_dir` is a run directory with a trained model."""
    path = Path(run_dir)
    if not path.exists():
        raise RunError(f"{path}: run directory not found; train one with `ewaste train DATA --out {path}`")
    if path.is_file():
        raise RunError(f"{path}: expected a run directory, got a file")
    if not (path / MODEL_FILE).is_file():
        raise RunError(
            f"{path}: no {MODEL_FILE} in this folder; is training finished? (`ewaste train ... --resume`)"
        )
    return path


def require_task(meta: ModelMeta, tasks: tuple[str, ...], run_dir: Path, command: str) -> None:
    """Raise a `RunError` when a command meant for `tasks` is given a run of another task."""
    if meta.task not in tasks:
        raise RunError(
            f"{run_dir}: this run is a {meta.task!r} model; `{command}` needs a {' or '.join(tasks)} run"
        )
