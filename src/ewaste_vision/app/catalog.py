"""The models a server offers: one entry per run directory, described by the run's own metadata.

Users and API clients pick a model by its short name (the run folder's name, made unique); the
server's paths never leave this module's entries.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ewaste_vision.app.uploads import safe_name
from ewaste_vision.errors import UserError
from ewaste_vision.runs import MODEL_FILE, ModelMeta, read_model_file, resolve_run_dir


@dataclass
class RunEntry:
    """One served run: its name, metadata, test metrics, and the loaded model once needed."""

    name: str
    """Short unique name shown in the model picker and used by the API."""
    run_dir: Path
    """The run directory (kept on the server, never shown)."""
    meta: ModelMeta
    """Task, classes, backbone and input size, from `model.pt`."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The run's `metrics.json` (test precision and recall feed the value intervals)."""
    _model: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def task(self) -> str:
        """`classify`, `multilabel` or `detect`."""
        return self.meta.task

    def label(self) -> str:
        """What the model picker shows: name, task, backbone, input size and class count."""
        modality = self.meta.extra.get("modality")
        extra = f", {modality}" if modality and modality != "rgb" else ""
        return (
            f"{self.name} ({self.task}, {self.meta.backbone} {self.meta.image_size}px, "
            f"{len(self.meta.class_names)} classes{extra})"
        )

    def describe(self) -> dict[str, Any]:
        """The entry as JSON for the `/models` endpoint."""
        return {
            "name": self.name,
            "task": self.task,
            "backbone": self.meta.backbone,
            "image_size": self.meta.image_size,
            "class_names": list(self.meta.class_names),
            "modality": str(self.meta.extra.get("modality", "rgb")),
        }

    def model(self) -> Any:
        """The `Predictor` (classify, multilabel) or `Detector` (detect), loaded on first use."""
        with self._lock:
            if self._model is None:
                if self.task == "detect":
                    from ewaste_vision.detect.predictor import Detector

                    self._model = Detector.from_run(self.run_dir)
                elif self.task == "fuse":
                    from ewaste_vision.fusion.predictor import FusionPredictor

                    self._model = FusionPredictor.from_run(self.run_dir)
                else:
                    from ewaste_vision.inference import Predictor

                    # Never compile in a server: a 10-25 s first call would stall the queue.
                    self._model = Predictor.from_run(self.run_dir, compile="never")
            return self._model


def load_catalog(run_dirs: Sequence[Path | str]) -> dict[str, RunEntry]:
    """Read every run's metadata (weights-only loading) into entries keyed by unique name.

    Raises:
        UserError: no runs given, or a run directory without a usable `model.pt`.
    """
    if not run_dirs:
        raise UserError("no run directories given; pass one or more RUN folders made by `ewaste train`")
    entries: dict[str, RunEntry] = {}
    for item in run_dirs:
        run_dir = resolve_run_dir(item)
        _, meta = read_model_file(run_dir / MODEL_FILE)
        base = safe_name(run_dir.resolve().name)
        name, number = base, 2
        while name in entries:
            name, number = f"{base}-{number}", number + 1
        metrics_file = run_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
        entries[name] = RunEntry(name, run_dir, meta, metrics)
    return entries


def entries_of_task(catalog: Mapping[str, RunEntry], task: str) -> list[RunEntry]:
    """The entries of one task, in the order given on the command line."""
    return [entry for entry in catalog.values() if entry.task == task]
