"""Off-topic images: the ones far from the rest of their class in a backbone's embedding space.

A keyword search for "iPhone 6" also brings chargers, boxes and screenshots (003). Among the
photos of one class those are few and unlike the others, so each image is scored by its cosine
similarity to a *robust* centre of the class: the mean of the half of the images closest to the
plain mean, recomputed a few times, so the off-topic images themselves barely move it. An image is
flagged when its similarity is more than `mads` median absolute deviations (scaled to a standard
deviation, x 1.4826) below the class's median similarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SD = 1.4826
"""MAD x this estimates the standard deviation of normally distributed values."""

MIN_MAD = 0.01
"""Floor for the MAD (cosine units): a class of near-identical photos must not flag a tiny wobble."""


@dataclass(frozen=True)
class OutlierScores:
    """Per-image off-topic scores for one class.

    Attributes:
        similarity: [N] cosine similarity to the class's robust centre.
        score: [N] robust z-score, (median - similarity) / (1.4826 x MAD): high is off-topic.
        flagged: [N] bool, score > `mads`.
        median: the class's median similarity.
        threshold: similarities below this are flagged.
    """

    similarity: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    median: float
    threshold: float


def robust_centre(features: np.ndarray, keep_fraction: float = 0.5, rounds: int = 3) -> np.ndarray:
    """Unit vector [C] at the centre of the closest `keep_fraction` of the rows of `features` [N, C]."""
    unit = _unit_rows(features)  # [N, C]
    centre = _unit(unit.mean(axis=0))
    keep = max(1, int(np.ceil(keep_fraction * len(unit))))
    for _ in range(rounds):
        closest = np.argsort(-(unit @ centre))[:keep]
        centre = _unit(unit[closest].mean(axis=0))
    return centre


def off_topic_scores(features: np.ndarray, mads: float = 3.0, keep_fraction: float = 0.5) -> OutlierScores:
    """Score each image of one class; see the module docstring.

    Args:
        features: [N, C] embeddings of the class's images (any scale; rows are normalised here).
        mads: how many scaled MADs below the median similarity an image must be to be flagged.
        keep_fraction: share of the images that defines the class's centre.
    """
    if len(features) == 0:
        empty = np.zeros(0)
        return OutlierScores(empty, empty, np.zeros(0, dtype=bool), float("nan"), float("nan"))
    similarity = _unit_rows(features) @ robust_centre(features, keep_fraction)  # [N]
    median = float(np.median(similarity))
    spread = MAD_TO_SD * max(float(np.median(np.abs(similarity - median))), MIN_MAD)
    score = (median - similarity) / spread
    return OutlierScores(similarity, score, score > mads, median, median - mads * spread)


def _unit_rows(features: np.ndarray) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
