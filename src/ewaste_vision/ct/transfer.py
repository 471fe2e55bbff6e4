"""Transfer functions: CT intensity (Hounsfield-like units) to linear attenuation (1/mm).

A transfer function is a piecewise-linear curve through a few (intensity, attenuation) control
points, flat beyond the first and last point. Its shape stands for the X-ray machine: tube
voltage and filtration change how strongly plastics, ceramics and metals absorb relative to each
other, which is what domain randomisation varies (paper 002, Sec. III-A).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

ControlPoints = tuple[tuple[float, float], ...]
"""(intensity, attenuation per mm) pairs, intensity strictly increasing."""


def check_control_points(points: Sequence[Sequence[float]]) -> ControlPoints:
    """Return `points` as a tuple of pairs, or raise ValueError saying what is wrong with them."""
    pairs = tuple((float(p[0]), float(p[1])) for p in points)
    if len(pairs) < 2:
        raise ValueError("a transfer function needs at least two control points")
    values = np.asarray(pairs)
    if not np.all(np.isfinite(values)):
        raise ValueError("control points must be finite numbers")
    if np.any(np.diff(values[:, 0]) <= 0):
        raise ValueError("control point intensities must increase strictly")
    if np.any(values[:, 1] < 0):
        raise ValueError("attenuation cannot be negative")
    return pairs


def apply_transfer(voxels: torch.Tensor, points: ControlPoints) -> torch.Tensor:
    """Attenuation (1/mm) of every voxel: `points` interpolated linearly, flat outside them.

    Args:
        voxels: intensities of any shape, float.
        points: control points, intensity strictly increasing.

    Returns:
        A float32 tensor of `voxels`' shape and device.
    """
    flat = voxels.float()
    # A sum of one clamped ramp per segment: elementwise only, several times faster on a CPU than
    # looking each voxel's segment up (bucketize + gather).
    result = torch.full_like(flat, points[0][1])
    ramp = torch.empty_like(flat)
    for (low, low_value), (high, high_value) in itertools.pairwise(points):
        slope = (high_value - low_value) / (high - low)
        if slope != 0:
            torch.clamp(flat, low, high, out=ramp)
            result.add_(ramp.sub_(low), alpha=slope)
    return result


def jitter_control_points(
    points: ControlPoints, rng: np.random.Generator, intensity_sd: float, log_scale_sd: float
) -> ControlPoints:
    """A random variation of `points`: intensities shifted, attenuations scaled (log-normal).

    The shifted intensities are sorted and pulled at least 1 unit apart, so the result is again
    a valid transfer function.
    """
    values = np.asarray(points, dtype=np.float64)
    knots = np.sort(values[:, 0] + rng.normal(0.0, intensity_sd, len(values)))
    for index in range(1, len(knots)):
        knots[index] = max(knots[index], knots[index - 1] + 1.0)
    attenuation = values[:, 1] * np.exp(rng.normal(0.0, log_scale_sd, len(values)))
    return tuple((round(float(k), 3), round(float(a), 6)) for k, a in zip(knots, attenuation, strict=True))
