"""The local engine: the model runs in this process, one image after another for detectors and in
batches for classifiers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ewaste_vision.engines.outputs import BoxesOutput, Skipped
from ewaste_vision.errors import UnreadableImageError


def label_probabilities(
    predictor: Any, paths: Sequence[Path], progress: bool = False, job_images: int | None = None
) -> tuple[np.ndarray, list[Path], Skipped]:
    """Probabilities [N, C] for the readable files among `paths`, those files, and the skipped.

    `job_images`: the whole job's size when `paths` is a shard of it (see `Predictor.predict_files`).
    """
    if job_images is not None and hasattr(predictor, "compile"):
        probs, kept, skipped = predictor.predict_files(list(paths), progress=progress, job_images=job_images)
        return np.asarray(probs, dtype=np.float32), list(kept), list(skipped)
    probs, kept, skipped = predictor.predict_files(list(paths), progress=progress)
    return np.asarray(probs, dtype=np.float32), list(kept), list(skipped)


def detect_files(
    detector: Any, paths: Sequence[Path], progress: bool = False
) -> tuple[list[BoxesOutput], Skipped]:
    """Each readable image's detections, and the files that could not be read.

    One image per call, as evaluation runs: a batch pads every image to its largest, which would
    make an image's boxes depend on its neighbours.
    """
    outputs: list[BoxesOutput] = []
    skipped: Skipped = []
    iterable: Iterable[Path] = paths
    if progress:
        from tqdm import tqdm

        iterable = tqdm(paths, unit="image")
    for path in iterable:
        try:
            image = detector.load(path)
        except UnreadableImageError as exc:
            skipped.append((path, exc.reason))
            continue
        height, width = image.shape[-2:]
        outputs.append(BoxesOutput(Path(path), detector.detect([image])[0], int(width), int(height)))
    return outputs, skipped
