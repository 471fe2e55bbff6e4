"""Off-topic images: the ones far from the rest of their class in a backbone's embedding space.

A keyword search for "iPhone 6" also brings chargers, boxes and screenshots (003). Among the
photos of one class those are few and unlike the others. Each image is scored by its *local
similarity*: the mean cosine similarity to its `neighbours` nearest images of the same class. A
phone photo has many close neighbours however the class varies (front, back, side views); a
screenshot has none, and a few off-topic images alike (three circuit boards) have each other but
not `neighbours` of them, as long as `neighbours` is larger than such a group.

An image is flagged when its local similarity lies more than `mads` spreads below the class's
median. The spread is the median deviation of the scores *above* the median (x 1.4826, a standard
deviation for normal data): off-topic images only ever lie below, so this half is made of
on-topic images and its spread is not inflated by what is being looked for; the usual two-sided
MAD is, and with 10-15% off-topic images it flagged almost nothing (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SD = 1.4826
"""MAD x this estimates the standard deviation of normally distributed values."""

MIN_SPREAD = 0.005
"""Floor for the median deviation (cosine units): near-identical photos must not flag a wobble."""

_BLOCK_ROWS = 1024
"""Rows of the similarity matrix computed at once: memory stays ~4 MB x class size / 1000."""


@dataclass(frozen=True)
class OutlierScores:
    """Per-image off-topic scores for one class.

    Attributes:
        similarity: [N] local similarity: mean cosine similarity to the nearest neighbours.
        score: [N] (median - similarity) / spread: high is off-topic.
        flagged: [N] bool, score > `mads`.
        median: the class's median local similarity.
        threshold: local similarities below this are flagged.
    """

    similarity: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    median: float
    threshold: float


def local_similarity(features: np.ndarray, neighbours: int = 7) -> np.ndarray:
    """[N] mean cosine similarity of each row of `features` [N, C] to its `neighbours` nearest others."""
    unit = _unit_rows(features)  # [N, C]
    count = min(neighbours, len(unit) - 1)
    if count < 1:
        return np.ones(len(unit))
    result = np.empty(len(unit))
    for start in range(0, len(unit), _BLOCK_ROWS):
        block = unit[start : start + _BLOCK_ROWS] @ unit.T  # [B, N]
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # not oneself
        nearest = np.partition(block, -count, axis=1)[:, -count:]  # [B, count]
        result[start : start + len(block)] = nearest.mean(axis=1)
    return result


def off_topic_scores(features: np.ndarray, mads: float = 2.0, neighbours: int = 7) -> OutlierScores:
    """Score each image of one class; see the module docstring.

    Args:
        features: [N, C] embeddings of the class's images (any scale; rows are normalised here).
        mads: how many spreads below the median local similarity an image must be to be flagged.
        neighbours: nearest images averaged; keep it above the largest group of alike off-topic
            images expected in a class.
    """
    if len(features) == 0:
        empty = np.zeros(0)
        return OutlierScores(empty, empty, np.zeros(0, dtype=bool), float("nan"), float("nan"))
    similarity = local_similarity(features, neighbours)  # [N]
    median = float(np.median(similarity))
    upper = similarity[similarity >= median] - median
    spread = MAD_TO_SD * max(float(np.median(upper)), MIN_SPREAD)
    score = (median - similarity) / spread
    return OutlierScores(similarity, score, score > mads, median, median - mads * spread)


def _unit_rows(features: np.ndarray) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
