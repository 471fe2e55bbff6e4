"""Transfer functions: CT intensity (Hounsfield-like units) to linear attenuation (1/mm).

A transfer function is a piecewise-linear curve through a few (intensity, attenuation) control
points, flat beyond the first and last point. Its shape stands for the X-ray machine: tube
voltage and filtration change how strongly plastics, ceramics and metals absorb relative to each
other, which is what domain randomisation varies (paper 002, Sec. III-A).
"""

from __future__ import annotations

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
    table = torch.tensor(points, dtype=torch.float32, device=voxels.device)  # [K, 2]
    knots, values = table[:, 0].contiguous(), table[:, 1]
    flat = voxels.float()
    # Index of the segment [knots[i-1], knots[i]] each voxel falls in, clamped to the end segments.
    upper = torch.bucketize(flat, knots).clamp(1, len(points) - 1)
    lower = upper - 1
    low_knot, high_knot = knots[lower], knots[upper]
    weight = ((flat - low_knot) / (high_knot - low_knot)).clamp(0.0, 1.0)
    return values[lower] + weight * (values[upper] - values[lower])


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
