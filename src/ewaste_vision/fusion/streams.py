"""Stage 1 of fusion: the two single-modality streams, trained here or taken from finished runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ewaste_vision.config import TrainConfig
from ewaste_vision.errors import RunError
from ewaste_vision.fusion.data import MODALITIES, PairedImages, split_by_device, write_stream_tree
from ewaste_vision.model_meta import ModelMeta
from ewaste_vision.models.classifier import ImageClassifier
from ewaste_vision.runs import MODEL_FILE, read_model_file, resolve_run_dir

STREAM_FOLDER = "streams"
"""Inside a fusion run: `streams/rgb`, `streams/xray` (stage-1 runs) and `streams/data` (their
split, as links to the dataset's files)."""


def stream_runs(config: TrainConfig, data: PairedImages, run_dir: Path, progress: bool) -> dict[str, Path]:
    """The run directory of each stream: `--rgb-run` / `--xray-run`, or one trained in `run_dir`.

    Streams trained here see the fusion's device split (through links), so neither stream ever
    trains on a device of the fusion's test split; a finished stream run is never retrained.
    """
    given = {"rgb": config.rgb_run, "xray": config.xray_run}
    runs: dict[str, Path] = {}
    split_data: PairedImages | None = None
    for modality in MODALITIES:
        chosen = given[modality]
        if chosen:
            runs[modality] = resolve_run_dir(chosen)
            continue
        if split_data is None:
            split_data = split_by_device(data, config.seed, config.split)
        stream_dir = run_dir / STREAM_FOLDER / modality
        runs[modality] = stream_dir
        if (stream_dir / MODEL_FILE).is_file():
            continue  # finished before an interruption
        tree = write_stream_tree(
            split_data.side(modality), split_data.class_names, run_dir / STREAM_FOLDER / "data" / modality
        )
        from ewaste_vision.training.trainer import train

        stream_config = dataclasses.replace(
            config,
            task="classify",
            data=str(tree),
            out=str(stream_dir),
            resume=(stream_dir / "config.yaml").is_file(),
            rgb_run=None,
            xray_run=None,
            devices=1,
        )
        train(stream_config, progress)
    return runs


def load_stream(run_dir: Path, class_names: list[str], modality: str) -> tuple[ImageClassifier, ModelMeta]:
    """A finished classify run's network and metadata, checked against the fusion's classes."""
    from ewaste_vision.inference import load_classifier

    state, meta = read_model_file(run_dir / MODEL_FILE)
    if meta.task != "classify":
        raise RunError(f"{run_dir}: a {meta.task!r} run; the {modality} stream must be a classify run")
    if meta.class_names != class_names:
        raise RunError(
            f"{run_dir}: the {modality} stream knows classes {meta.class_names}, the dataset has "
            f"{class_names}; train the stream on the same class folders"
        )
    return load_classifier(state, meta, run_dir / MODEL_FILE), meta


def stream_summary(run_dir: Path) -> dict[str, Any]:
    """The stream run's own test figures (single-modality accuracy: 002's Table V rows)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {"run": str(run_dir)}
    metrics = json.loads(path.read_text(encoding="utf-8"))
    keys = ("accuracy", "accuracy_ci95", "n_test", "baseline_accuracy", "macro_f1")
    return {"run": str(run_dir), **{k: metrics[k] for k in keys if k in metrics}}


def model_digest(run_dir: Path) -> str:
    """A short hash of a stream's `model.pt`, keying the features cached from it."""
    return hashlib.sha256((run_dir / MODEL_FILE).read_bytes()).hexdigest()[:16]


def split_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `state` under `prefix.`, without it."""
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
