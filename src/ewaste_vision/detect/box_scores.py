"""How a box classifier's answer becomes a confidence, in NumPy alone, so that the PyTorch detector
and the exported ONNX one share it (`detect.box_classifier` says why the second look exists).

A box's new confidence is (detector score x classifier probability of the detector's class) **
gamma. The product sets the ranking within a class, so mAP does not depend on gamma; gamma is
fitted on validation so that confidence 0.5, the cut of 001's precision, recall and F1, is where
validation F1 peaks: over all classes together, and for each class with enough validation boxes
its own (`class_gammas`), as multi-label runs tune a threshold per class. Boxes the detector scored
below `min_score` are dropped unclassified: they are most of the candidates, cost most of the time
and move mAP little.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ewaste_vision.detect.tile_merge import ArrayDetections


@dataclass(frozen=True)
class BoxClassifierSettings:
    """How boxes are cropped and how the classifier's answer becomes a confidence."""

    crop_size: int = 96
    """Side in pixels of the square each box is resized to."""
    padding: float = 0.15
    """Context kept around a box, as a share of its width and height on each side."""
    min_score: float = 0.3
    """Detector score below which a box is dropped without being classified."""
    gamma: float = 1.0
    """Exponent on (detector score x classifier probability); fitted on validation."""
    class_gammas: tuple[float, ...] = ()
    """One exponent per class (by label), replacing `gamma`: fitted on the class's own validation
    boxes where it has enough, else equal to `gamma`; empty: `gamma` for every class (runs saved
    before these existed)."""

    def exponents(self, labels: np.ndarray) -> np.ndarray | float:
        """The exponent of each box's class, for `labels` [N]."""
        return np.asarray(self.class_gammas)[labels] if self.class_gammas else self.gamma

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "class_gammas": list(self.class_gammas)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], num_classes: int | None = None) -> BoxClassifierSettings:
        """Settings as `to_dict` wrote them; with `num_classes`, a ValueError unless there is an
        exponent per class (or none)."""
        known = {key: values[key] for key in asdict(cls()) if key in values}
        gammas = tuple(float(g) for g in known.get("class_gammas", ()))
        if num_classes is not None and gammas and len(gammas) != num_classes:
            raise ValueError(f"{len(gammas)} box-classifier exponents for {num_classes} classes")
        return cls(**{**known, "class_gammas": gammas})


def rescore(
    found: Mapping[str, np.ndarray],
    classify: Callable[[np.ndarray], np.ndarray],
    settings: BoxClassifierSettings,
) -> ArrayDetections:
    """One image's detections scored `min_score` or more, with confidences (detector score x the
    probability `classify` (boxes [M, 4] -> probabilities [M, C + 1]) gives their class) ** their
    class's exponent, best first."""
    keep = found["scores"] >= settings.min_score
    boxes, scores, labels = found["boxes"][keep], found["scores"][keep], found["labels"][keep]
    if not len(boxes):
        return {"boxes": boxes, "scores": scores, "labels": labels}
    # FCOS gives one box per location and a score per class, so a box recurs once for each class
    # it scores for: each distinct box is classified once.
    distinct, which = np.unique(boxes, axis=0, return_inverse=True)
    probs = classify(distinct)[which.reshape(-1)]  # [N, C + 1]
    product = scores * probs[np.arange(len(labels)), labels]
    confidence = (product ** settings.exponents(labels)).astype(np.float32)
    order = np.lexsort((-product, -confidence))  # float32 ties fall back on the exact product
    return {"boxes": boxes[order], "scores": confidence[order], "labels": labels[order]}
