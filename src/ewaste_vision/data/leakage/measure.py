"""`copy_evidence`: shortlist candidate pairs, then measure each once (the expensive part)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np

from ewaste_vision.data.dedup import Fingerprint
from ewaste_vision.data.leakage.evidence import CopyEvidence, CopySettings
from ewaste_vision.data.leakage.features import (
    _dense_descriptor,
    _dense_images,
    _global_descriptor,
    _global_similarity,
    _keypoints,
    _load_gray,
    _mutual_nearest,
    _nearest_pairs,
    _phash_distances,
    _word_histograms,
)
from ewaste_vision.data.leakage.pairs import _dense_from_match, _dense_search, _match

log = logging.getLogger(__name__)

_EVIDENCE_PHASH = 14
"""Pairs within this invariant-pHash distance are always measured, whatever their neighbours."""

_ONE_WAY_ENOUGH = 10
"""Keypoint matches one way that spare matching the other way (measurements do not depend on thresholds)."""


def copy_evidence(
    paths: Sequence[Path],
    fingerprints: Sequence[Fingerprint | None] | None = None,
    settings: CopySettings | None = None,
    progress: bool = False,
) -> CopyEvidence:
    """Measure every candidate pair once: hash distance, global similarity, keypoint inliers.

    The expensive part of copy finding; `group_copies` then applies thresholds in milliseconds,
    so thresholds can be tuned on one measurement (`bench/bench_leakage.py`).

    Args:
        paths: image files.
        fingerprints: `dedup` fingerprints (invariant mode); computed when not given.
        settings: how many neighbours to shortlist and which pairs to align from scratch
            (`search_similarity`); the thresholds of `group_copies` do not matter here.
        progress: print a running count to stderr.

    Returns:
        The candidate pairs and their measurements.
    """
    settings = settings or CopySettings()
    if fingerprints is None:
        from ewaste_vision.data.dedup import image_fingerprints

        fingerprints = image_fingerprints(paths, progress=progress, invariant=True)
    if len(fingerprints) != len(paths):
        raise ValueError(f"got {len(paths)} paths but {len(fingerprints)} fingerprints")
    readable = [index for index, fingerprint in enumerate(fingerprints) if fingerprint is not None]
    evidence = CopyEvidence(
        size=len(paths),
        readable=readable,
        md5=[fingerprint.md5 if fingerprint is not None else "" for fingerprint in fingerprints],
    )
    if len(readable) < 2:
        return evidence
    hashed = [fingerprint for fingerprint in fingerprints if fingerprint is not None]
    phash = _phash_distances(hashed)  # (r, r)
    cv2 = _opencv()
    if cv2 is None or (settings.candidates <= 0 and settings.word_candidates <= 0):
        log.warning("OpenCV is not installed: augmented copies are found by perceptual hash only")
        close = np.argwhere(np.triu(phash <= _EVIDENCE_PHASH, 1))
        evidence.add(close, phash, np.zeros(len(close)), np.zeros(len(close), bool), np.zeros(len(close)))
        return evidence

    loaded = []
    for done, index in enumerate(readable, start=1):
        loaded.append(_load_gray(paths[index]))
        _progress(progress, "reading images for copies", done, len(readable))
    descriptors = np.stack([_global_descriptor(gray) for gray in loaded])  # (r, 8, 256)
    keypoints = []
    dense_images = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # OpenCV releases the GIL
        for done, views in enumerate(pool.map(_keypoints, loaded), start=1):
            keypoints.append(views)
            _progress(progress, "finding keypoints", done, len(loaded))
        dense_images = list(pool.map(_dense_images, loaded))
    del loaded
    similarity = _global_similarity(descriptors)  # (r, r), diagonal -inf
    dense_similarity = _global_similarity(np.stack([_dense_descriptor(image) for image in dense_images]))
    words = _word_histograms(keypoints)  # (r, 2, K)
    word_similarity = np.maximum(words[:, 0] @ words[:, 0].T, words[:, 0] @ words[:, 1].T)
    word_similarity = np.maximum(word_similarity, word_similarity.T)
    np.fill_diagonal(word_similarity, -np.inf)

    pairs = _nearest_pairs(similarity, settings.candidates)
    pairs |= _nearest_pairs(word_similarity, settings.word_candidates)
    pairs |= _nearest_pairs(dense_similarity, settings.dense_candidates)
    pairs |= {(int(i), int(j)) for i, j in np.argwhere(np.triu(phash <= _EVIDENCE_PHASH, 1))}
    ordered = np.array(sorted(pairs), dtype=int).reshape(-1, 2)
    nearest = _mutual_nearest(similarity)
    searched = (
        np.maximum(similarity, dense_similarity)[ordered[:, 0], ordered[:, 1]] >= settings.search_similarity
    )

    def measure(task: tuple[int, int, bool]) -> tuple[int, float]:
        first, second, search = task
        match = _match(keypoints[first], keypoints[second])
        if match.inliers < _ONE_WAY_ENOUGH:  # the ratio test is not symmetric: try the other way
            other = _match(keypoints[second], keypoints[first])
            if other.inliers > match.inliers:
                match, first, second = other, second, first
        dense = -1.0
        if match.transform is not None and match.inliers >= 3:
            dense = _dense_from_match(dense_images[first], dense_images[second], match)
        if search:
            dense = max(dense, _dense_search(dense_images[first], dense_images[second]))
        return match.inliers, dense

    # OpenCV releases the GIL while matching, so threads use every core; each pair is measured
    # on its own, so the result does not depend on their number or order.
    inliers = np.zeros(len(ordered))
    dense = np.full(len(ordered), -1.0)
    tasks = [
        (int(i), int(j), bool(search)) for (i, j), search in zip(ordered.tolist(), searched, strict=True)
    ]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done, (found, agreement) in enumerate(pool.map(measure, tasks), start=1):
            inliers[done - 1], dense[done - 1] = found, agreement
            _progress(progress, "checking candidate copies", done, len(ordered))
    mutual = np.array([nearest[i] == j and nearest[j] == i for i, j in ordered.tolist()], dtype=bool)
    evidence.add(ordered, phash, similarity[ordered[:, 0], ordered[:, 1]], mutual, inliers, dense)
    return evidence


def _opencv() -> ModuleType | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _progress(shown: bool, what: str, done: int, total: int) -> None:
    if shown and (done % 200 == 0 or done == total):
        print(f"\r{what} {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
