"""The run directory: the unit of work. Training writes it; every other command reads it.

Layout (files appear as a run progresses; each is written atomically):
    config.yaml        resolved training settings
    run.json           what the model is: task, classes, backbone, input size, normalisation
    split.csv          every image with its label, split and duplicate group
    model.pt           weights + the same metadata (tensors and plain types only)
    checkpoints/       Lightning checkpoints (`last.ckpt` for --resume, best by validation loss)
    logs/metrics.csv   per-epoch losses and metrics
    metrics.json       test metrics;  report.md + plots/  the human report

`ModelMeta` is defined in the torch-free `model_meta` and importable from here too.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ewaste_vision import __version__
from ewaste_vision.errors import RunError
from ewaste_vision.io.atomic import atomic_path, write_json
from ewaste_vision.model_meta import ModelMeta

MODEL_FORMAT = "ewaste-vision-model/1"
MODEL_FILE = "model.pt"
RUN_FILE = "run.json"


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
