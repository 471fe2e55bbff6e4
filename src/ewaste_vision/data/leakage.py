"""Finding augmented copies of one photo, and scoring a grouping against a known truth.

Exports built by augmentation (Roboflow and the like) hold several copies of each source photo:
flipped, turned by quarter turns (stretched, when the photo was not square), slightly rotated and
sheared, cropped, grayscale, hue-shifted, brightened, blurred, with noise. Perceptual hashes catch
only the first few of these, so copies are found as image retrieval does:

1. shortlist: each image's nearest neighbours under three descriptors: a coarse, colour-free global
   one (an equalised 16x16 thumbnail of the centre under all eight flips and quarter turns), the
   same made from a median-filtered, contrast-limited equalised (CLAHE) image, which finds dark,
   noisy and blurred copies, and a bag of ORB visual words (k-means words, tf-idf; it survives
   crops and stretched turns, which move the global descriptors far away), plus every pair within
   a wide pHash distance;
2. keypoints: ORB keypoints of both images (the second also mirrored) are matched both ways and a
   similarity transform is fitted with RANSAC; the consistent matches are counted;
3. pixels: the pair is aligned by an affine ECC fit on small CLAHE images, started from the
   keypoint transform or, for similar pairs, from the likeliest flips and turns, and the fine
   detail of the two is correlated (`CopyEvidence.dense`). Copies of one photo agree pixel by
   pixel; different photos of look-alike parts share keypoints, but not pixels.

`copy_evidence` measures every shortlisted pair once (the expensive part); `group_copies` applies
thresholds. Confident links (keypoints whose pixels agree, pixels alone, a close pHash) make copy
groups, and two groups merge only where most pairs between them are linked (one chance link does
not join two look-alike parts). Weaker evidence (a few matches, a look-alike nearest neighbour, an
image with no copy and its best candidate) only widens the groups a split keeps together
(`CopyGroups.together`): a leak costs more than a slightly uneven split. OpenCV does the keypoint
and alignment work (it comes with `grad-cam`); without it only the pHash stage runs.

On pcb-components, thresholds chosen on half of the sources and scored on the other half give pair
precision 1.000 and recall 0.991 against `source_groups.csv` (with the source names that show one
board merged); `ewaste data split` then leaves none of the 403 sources with copies in two splits
(BENCHMARKS.md, `bench/bench_leakage.py`).
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from ewaste_vision.data.dedup import DIHEDRAL, Fingerprint, union_find
from ewaste_vision.data.images import load_rgb
from ewaste_vision.errors import DataError, UnreadableImageError

log = logging.getLogger(__name__)

_KEYPOINT_SIDE = 320
"""Images are matched at this size; enough detail for ORB, small enough to stay fast."""

_ORB_FEATURES = 500
_RATIO = 0.75
"""Lowe's ratio test: a match must be clearly better than the second best."""

_VOCABULARY = 512
"""Visual words (k-means centres of ORB descriptors) in the bag-of-words shortlist."""

_VOCABULARY_SAMPLE = 40_000
"""ORB descriptors the vocabulary is learnt from (drawn with a fixed seed)."""

_EVIDENCE_PHASH = 14
"""Pairs within this invariant-pHash distance are always measured, whatever their neighbours."""

_ONE_WAY_ENOUGH = 10
"""Keypoint matches one way that spare matching the other way (measurements do not depend on thresholds)."""

_DENSE_SIDE = 128
"""Pairs are aligned pixel by pixel at this size (and at half of it first)."""

_DENSE_TURNS = 3
"""Flips and quarter turns tried when aligning a pair without keypoint matches (the most similar ones)."""


@dataclass(frozen=True)
class _Keypoints:
    points: np.ndarray  # (k, 2) float32 pixel positions
    descriptors: np.ndarray | None  # (k, 32) uint8 ORB descriptors


@dataclass(frozen=True)
class _Match:
    inliers: int
    transform: np.ndarray | None  # (2, 3) from the first image's pixels to the second's (320 px)
    mirrored: bool  # the transform maps onto the second image mirrored left to right


@dataclass(frozen=True)
class _Dense:
    fine: np.ndarray  # (128, 128) uint8, median-filtered and contrast-limited equalised (CLAHE)
    coarse: np.ndarray  # (64, 64) uint8, the same at half the size
    turns: np.ndarray  # (8, 256) unit 16x16 thumbnails of `coarse` under `_turn`, to pick turns to try
    small: np.ndarray  # (64, 64) uint8, CLAHE of the 64 px median image: the shortlist's descriptor


@dataclass(frozen=True)
class CopySettings:
    """How many neighbours are checked and which evidence links two images.

    Confident links make copy groups (`CopyGroups.copies`); uncertain links only widen the groups
    a split keeps together (`CopyGroups.together`): a copy left in the test split inflates the
    score, while two unrelated images kept together cost only a slightly uneven split.

    Attributes:
        candidates: nearest neighbours per image under the global descriptor, checked with keypoints.
        word_candidates: nearest neighbours per image under the bag of visual words, checked too.
        min_inliers: keypoint matches consistent with one similarity transform that make a copy.
        phash_distance: invariant-pHash distance (of 64 bits) that makes a copy by itself.
        uncertain_inliers: fewer consistent matches that keep two images together.
        uncertain_phash: a larger pHash distance that keeps two images together.
        uncertain_similarity: global-descriptor similarity at which two images that are each
            other's nearest neighbour are kept together (blurred close-ups have few keypoints).
        dense_candidates: nearest neighbours per image under a contrast-equalised thumbnail
            (it finds dark, noisy and blurred copies), checked too.
        search_similarity: pairs at least this similar under either thumbnail are also aligned
            pixel by pixel from scratch (without keypoints), which costs about 10 ms a pair.
        min_dense: the dense agreement (see `CopyEvidence.dense`) keypoint copies must also reach:
            look-alike parts share keypoints but not pixels.
        dense_alone: dense agreement that makes a copy by itself.
        uncertain_dense: a lower dense agreement that keeps two images together.
        min_linked_share: confident links join two groups of copies only where at least this
            share of the pairs between them is linked (see `CopyEvidence.linked_groups`); the
            split still keeps them together.
        orphan_dense: an image with no copy is kept together with the candidate it agrees with
            best (dense), where the agreement reaches this.
        orphan_similarity: ... and with its most similar candidate, where the similarity reaches this.
    """

    candidates: int = 12
    word_candidates: int = 6
    min_inliers: int = 8
    phash_distance: int = 10
    uncertain_inliers: int = 8
    uncertain_phash: int = 10
    uncertain_similarity: float = 0.8
    dense_candidates: int = 12
    search_similarity: float = 0.6
    min_dense: float = 0.5
    dense_alone: float = 0.85
    uncertain_dense: float = 0.6
    min_linked_share: float = 0.5
    orphan_dense: float = 0.5
    orphan_similarity: float = 0.7


@dataclass
class CopyGroups:
    """Group ids per image (0, 1, 2, ... by first appearance; -1 for unreadable images).

    Attributes:
        copies: groups of copies of one photo (confident links).
        together: `copies` joined by uncertain links: what a split keeps in one split.
    """

    copies: list[int]
    together: list[int]


@dataclass
class CopyEvidence:
    """Measurements of candidate pairs (see `copy_evidence`); rows index `readable`.

    Attributes:
        size: number of images (readable or not).
        readable: index of each readable image, in order.
        md5: file digest per image ("" where unreadable); identical files are always copies.
        pairs: (m, 2) rows of `readable`, first < second.
        phash: (m,) invariant-pHash distance of each pair.
        similarity: (m,) global-descriptor similarity (cosine, best of eight flips and turns).
        mutual_nearest: (m,) each image is the other's nearest neighbour under that similarity.
        inliers: (m,) consistent keypoint matches.
        dense: (m,) agreement of the two images once aligned pixel by pixel: the correlation of
            their fine detail (band-pass) after an affine alignment started from the keypoint
            transform or, for similar pairs, searched from each likely flip and turn; -1 where
            not measured or the overlap is too small. Copies of one photo agree; different
            photos of look-alike parts do not, however many keypoints they share.
    """

    size: int
    readable: list[int]
    md5: list[str]
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=int))
    phash: np.ndarray = field(default_factory=lambda: np.zeros(0))
    similarity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mutual_nearest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dense: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(
        self,
        pairs: np.ndarray,
        phash: np.ndarray,
        similarity: np.ndarray,
        mutual_nearest: np.ndarray,
        inliers: np.ndarray,
        dense: np.ndarray | None = None,
    ) -> None:
        """Set the measured pairs; `phash` is the full (r, r) distance matrix; `dense` -1 when None."""
        self.pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
        self.phash = phash[self.pairs[:, 0], self.pairs[:, 1]].astype(float)
        self.similarity = np.asarray(similarity, dtype=float)
        self.mutual_nearest = np.asarray(mutual_nearest, dtype=bool)
        self.inliers = np.asarray(inliers, dtype=float)
        self.dense = np.full(len(self.pairs), -1.0) if dense is None else np.asarray(dense, dtype=float)

    def restricted(self, keep: Sequence[int]) -> CopyEvidence:
        """The evidence among the images `keep` (indexes of images) only, renumbered in that order."""
        position = {index: new for new, index in enumerate(keep)}
        readable = [position[index] for index in self.readable if index in position]
        row_of_new = {self.readable[row]: row for row in range(len(self.readable))}
        new_row = {row_of_new[index]: rank for rank, index in enumerate(i for i in keep if i in row_of_new)}
        inside = np.array([a in new_row and b in new_row for a, b in self.pairs.tolist()], dtype=bool)
        subset = CopyEvidence(len(keep), sorted(readable), [self.md5[index] for index in keep])
        subset.pairs = np.array([[new_row[a], new_row[b]] for a, b in self.pairs[inside].tolist()], dtype=int)
        subset.pairs = subset.pairs.reshape(-1, 2)
        subset.phash, subset.similarity = self.phash[inside], self.similarity[inside]
        subset.mutual_nearest, subset.inliers = self.mutual_nearest[inside], self.inliers[inside]
        subset.dense = self.dense[inside]
        return subset

    def groups(self, linked: np.ndarray) -> list[int]:
        """Group ids closing the pairs where `linked` is True (and identical files) transitively."""
        find, union = union_find(self.size)
        first_with_md5: dict[str, int] = {}
        for index in self.readable:
            union(index, first_with_md5.setdefault(self.md5[index], index))
        for first, second in self.pairs[linked].tolist():
            union(self.readable[first], self.readable[second])
        readable = set(self.readable)
        ids: dict[int, int] = {}
        return [ids.setdefault(find(i), len(ids)) if i in readable else -1 for i in range(self.size)]

    def linked_groups(self, linked: np.ndarray, share: float) -> list[int]:
        """Like `groups`, but two groups merge only where at least `share` of the pairs between
        them are linked (average linkage), the strongest links (`dense`, then `inliers`) first.

        All copies of one photo are copies of each other, so a true merge has links between most
        of its members; two look-alike parts are joined by one or two chance links.
        """
        if share <= 0:
            return self.groups(linked)
        members: dict[int, list[int]] = {}
        root: dict[int, int] = {}
        first_with_md5: dict[str, int] = {}
        for index in self.readable:
            first = first_with_md5.setdefault(self.md5[index], index)
            root[index] = root[first] if first != index else index
            members.setdefault(root[index], []).append(index)
        linked_pairs = [(self.readable[a], self.readable[b]) for a, b in self.pairs[linked].tolist()]
        known = {frozenset(pair) for pair in linked_pairs}
        known |= {frozenset((a, b)) for group in members.values() for a in group for b in group if a != b}
        order = np.lexsort((-self.inliers[linked], -self.dense[linked]))
        for position in order.tolist():
            first, second = root[linked_pairs[position][0]], root[linked_pairs[position][1]]
            if first == second:
                continue
            between = sum(frozenset((a, b)) in known for a in members[first] for b in members[second])
            if between >= share * len(members[first]) * len(members[second]):
                if len(members[first]) < len(members[second]):
                    first, second = second, first
                for index in members.pop(second):
                    root[index] = first
                    members[first].append(index)
        ids: dict[int, int] = {}
        return [ids.setdefault(root[i], len(ids)) if i in root else -1 for i in range(self.size)]


def pair_precision_recall(
    predicted_groups: Sequence[Hashable], true_groups: Sequence[Hashable]
) -> dict[str, float]:
    """Precision and recall of "same group" over all unordered pairs of items.

    Pairs are counted from group sizes (a group of n holds n(n-1)/2 pairs), never enumerated.
    A negative integer predicted id (unreadable image) is a group of its own.

    Returns:
        precision, recall, and the pair counts predicted_pairs, true_pairs, correct_pairs.
        Precision is 1.0 when nothing is predicted; recall is 1.0 when there is nothing to find.
    """
    if len(predicted_groups) != len(true_groups):
        raise ValueError(f"got {len(predicted_groups)} predicted and {len(true_groups)} true group ids")
    predicted = [
        ("alone", index) if isinstance(group, int) and group < 0 else group
        for index, group in enumerate(predicted_groups)
    ]
    predicted_pairs = _pairs(predicted)
    true_pairs = _pairs(true_groups)
    correct_pairs = _pairs(list(zip(predicted, true_groups, strict=True)))
    return {
        "precision": correct_pairs / predicted_pairs if predicted_pairs else 1.0,
        "recall": correct_pairs / true_pairs if true_pairs else 1.0,
        "predicted_pairs": predicted_pairs,
        "true_pairs": true_pairs,
        "correct_pairs": correct_pairs,
    }


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
    """Find copies (confident) and the wider groups a split must keep together (see the module docstring).

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


def read_source_groups(root: Path, source_csv: Path | None = None) -> tuple[list[Path], list[str]]:
    """The images of a YOLO export and their true source photo, from `source_groups.csv`.

    Args:
        root: the dataset folder, with `{split}/images/{file}` as listed in `source_csv`.
        source_csv: CSV with columns file, split, source_stem (default `root/source_groups.csv`).

    Returns:
        (image paths, source stem of each).

    Raises:
        DataError: the CSV is missing or lacks a column.
    """
    source_csv = Path(source_csv) if source_csv is not None else Path(root) / "source_groups.csv"
    try:
        with open(source_csv, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        paths = [Path(root) / row["split"] / "images" / row["file"] for row in rows]
        truth = [row["source_stem"] for row in rows]
    except OSError as exc:
        raise DataError(f"{source_csv}: cannot read ({exc.strerror}); give file,split,source_stem") from exc
    except KeyError as exc:
        raise DataError(f"{source_csv}: column {exc} is missing; expected file, split, source_stem") from exc
    return paths, truth


def compare_with_source_groups(
    root: Path, source_csv: Path | None = None, progress: bool = False, **finder: Any
) -> dict[str, float]:
    """Run `find_augmented_copies` on a YOLO export and score it against known source photos.

    Args:
        root: the dataset folder, with `{split}/images/{file}` as listed in `source_csv`.
        source_csv: CSV with columns file, split, source_stem (default `root/source_groups.csv`);
            the truth to compare with, never an input to the finder.
        progress: print progress to stderr.
        **finder: `CopySettings` fields (e.g. `min_inliers`).

    Returns:
        `pair_precision_recall` of the groups found against the source stems, plus `images`
        and `groups` (groups of two or more found).

    Raises:
        DataError: the CSV is missing or lacks a column.
    """
    paths, truth = read_source_groups(root, source_csv)
    groups = find_augmented_copies(paths, progress=progress, **finder)
    scores = pair_precision_recall(groups, truth)
    scores["images"] = len(paths)
    scores["groups"] = sum(1 for size in Counter(g for g in groups if g >= 0).values() if size > 1)
    return scores


def _pairs(groups: Sequence[Hashable]) -> int:
    return sum(size * (size - 1) // 2 for size in Counter(groups).values())


def _load_gray(path: Path) -> Image.Image:
    try:
        return load_rgb(path).convert("L")
    except UnreadableImageError:
        # Fingerprinting read it a moment ago; a file changing under us is a gray blank, not a crash.
        return Image.new("L", (_KEYPOINT_SIDE, _KEYPOINT_SIDE), 128)


def _global_descriptor(gray: Image.Image) -> np.ndarray:
    """(8, 256) unit vectors: the equalised, blurred centre of the image under each of `DIHEDRAL`."""
    # Grayscale ignores hue; equalising ignores brightness and contrast; the centre crop and the
    # blur soften small rotations, crops and the fill that rotation adds at the corners.
    small = ImageOps.equalize(gray.resize((64, 64), Image.Resampling.BOX)).crop((10, 10, 54, 54))
    small = small.filter(ImageFilter.GaussianBlur(1)).resize((16, 16), Image.Resampling.BOX)
    variants = np.stack(
        [
            np.asarray(small if t is None else small.transpose(t), dtype=np.float32).reshape(-1)
            for t in DIHEDRAL
        ]
    )  # (8, 256)
    variants -= variants.mean(axis=1, keepdims=True)
    return variants / (np.linalg.norm(variants, axis=1, keepdims=True) + 1e-6)


def _global_similarity(descriptors: np.ndarray) -> np.ndarray:
    """(r, r) best cosine similarity over the eight flips and turns, symmetric, diagonal -inf."""
    count = len(descriptors)
    similarity = np.empty((count, count), dtype=np.float32)
    block = max(1, 2_000_000 // (count * len(DIHEDRAL)))
    for start in range(0, count, block):
        upright = descriptors[start : start + block, 0]  # (block, 256)
        similarity[start : start + block] = np.einsum("bd,ntd->bnt", upright, descriptors).max(axis=2)
    similarity = np.maximum(similarity, similarity.T)
    np.fill_diagonal(similarity, -np.inf)
    return similarity


def _nearest_pairs(similarity: np.ndarray, candidates: int) -> set[tuple[int, int]]:
    """Unordered pairs (i < j) where j is among the `candidates` most similar images to i."""
    count = len(similarity)
    keep = min(candidates, count - 1)
    if keep <= 0:
        return set()
    nearest = np.argpartition(-similarity, keep - 1, axis=1)[:, :keep]
    return {(min(i, j), max(i, j)) for i, row in enumerate(nearest.tolist()) for j in row}


def _mutual_nearest(similarity: np.ndarray) -> list[int]:
    """The nearest neighbour of each image (the caller checks that it is mutual)."""
    return np.argmax(similarity, axis=1).tolist()


def _word_histograms(keypoints: Sequence[tuple[_Keypoints, _Keypoints]]) -> np.ndarray:
    """(r, 2, K) tf-idf bags of visual words of each image, upright and mirrored, unit length.

    ORB matches survive crops, turns, stretches and colour changes that defeat a global
    descriptor; counting shared visual words finds such pairs without matching every pair.
    """
    import cv2

    upright = [views[0].descriptors for views in keypoints if views[0].descriptors is not None]
    if not upright:
        return np.zeros((len(keypoints), 2, 1))
    pool = np.concatenate(upright)
    rng = np.random.default_rng(0)
    sample = pool[rng.choice(len(pool), min(_VOCABULARY_SAMPLE, len(pool)), replace=False)]
    words = min(_VOCABULARY, len(sample))
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_MAX_ITER, 10, 0.0)
    _, _, centres = cv2.kmeans(_bits(sample), words, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    centre_norms = (centres**2).sum(axis=1)  # (K,)

    def counts(descriptors: np.ndarray | None) -> np.ndarray:
        if descriptors is None or not len(descriptors):
            return np.zeros(words)
        nearest = np.argmin(centre_norms[None, :] - 2 * _bits(descriptors) @ centres.T, axis=1)
        return np.bincount(nearest, minlength=words).astype(float)

    histograms = np.array([[counts(view.descriptors) for view in views] for views in keypoints])  # (r, 2, K)
    images_with_word = (histograms[:, 0] > 0).sum(axis=0)  # (K,)
    histograms *= np.log(len(keypoints) / (images_with_word + 1.0))[None, None, :]
    return histograms / (np.linalg.norm(histograms, axis=2, keepdims=True) + 1e-9)


def _bits(descriptors: np.ndarray) -> np.ndarray:
    """(k, 32) uint8 ORB descriptors as (k, 256) float32 bits."""
    return np.unpackbits(descriptors, axis=1).astype(np.float32)


def _phash_distances(fingerprints: Sequence[Fingerprint]) -> np.ndarray:
    """(r, r) invariant-pHash distance: the best of one image's eight variants against the other's hash."""
    count = len(fingerprints)
    variants = np.array([f.variants or (f.phash,) * 8 for f in fingerprints], dtype=np.uint64)  # (r, 8)
    hashes = np.array([f.phash for f in fingerprints], dtype=np.uint64)
    distances = np.empty((count, count), dtype=np.int64)
    for row in range(count):
        xor = variants[row][None, :] ^ hashes[:, None]  # (r, 8)
        bits = np.unpackbits(xor.view(np.uint8).reshape(count, -1, 8), axis=2).sum(axis=2)
        distances[row] = bits.min(axis=1)
    distances = np.minimum(distances, distances.T)
    np.fill_diagonal(distances, 64)
    return distances


def _opencv() -> ModuleType | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _progress(shown: bool, what: str, done: int, total: int) -> None:
    if shown and (done % 200 == 0 or done == total):
        print(f"\r{what} {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _keypoints(gray: Image.Image) -> tuple[_Keypoints, _Keypoints]:
    """ORB keypoints of the image and of its mirror image (ORB itself is rotation-invariant)."""
    import cv2

    pixels = np.asarray(gray.resize((_KEYPOINT_SIDE, _KEYPOINT_SIDE), Image.Resampling.BOX))
    # The median filter removes the salt-and-pepper noise augmentation adds, which ORB loves.
    pixels = cv2.equalizeHist(cv2.medianBlur(pixels, 3))
    orb = cv2.ORB_create(nfeatures=_ORB_FEATURES)  # type: ignore[attr-defined]
    found = []
    for view in (pixels, np.ascontiguousarray(pixels[:, ::-1])):
        points, descriptors = orb.detectAndCompute(view, None)
        positions = np.array([point.pt for point in points], dtype=np.float32).reshape(-1, 2)  # (k, 2)
        found.append(_Keypoints(positions, descriptors))
    return found[0], found[1]


def _match(first: tuple[_Keypoints, _Keypoints], second: tuple[_Keypoints, _Keypoints]) -> _Match:
    """Most matches of `first` (upright) consistent with one similarity transform onto `second`."""
    import cv2

    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    query = first[0]
    best = _Match(0, None, False)
    for mirrored, target in zip((False, True), second, strict=True):
        if query.descriptors is None or target.descriptors is None:
            continue
        if len(query.descriptors) < 5 or len(target.descriptors) < 5:
            continue
        good = [
            pair[0]
            for pair in matcher.knnMatch(query.descriptors, target.descriptors, k=2)
            if len(pair) == 2 and pair[0].distance < _RATIO * pair[1].distance
        ]
        if len(good) < 5:
            continue
        source = query.points[[match.queryIdx for match in good]]
        destination = target.points[[match.trainIdx for match in good]]
        transform, mask = cv2.estimateAffinePartial2D(
            source, destination, method=cv2.RANSAC, ransacReprojThreshold=_KEYPOINT_SIDE * 0.02
        )
        if transform is None or mask is None:
            continue
        scale = float(np.hypot(transform[0, 0], transform[0, 1]))
        inlying = source[mask.reshape(-1) > 0]
        # Copies are cropped or zoomed by well under 2x, and agree over an area, not at one spot.
        spread = np.ptp(inlying, axis=0).max() if len(inlying) else 0.0
        if 0.5 < scale < 2.0 and spread >= _KEYPOINT_SIDE * 0.15 and len(inlying) > best.inliers:
            best = _Match(len(inlying), transform, mirrored)
    return best


def _turn(pixels: np.ndarray, turn: int) -> np.ndarray:
    """`pixels` under the `turn`-th (0-7) flip or quarter turn: transposed from 4 on, then turned."""
    if turn >= 4:
        pixels = pixels.T
    return np.ascontiguousarray(np.rot90(pixels, turn % 4))


def _clahe(pixels: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(pixels)


def _dense_images(gray: Image.Image) -> _Dense:
    """The small, contrast-equalised images pairs are aligned on, pixel by pixel.

    The median filter (at full size) removes salt-and-pepper noise; CLAHE lifts dark and washed-out
    copies to the contrast of the others, so that brightness augmentation no longer hides them.
    """
    import cv2

    pixels = cv2.medianBlur(np.asarray(gray), 3)
    pixels = np.asarray(
        Image.fromarray(pixels).resize((_KEYPOINT_SIDE, _KEYPOINT_SIDE), Image.Resampling.BOX)
    )
    equalised = _clahe(cv2.resize(pixels, (2 * _DENSE_SIDE, 2 * _DENSE_SIDE), interpolation=cv2.INTER_AREA))
    fine = cv2.resize(equalised, (_DENSE_SIDE, _DENSE_SIDE), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(equalised, (_DENSE_SIDE // 2, _DENSE_SIDE // 2), interpolation=cv2.INTER_AREA)
    thumb = cv2.resize(_smooth(coarse), (16, 16), interpolation=cv2.INTER_AREA)
    turns = np.stack([_turn(thumb, turn).reshape(-1) for turn in range(8)])
    turns -= turns.mean(axis=1, keepdims=True)
    small = _clahe(cv2.resize(pixels, (64, 64), interpolation=cv2.INTER_AREA))
    return _Dense(fine, coarse, turns / (np.linalg.norm(turns, axis=1, keepdims=True) + 1e-6), small)


def _dense_descriptor(images: _Dense) -> np.ndarray:
    """(8, 256) unit vectors: the contrast-equalised 64 px image, nearly whole, under each turn."""
    import cv2

    small = cv2.GaussianBlur(images.small[4:60, 4:60].astype(np.float32), (0, 0), 1)
    small = cv2.resize(small, (16, 16), interpolation=cv2.INTER_AREA)
    variants = np.stack([_turn(small, turn).reshape(-1) for turn in range(8)])
    variants -= variants.mean(axis=1, keepdims=True)
    return variants / (np.linalg.norm(variants, axis=1, keepdims=True) + 1e-6)


def _smooth(pixels: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(pixels.astype(np.float32), (0, 0), 1.0)


def _ecc(template: np.ndarray, image: np.ndarray, warp: np.ndarray, iterations: int) -> np.ndarray:
    """The affine warp that best aligns `image` to `template` (ECC), from `warp`; `warp` if it fails."""
    import cv2

    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-3)
    try:
        _, found = cv2.findTransformECC(  # type: ignore[call-overload]
            template, image, warp.astype(np.float32), cv2.MOTION_AFFINE, criteria, None, 1
        )
    except cv2.error:  # no convergence (flat images, a poor start)
        return warp.astype(np.float32)
    return found


def _agreement(template: np.ndarray, image: np.ndarray, warp: np.ndarray) -> float:
    """Correlation of the fine detail (band-pass) of `template` and `image` warped onto it, over
    their overlap; -1 when the overlap is under a quarter of the image."""
    import cv2

    side = template.shape[0]
    flags = cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(image, warp, (side, side), flags=cv2.INTER_LINEAR + flags)
    ones = cv2.warpAffine(np.ones_like(image), warp, (side, side), flags=cv2.INTER_NEAREST + flags)
    inside = cv2.erode(ones, np.ones((5, 5), np.uint8)) > 0.5
    if inside.mean() < 0.25:
        return -1.0
    first = (template - cv2.GaussianBlur(template, (0, 0), side / 32))[inside]
    second = (warped - cv2.GaussianBlur(warped, (0, 0), side / 32))[inside]
    first, second = first - first.mean(), second - second.mean()
    return float(first @ second / np.sqrt((first @ first) * (second @ second) + 1e-9))


def _dense_from_match(first: _Dense, second: _Dense, match: _Match) -> float:
    """`_agreement` after refining the keypoint transform of `match` (first onto second) by ECC."""
    assert match.transform is not None
    template, image = _smooth(first.fine), _smooth(second.fine)
    if match.mirrored:
        image = np.ascontiguousarray(image[:, ::-1])
    warp = match.transform.astype(np.float32).copy()
    warp[:, 2] *= _DENSE_SIDE / _KEYPOINT_SIDE
    return _agreement(template, image, _ecc(template, image, warp, 20))


def _dense_search(first: _Dense, second: _Dense) -> float:
    """Best `_agreement` over the likeliest turns of `second`, each aligned by ECC from scratch:
    coarse first, then at full dense size. Finds copies that give no keypoints (dark, blurred)."""
    likeliest = np.argsort(-(second.turns @ first.turns[0]))[:_DENSE_TURNS]
    template_coarse, template = _smooth(first.coarse), _smooth(first.fine)
    best = -1.0
    for turn in likeliest.tolist():
        # `turns[t]` is second's thumbnail under turn t, compared with first's upright thumbnail.
        warp = _ecc(template_coarse, _smooth(_turn(second.coarse, turn)), np.eye(2, 3), 30)
        warp[:, 2] *= 2
        image = _smooth(_turn(second.fine, turn))
        best = max(best, _agreement(template, image, _ecc(template, image, warp, 20)))
    return best
