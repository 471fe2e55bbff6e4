"""What the copy finder computes once per image: the shortlist's descriptors (equalised and CLAHE
thumbnails under the eight flips and turns, ORB visual words, invariant-pHash distances), the ORB
keypoints pairs are matched with, and the small CLAHE images pairs are aligned on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from ewaste_vision.data.dedup import DIHEDRAL, Fingerprint
from ewaste_vision.data.images import load_rgb
from ewaste_vision.errors import UnreadableImageError

_KEYPOINT_SIDE = 320
"""Images are matched at this size; enough detail for ORB, small enough to stay fast."""

_ORB_FEATURES = 500

_VOCABULARY = 512
"""Visual words (k-means centres of ORB descriptors) in the bag-of-words shortlist."""

_VOCABULARY_SAMPLE = 40_000
"""ORB descriptors the vocabulary is learnt from (drawn with a fixed seed)."""

_DENSE_SIDE = 128
"""Pairs are aligned pixel by pixel at this size (and at half of it first)."""


@dataclass(frozen=True)
class _Keypoints:
    points: np.ndarray  # (k, 2) float32 pixel positions
    descriptors: np.ndarray | None  # (k, 32) uint8 ORB descriptors


@dataclass(frozen=True)
class _Dense:
    fine: np.ndarray  # (128, 128) uint8, median-filtered and contrast-limited equalised (CLAHE)
    coarse: np.ndarray  # (64, 64) uint8, the same at half the size
    turns: np.ndarray  # (8, 256) unit 16x16 thumbnails of `coarse` under `_turn`, to pick turns to try
    small: np.ndarray  # (64, 64) uint8, CLAHE of the 64 px median image: the shortlist's descriptor


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
