"""Finding augmented copies of one photo, and scoring a grouping against a known truth.

Exports built by augmentation (Roboflow and the like) hold several copies of each source photo:
flipped, turned by quarter turns, slightly rotated and sheared, cropped, grayscale, hue-shifted,
brightened, blurred, with noise. Perceptual hashes catch only the first few of these: on
`pcb-components` the flip/rotation-invariant pHash of `dedup` finds under 15% of the copy pairs
at any distance that keeps precision above 0.7. So copies are found in two stages, as image
retrieval does:

1. shortlist: every image's `candidates` nearest neighbours under a coarse, colour-free global
   descriptor (an equalised 16x16 thumbnail of the centre, compared under all eight flips and
   quarter turns);
2. verification: ORB keypoints of both images (the second also mirrored) are matched and a
   similarity transform (rotation, scale, shift) is fitted with RANSAC; a pair with at least
   `min_inliers` consistent matches is a copy.

Images left without any copy get a second, wider and slightly more lenient look. Pairs found
either way (or by the invariant pHash) are closed transitively into groups. OpenCV does the
keypoint work (it comes with `grad-cam`); without it only the pHash stage runs.

On `pcb-components` (1005 images, 903 same-source pairs) the defaults give pair precision 0.948
and recall 0.952 against `source_groups.csv` (`compare_with_source_groups`). Every wrong pair
there comes from 8 pairs of source names whose photos show the same board (re-crops or re-shots
the exporter counted as different sources), which is leakage all the same.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from ewaste_vision.data.dedup import DIHEDRAL, Fingerprint, group_duplicates, union_find
from ewaste_vision.data.images import load_rgb
from ewaste_vision.errors import DataError, UnreadableImageError

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES = 20
"""Shortlisted neighbours per image that are checked with keypoints."""

DEFAULT_LONE_CANDIDATES = 60
"""Neighbours checked, in a second round, for images that no copy was found for in the first."""

DEFAULT_MIN_INLIERS = 12
"""Keypoint matches consistent with one similarity transform that make two images copies."""

DEFAULT_LONE_MIN_INLIERS = 11
"""The same, in the second round: an image with no copy yet risks only its own pairs."""

DEFAULT_PHASH_DISTANCE = 6
"""Invariant-pHash distance (of 64 bits) that makes two images copies without keypoint checks.

Chosen with the two inlier counts on pcb-components against its `source_groups.csv` (nothing held
out): 4 / 12 / 10 gave pair precision 0.948 and recall 0.952, 6 / 12 / 11 gives 0.951 and 0.950;
a lone threshold of 12 or more buys precision with recall (14: 0.954 and 0.938)."""

_KEYPOINT_SIDE = 320
"""Images are matched at this size; enough detail for ORB, small enough to stay fast."""

_ORB_FEATURES = 500
_RATIO = 0.75
"""Lowe's ratio test: a match must be clearly better than the second best."""


@dataclass(frozen=True)
class _Keypoints:
    points: np.ndarray  # (k, 2) float32 pixel positions
    descriptors: np.ndarray | None  # (k, 32) uint8 ORB descriptors


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
    phash_distance: int = DEFAULT_PHASH_DISTANCE,
    candidates: int = DEFAULT_CANDIDATES,
    min_inliers: int = DEFAULT_MIN_INLIERS,
    lone_candidates: int = DEFAULT_LONE_CANDIDATES,
    lone_min_inliers: int = DEFAULT_LONE_MIN_INLIERS,
    progress: bool = False,
) -> list[int]:
    """Give augmented copies of one photo the same group id (see the module docstring).

    Args:
        paths: image files.
        fingerprints: `dedup` fingerprints of `paths` (invariant mode); their pHash and md5 also
            link images, and None marks an unreadable one. Computed here when not given.
        phash_distance: invariant-pHash distance that links two images by itself.
        candidates: shortlisted neighbours per image checked with keypoints; 0 skips keypoints.
        min_inliers: consistent keypoint matches that link two images.
        lone_candidates: neighbours checked in a second round for images still without a copy
            (heavily cropped or rotated copies can rank low under the coarse descriptor).
        lone_min_inliers: `min_inliers` of that second round.
        progress: print a running count to stderr.

    Returns:
        One id per path: 0, 1, 2, ... in order of first appearance; -1 for unreadable images.
    """
    if fingerprints is None:
        from ewaste_vision.data.dedup import image_fingerprints

        fingerprints = image_fingerprints(paths, progress=progress, invariant=True)
    if len(fingerprints) != len(paths):
        raise ValueError(f"got {len(paths)} paths but {len(fingerprints)} fingerprints")
    linked = group_duplicates(fingerprints, max_distance=phash_distance)
    readable = [index for index, fingerprint in enumerate(fingerprints) if fingerprint is not None]
    if candidates <= 0 or len(readable) < 2:
        return linked
    try:
        import cv2  # noqa: F401
    except ImportError:
        log.warning("OpenCV is not installed: augmented copies are found by perceptual hash only")
        return linked

    find, union = union_find(len(paths))

    first_of_group: dict[int, int] = {}
    for index in readable:
        union(index, first_of_group.setdefault(linked[index], index))

    loaded = [_load_gray(paths[index]) for index in readable]
    descriptors = np.stack([_global_descriptor(gray) for gray in loaded])  # (n, 8, 256)
    keypoints = [_keypoints(gray) for gray in loaded]
    inliers: dict[tuple[int, int], int] = {}

    def verify(pairs: list[tuple[int, int]], min_inliers: int) -> None:
        for done, (first, second) in enumerate(pairs, start=1):
            if find(readable[first]) != find(readable[second]):
                if (first, second) not in inliers:
                    inliers[first, second] = _inliers(keypoints[first], keypoints[second])
                if inliers[first, second] >= min_inliers:
                    union(readable[first], readable[second])
            if progress and (done % 1000 == 0 or done == len(pairs)):
                print(f"\rchecking candidate copies {done}/{len(pairs)}", end="", file=sys.stderr, flush=True)
        if progress and pairs:
            print(file=sys.stderr)

    verify(_shortlist(descriptors, candidates), min_inliers)
    if lone_candidates > 0:
        sizes = Counter(find(index) for index in readable)
        lone = [row for row, index in enumerate(readable) if sizes[find(index)] == 1]
        verify(_shortlist(descriptors, lone_candidates, rows=lone), lone_min_inliers)

    ids: dict[int, int] = {}
    return [
        -1 if fingerprint is None else ids.setdefault(find(index), len(ids))
        for index, fingerprint in enumerate(fingerprints)
    ]


def compare_with_source_groups(
    root: Path, source_csv: Path | None = None, progress: bool = False, **finder: Any
) -> dict[str, float]:
    """Run `find_augmented_copies` on a YOLO export and score it against known source photos.

    Args:
        root: the dataset folder, with `{split}/images/{file}` as listed in `source_csv`.
        source_csv: CSV with columns file, split, source_stem (default `root/source_groups.csv`);
            the truth to compare with, never an input to the finder.
        progress: print progress to stderr.
        **finder: keyword arguments of `find_augmented_copies` (e.g. `min_inliers`).

    Returns:
        `pair_precision_recall` of the groups found against the source stems, plus `images`
        and `groups` (groups of two or more found).

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


def _shortlist(
    descriptors: np.ndarray, candidates: int, rows: Sequence[int] | None = None
) -> list[tuple[int, int]]:
    """Unordered pairs (i < j) where j is among the `candidates` most similar images to i.

    `rows` limits the images i whose neighbours are listed (default: all).
    """
    count = len(descriptors)
    keep = min(candidates, count - 1)
    queries = np.arange(count) if rows is None else np.asarray(rows, dtype=int)
    pairs: set[tuple[int, int]] = set()
    block = max(1, 2_000_000 // (count * len(DIHEDRAL)))
    for start in range(0, len(queries), block):
        chunk = queries[start : start + block]
        upright = descriptors[chunk, 0]  # (block, 256)
        similarity = np.einsum("bd,ntd->bnt", upright, descriptors).max(axis=2)  # (block, count)
        similarity[np.arange(len(chunk)), chunk] = -np.inf
        nearest = np.argpartition(-similarity, keep - 1, axis=1)[:, :keep]
        for first, neighbours in zip(chunk.tolist(), nearest.tolist(), strict=True):
            pairs.update((min(first, second), max(first, second)) for second in neighbours)
    return sorted(pairs)


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


def _inliers(first: tuple[_Keypoints, _Keypoints], second: tuple[_Keypoints, _Keypoints]) -> int:
    """Most matches of `first` (upright) consistent with one similarity transform onto `second`."""
    import cv2

    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    query = first[0]
    best = 0
    for target in second:
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
        if 0.5 < scale < 2.0 and spread >= _KEYPOINT_SIDE * 0.15:
            best = max(best, len(inlying))
    return best
