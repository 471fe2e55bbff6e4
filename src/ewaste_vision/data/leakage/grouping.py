"""Thresholds applied to the measured evidence: copy groups and the groups a split keeps together."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ewaste_vision.data.dedup import Fingerprint
from ewaste_vision.data.leakage.evidence import CopyEvidence, CopyGroups, CopySettings
from ewaste_vision.data.leakage.measure import copy_evidence


def find_augmented_copies(
    paths: Sequence[Path],
    fingerprints: Sequence[Fingerprint | None] | None = None,
    settings: CopySettings | None = None,
    progress: bool = False,
    **overrides: Any,
) -> list[int]:
    """Give augmented copies of one photo the same group id: the `copies` of `find_copy_groups`.

    Args:
        paths: image files.
        fingerprints: `dedup` fingerprints of `paths` (invariant mode), None for unreadable files.
        settings: thresholds (default `CopySettings()`).
        progress: print a running count to stderr.
        **overrides: `CopySettings` fields to change, e.g. `min_inliers=14`.

    Returns:
        One id per path: 0, 1, 2, ... in order of first appearance; -1 for unreadable images.
    """
    return find_copy_groups(paths, fingerprints, settings, progress, **overrides).copies


def find_copy_groups(
    paths: Sequence[Path],
    fingerprints: Sequence[Fingerprint | None] | None = None,
    settings: CopySettings | None = None,
    progress: bool = False,
    **overrides: Any,
) -> CopyGroups:
    """Find copies (confident) and the wider groups a split must keep together (see the package docstring).

    Args:
        paths: image files.
        fingerprints: `dedup` fingerprints of `paths` (invariant mode); computed when not given.
        settings: thresholds (default `CopySettings()`).
        progress: print a running count to stderr.
        **overrides: `CopySettings` fields to change.

    Returns:
        `CopyGroups` with one id per path in each of `copies` and `together`.
    """
    settings = replace(settings or CopySettings(), **overrides)
    evidence = copy_evidence(paths, fingerprints, settings, progress)
    return group_copies(evidence, settings)


def group_copies(evidence: CopyEvidence, settings: CopySettings | None = None) -> CopyGroups:
    """Link the pairs of `evidence` that pass `settings`' thresholds and close them into groups.

    Args:
        evidence: from `copy_evidence`.
        settings: thresholds (default `CopySettings()`).

    Returns:
        `CopyGroups`: `copies` from confident links and byte-identical files; `together` adds the
        uncertain links.
    """
    settings = settings or CopySettings()
    confident = (
        ((evidence.inliers >= settings.min_inliers) & (evidence.dense >= settings.min_dense))
        | (evidence.dense >= settings.dense_alone)
        | (evidence.phash <= settings.phash_distance)
    )
    uncertain = (
        confident
        | (evidence.inliers >= settings.uncertain_inliers)
        | (evidence.phash <= settings.uncertain_phash)
        | (evidence.mutual_nearest & (evidence.similarity >= settings.uncertain_similarity))
        | (evidence.dense >= settings.uncertain_dense)
    )
    copies = evidence.linked_groups(confident, settings.min_linked_share)
    # An image with no copy is kept with its best-agreeing and its most similar candidate: some
    # copies (a dark, turned crop) agree with their source no better than look-alikes do.
    sizes = Counter(copies)
    alone = np.array([sizes[copies[index]] == 1 for index in evidence.readable], dtype=bool)
    uncertain |= _best_pair_of_each(evidence.pairs, evidence.dense, alone, settings.orphan_dense)
    uncertain |= _best_pair_of_each(evidence.pairs, evidence.similarity, alone, settings.orphan_similarity)
    return CopyGroups(copies=copies, together=evidence.groups(uncertain))


def _best_pair_of_each(
    pairs: np.ndarray, values: np.ndarray, chosen: np.ndarray, at_least: float
) -> np.ndarray:
    """(m,) True at the pair of highest `values` of every row where `chosen`, if it reaches `at_least`."""
    linked = np.zeros(len(pairs), dtype=bool)
    if not len(pairs):
        return linked
    ends = np.concatenate([pairs[:, 0], pairs[:, 1]])
    scores = np.concatenate([values, values])
    positions = np.concatenate([np.arange(len(pairs)), np.arange(len(pairs))])
    order = np.lexsort((positions, -scores, ends))  # by row, best value first, then pair order
    rows, first = np.unique(ends[order], return_index=True)
    best = order[first]
    keep = chosen[rows] & (scores[best] >= at_least)
    linked[positions[best[keep]]] = True
    return linked
