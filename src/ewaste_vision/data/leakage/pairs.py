"""Evidence about one candidate pair: ORB keypoint matches fitted with one similarity transform,
and the pixel check (an affine ECC alignment, then the correlation of the fine detail)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ewaste_vision.data.leakage.features import (
    _DENSE_SIDE,
    _KEYPOINT_SIDE,
    _Dense,
    _Keypoints,
    _smooth,
    _turn,
)

_RATIO = 0.75
"""Lowe's ratio test: a match must be clearly better than the second best."""

_DENSE_TURNS = 3
"""Flips and quarter turns tried when aligning a pair without keypoint matches (the most similar ones)."""


@dataclass(frozen=True)
class _Match:
    inliers: int
    transform: np.ndarray | None  # (2, 3) from the first image's pixels to the second's (320 px)
    mirrored: bool  # the transform maps onto the second image mirrored left to right


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
