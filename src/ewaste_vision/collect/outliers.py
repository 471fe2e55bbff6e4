"""Off-topic images: the ones far from the rest of their class in a backbone's embedding space.

A keyword search for "iPhone 6" also brings chargers, boxes and screenshots (003). Among the
photos of one class those are few and unlike the others. Each image is scored by its *local
similarity*: the mean cosine similarity to its `neighbours` nearest images of the same class. A
phone photo has many close neighbours however the class varies (front, back, side views); a
screenshot has none, and a few off-topic images alike (three circuit boards) have each other but
not `neighbours` of them, as long as `neighbours` is larger than such a group.

An image is flagged when its local similarity lies more than `mads` spreads below its class's
median. Only the similarities *above* each class's median say how on-topic images spread:
off-topic images only ever lie below, so that half is made of on-topic images and is not inflated
by what is being looked for (the usual two-sided MAD is, and with 10-15% off-topic images it
flagged almost nothing). The spread is one for the whole folder, pooled over its classes: the
root mean square of every class's deviations above its median (the standard deviation, for
normal data). Each class keeps its own median, but not its own spread: one taken from the ~25
values above a class's median is too noisy a ruler, and on the bench's two halves the same
per-class cut caught 90% and 60% of the off-topic images (BENCHMARKS.md, issue 21). `mads` is in
units of the pooled spread. Not robust: a class of many near-identical photos (very high local
similarities) widens the folder's spread and lowers recall in every class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_SPREAD = 0.0075
"""Floor for the spread (cosine units): near-identical photos must not flag a wobble (the floor of
the per-class rule before: a median deviation of 0.005 x 1.4826, MAD to standard deviation)."""

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
        spread: the folder's spread of on-topic local similarities that `score` is counted in.
    """

    similarity: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    median: float
    threshold: float
    spread: float


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


def off_topic_scores(features: np.ndarray, mads: float = 1.75, neighbours: int = 7) -> OutlierScores:
    """Score the images of a folder of one class; see `folder_off_topic_scores`."""
    return folder_off_topic_scores([features], mads, neighbours)[0]


def folder_off_topic_scores(
    classes: Sequence[np.ndarray], mads: float = 1.75, neighbours: int = 7
) -> list[OutlierScores]:
    """Score each image of each class against its class, in one spread for the folder.

    Args:
        classes: per class, [N, C] embeddings of its images (any scale; rows are normalised here).
        mads: how many (pooled) spreads below its class's median local similarity an image must
            be to be flagged.
        neighbours: nearest images of the same class averaged; keep it above the largest group of
            alike off-topic images expected in a class.

    Returns:
        One `OutlierScores` per class, in the order given.
    """
    similarities = [
        local_similarity(features, neighbours) if len(features) else np.zeros(0) for features in classes
    ]
    medians = [float(np.median(s)) if len(s) else float("nan") for s in similarities]
    upper = [s[s >= m] - m for s, m in zip(similarities, medians, strict=True) if len(s)]
    deviations = np.concatenate(upper) if upper else np.zeros(0)
    spread = max(float(np.sqrt(np.mean(np.square(deviations)))) if len(deviations) else 0.0, MIN_SPREAD)
    results = []
    for similarity, median in zip(similarities, medians, strict=True):
        score = (median - similarity) / spread
        results.append(OutlierScores(similarity, score, score > mads, median, median - mads * spread, spread))
    return results


def _unit_rows(features: np.ndarray) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
