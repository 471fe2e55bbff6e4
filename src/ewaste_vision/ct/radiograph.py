"""From a volume and sampled settings to 16-bit radiographs, and the keypoint filter.

Image formation follows Beer-Lambert: counts = level x ramp x exp(-line integral), where `level`
is the open beam (the background) and `ramp` an uneven illumination; white Gaussian noise in
counts comes last, then rounding to 16 bits. The keypoint filter looks at the noise-free image as
a viewer would see it (16 bits shown as 8), because its job is to catch renders that a transfer
function saturated or emptied; noise would add corners to a blank image and let it through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ewaste_vision.ct.drr import Detector, bounding_radius_mm, line_integrals
from ewaste_vision.ct.randomise import MAX_COUNTS, DRConfig, RenderParams
from ewaste_vision.ct.transfer import apply_transfer


@dataclass(frozen=True)
class Radiograph:
    """One render: the 16-bit image and the keypoints of its noise-free version."""

    image: np.ndarray  # [H, W] uint16
    keypoints: int


def fitted_pixel_mm(config: DRConfig, shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Detector pitch for a volume: `config.image.pixel_mm`, or one that frames its bounding sphere.

    The fit uses the middle of the distance ranges, so randomised distances still zoom in and out.
    """
    if config.image.pixel_mm is not None:
        return config.image.pixel_mm
    source_to_isocentre = sum(config.pose.source_to_isocentre_mm) / 2
    source_to_detector = sum(config.pose.source_to_detector_mm) / 2
    diameter_on_detector = 2 * bounding_radius_mm(shape, spacing) * source_to_detector / source_to_isocentre
    return diameter_on_detector / (config.image.fill * config.image.size)


def render_radiographs(
    voxels: torch.Tensor,
    spacing: Sequence[float],
    params: Sequence[RenderParams],
    config: DRConfig,
    seeds: Sequence[int],
) -> list[Radiograph]:
    """Render one volume under several settings.

    Args:
        voxels: [D, H, W] intensities on the device to render on.
        spacing: mm per voxel along (D, H, W).
        params: one set of sampled settings per render.
        config: image size, pitch and keypoint filter.
        seeds: one seed per render, for its noise.

    Returns:
        One `Radiograph` per entry of `params`.
    """
    size = config.image.size
    detector = Detector(size, size, fitted_pixel_mm(config, tuple(voxels.shape), spacing))
    # One render at a time: a transfer-function copy of the volume each, and batching poses gains
    # nothing for the slice projector (bench/bench_drr.py: b8 vs b1).
    integrals = [
        line_integrals(
            apply_transfer(voxels, setting.transfer_points),
            spacing,
            [setting.pose],
            detector,
            method=config.image.projector,
            samples_per_ray=config.image.samples_per_ray,
        )[0]
        .cpu()
        .double()
        .numpy()
        for setting in params
    ]  # B x [H, W]
    results = []
    for integral, setting, seed in zip(integrals, params, seeds, strict=True):
        clean = setting.background_level * _illumination(size, setting) * np.exp(-integral)
        keypoints = count_keypoints(clean, config.keypoints.fast_threshold)
        noise = np.random.default_rng(seed).normal(0.0, setting.noise_sigma, clean.shape)
        image = np.clip(np.rint(clean + noise), 0, MAX_COUNTS).astype(np.uint16)
        results.append(Radiograph(image=image, keypoints=keypoints))
    return results


def _illumination(size: int, setting: RenderParams) -> np.ndarray:
    """[size, size] factor around 1: a linear ramp of total height `background_gradient`."""
    if setting.background_gradient == 0:
        return np.ones((size, size))
    axis = np.linspace(-0.5, 0.5, size)
    cols, rows = np.meshgrid(axis, axis)
    angle = math.radians(setting.gradient_angle_deg)
    return 1.0 + setting.background_gradient * (cols * math.cos(angle) + rows * math.sin(angle))


def count_keypoints(counts: np.ndarray, fast_threshold: int) -> int:
    """FAST corners (with non-maximum suppression) on the 8-bit view of a 16-bit image."""
    view = np.clip(np.rint(counts / 257.0), 0, 255).astype(np.uint8)
    detector = cv2.FastFeatureDetector_create(  # type: ignore[attr-defined]
        threshold=fast_threshold, nonmaxSuppression=True
    )
    return len(detector.detect(view, None))
