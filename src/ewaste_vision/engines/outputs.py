"""Per-image model outputs, the same whichever engine computed them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Skipped = list[tuple[Path, str]]
"""Files that could not be read, with the reason."""


@dataclass
class BoxesOutput:
    """One image's detections, in the image's own pixels.

    Attributes:
        path: the image file.
        found: `boxes` [N, 4] xyxy, `scores` [N], `labels` [N] (tensors or arrays).
        width: image width in pixels (the detector's input, before any resizing).
        height: image height in pixels.
    """

    path: Path
    found: Any
    width: int
    height: int


def boxes_to_json(output: BoxesOutput) -> dict[str, Any]:
    """Plain lists for transport between processes; floats survive JSON exactly."""
    return {
        "path": str(output.path),
        "boxes": np.asarray(output.found["boxes"], dtype=np.float32).reshape(-1, 4).tolist(),
        "scores": np.asarray(output.found["scores"], dtype=np.float32).tolist(),
        "labels": np.asarray(output.found["labels"], dtype=np.int64).tolist(),
        "width": output.width,
        "height": output.height,
    }


def boxes_from_json(row: dict[str, Any], path: Path | None = None) -> BoxesOutput:
    """The inverse of `boxes_to_json`, as tensors like a local `Detector.detect` returns."""
    import torch

    found = {
        "boxes": torch.tensor(row["boxes"], dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(row["scores"], dtype=torch.float32),
        "labels": torch.tensor(row["labels"], dtype=torch.int64),
    }
    # A remote file keeps its URI as a string (a Path would fold the double slash).
    return BoxesOutput(path or row["path"], found, int(row["width"]), int(row["height"]))


def stack_probabilities(rows: Sequence[Sequence[float]], num_classes: int) -> np.ndarray:
    """Rows of probabilities as one float32 array [N, C] (shape [0, C] when empty)."""
    if not rows:
        return np.zeros((0, num_classes), dtype=np.float32)
    return np.asarray(rows, dtype=np.float32)
