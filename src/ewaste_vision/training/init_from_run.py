"""Start a run from another run's backbone (`ewaste train DATA --init RUN`).

003's recipe: train a network on the device families a plant already handles, then start the
model of a new family from those weights instead of from ImageNet's. Any finished run serves as
the source, whatever its task: a classify or multilabel run keeps its backbone under
`backbone.`, a detect run under `backbone.body.` (the FCOS feature pyramid wraps it). Only the
backbone is taken; the head belongs to the source's classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ewaste_vision.errors import RunError
from ewaste_vision.runs import MODEL_FILE, read_model_file

BACKBONE_PREFIX_BY_TASK = {"classify": "backbone.", "multilabel": "backbone.", "detect": "backbone.body."}
"""Where each task's network keeps its registry backbone in `model.pt`."""


@dataclass(frozen=True)
class SourceBackbone:
    """A source run's backbone tensors and where they came from."""

    run_dir: Path
    task: str
    backbone: str
    state: dict[str, torch.Tensor]
    """Backbone tensors, named as in the bare registry backbone."""

    def describe(self) -> str:
        """One line for the run's report and metadata."""
        return f"run {self.run_dir} ({self.task}, {len(self.state)} tensors)"


def read_source_backbone(run_dir: Path | str, backbone: str) -> SourceBackbone:
    """The backbone tensors of the finished run in `run_dir`, checked against `backbone`.

    Args:
        run_dir: a run directory holding `model.pt`.
        backbone: the registry backbone the new run uses; the source must use the same one.

    Returns:
        The source's backbone tensors.

    Raises:
        RunError: the folder holds no finished run, its model file is corrupt, or it was trained
            with another backbone or a task whose layout is unknown.
    """
    path = Path(run_dir)
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        raise RunError(
            f"{path}: --init needs a finished run (no {MODEL_FILE} here); pass a run directory "
            "that `ewaste train` completed"
        )
    state, meta = read_model_file(model_file)
    if meta.backbone != backbone:
        raise RunError(
            f"{model_file}: --init run was trained with backbone {meta.backbone!r}, this run uses "
            f"{backbone!r}; pass --backbone {meta.backbone} or a run of {backbone}"
        )
    prefix = BACKBONE_PREFIX_BY_TASK.get(meta.task)
    if prefix is None:
        raise RunError(f"{model_file}: --init cannot take the backbone of a {meta.task!r} run")
    backbone_state = {
        name[len(prefix) :]: tensor
        for name, tensor in state.items()
        if name.startswith(prefix) and isinstance(tensor, torch.Tensor)
    }
    if not backbone_state:
        raise RunError(f"{model_file}: holds no {backbone} backbone tensors; the file is damaged")
    return SourceBackbone(path, meta.task, meta.backbone, backbone_state)


def load_source_backbone(network: nn.Module, source: SourceBackbone) -> str:
    """Copy `source`'s tensors into the registry backbone `network`, every one of them.

    Strict on purpose: a backbone half from the source and half random would train without
    complaint and silently lose the transfer.

    Returns:
        Where the weights came from, for the run's report.

    Raises:
        RunError: the tensors do not fit `network` (missing, extra or of another shape).
    """
    try:
        network.load_state_dict(source.state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise RunError(
            f"{source.run_dir / MODEL_FILE}: backbone tensors do not fit this {source.backbone} "
            f"({first[0].strip()[:120]}); the file is damaged or from another version; retrain it"
        ) from exc
    return source.describe()
