"""Domain-randomisation settings for synthetic radiographs: the YAML file, its checks, and sampling.

Every randomised quantity is a range `[low, high]` sampled uniformly (a single number fixes it):
the projector pose (three Euler angles, source distances, detector offset), white-noise sigma
and the background. The transfer function is one of a few seed curves, chosen at random and
jittered (paper 002 seeds its randomisation with 5 hand-picked transfer functions, since a fully
random one mostly saturates the image). `configs/xray/dr_default.yaml` spells out the defaults below,
which are the paper's "current DR" (Table I, first row: everything randomised, sigma 1000).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ewaste_vision.ct.drr import Method, Pose
from ewaste_vision.ct.transfer import ControlPoints, check_control_points, jitter_control_points
from ewaste_vision.errors import UserError

Range = tuple[float, float]

MAX_COUNTS = 65535
"""Full scale of the 16-bit images."""

DEFAULT_TRANSFER_SEEDS: tuple[ControlPoints, ...] = (
    # Intensity (air about -1000) -> attenuation per mm. Five curves that keep a device readable:
    # from "plastics visible" (soft, low-voltage look) to "metal only" (hard, high-voltage look).
    ((-1000.0, 0.0), (-300.0, 0.0), (200.0, 0.02), (1500.0, 0.12), (3000.0, 0.4)),
    ((-1000.0, 0.0), (-200.0, 0.0), (300.0, 0.01), (1200.0, 0.08), (3000.0, 0.25)),
    ((-1000.0, 0.0), (0.0, 0.0), (500.0, 0.015), (2000.0, 0.2), (3000.0, 0.3)),
    ((-1000.0, 0.0), (-400.0, 0.002), (100.0, 0.03), (1000.0, 0.06), (3000.0, 0.5)),
    ((-1000.0, 0.0), (300.0, 0.0), (800.0, 0.02), (1800.0, 0.15), (3000.0, 0.6)),
)


@dataclass(frozen=True)
class TransferSettings:
    """Transfer functions: seed curves and how far each render's curve strays from its seed."""

    seeds: tuple[ControlPoints, ...] = DEFAULT_TRANSFER_SEEDS
    """Control-point lists [[intensity, attenuation per mm], ...]; each render picks one at random."""
    jitter_intensity: float = 80.0
    """Standard deviation of the shift of each control point's intensity."""
    jitter_log_scale: float = 0.25
    """Standard deviation of the log of each control point's attenuation factor."""


@dataclass(frozen=True)
class PoseSettings:
    """Projector pose ranges (degrees and mm)."""

    rotation_z_deg: Range = (-180.0, 180.0)
    """Turn about the beam axis (in the image plane)."""
    rotation_y_deg: Range = (-30.0, 30.0)
    """Tilt about the image's vertical axis."""
    rotation_x_deg: Range = (-30.0, 30.0)
    """Tilt about the image's horizontal axis."""
    source_to_isocentre_mm: Range = (500.0, 700.0)
    source_to_detector_mm: Range = (900.0, 1100.0)
    detector_offset_mm: Range = (-10.0, 10.0)
    """Shift of the detector along each of its axes."""


@dataclass(frozen=True)
class NoiseSettings:
    """White Gaussian noise added to the 16-bit image."""

    sigma: Range = (1000.0, 1000.0)
    """Standard deviation in 16-bit counts (paper 002 compares 10, 100, 500 and 1000)."""


@dataclass(frozen=True)
class BackgroundSettings:
    """The unattenuated beam: what the detector reads where nothing is in the way."""

    level: Range = (35000.0, 62000.0)
    """Counts of the open beam."""
    gradient: Range = (0.0, 0.2)
    """Uneven illumination: a linear ramp across the image, as a fraction of the level."""


@dataclass(frozen=True)
class ImageSettings:
    """The rendered image."""

    size: int = 200
    """Pixels per side (square detector)."""
    pixel_mm: float | None = None
    """Detector pixel pitch; none: fitted so the volume's bounding sphere, seen at the middle of
    the distance ranges, spans `1 / fill` of the image width."""
    fill: float = 0.95
    """Share of the image the volume's bounding sphere spans when `pixel_mm` is not given."""
    projector: Method = "slices"
    """`slices` (Joseph's method, the faster; see bench/bench_drr.py) or `rays` (ray marching)."""
    samples_per_ray: int | None = None
    """For `rays`: samples along each ray inside the volume; none: the volume's diagonal in voxels."""


@dataclass(frozen=True)
class KeypointSettings:
    """The render filter: renders with fewer keypoints than `min_count` are rejected."""

    min_count: int = 40
    """Fewest FAST keypoints an accepted render has (paper 002: 100 SuperPoint keypoints; 40 FAST
    corners at 200 px pass 9 in 10 well-exposed synthetic-CT renders and no blank or black one)."""
    fast_threshold: int = 20
    """FAST intensity threshold on the 8-bit view of the noise-free render."""
    max_attempts_per_render: int = 3
    """A volume stops after this many attempts per wanted render, accepted or not."""


@dataclass(frozen=True)
class DRConfig:
    """Everything that is randomised, and how, for `ewaste data synth-xray`."""

    image: ImageSettings = field(default_factory=ImageSettings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    pose: PoseSettings = field(default_factory=PoseSettings)
    noise: NoiseSettings = field(default_factory=NoiseSettings)
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    keypoints: KeypointSettings = field(default_factory=KeypointSettings)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-ready values (tuples as lists)."""
        return _plain(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """Short hash of the settings: a resumed job must use the same ones."""
        return hashlib.sha256(yaml.safe_dump(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RenderParams:
    """Every random choice of one render; the manifest stores these."""

    transfer_seed: int
    transfer_points: ControlPoints
    pose: Pose
    noise_sigma: float
    background_level: float
    background_gradient: float
    gradient_angle_deg: float

    def to_record(self) -> dict[str, Any]:
        """Flat, JSON-ready fields."""
        return {
            "transfer_seed": self.transfer_seed,
            "transfer_points": [list(point) for point in self.transfer_points],
            "rotation_deg": list(self.pose.rotation_deg),
            "source_to_isocentre_mm": self.pose.source_to_isocentre_mm,
            "source_to_detector_mm": self.pose.source_to_detector_mm,
            "detector_offset_mm": list(self.pose.detector_offset_mm),
            "noise_sigma": self.noise_sigma,
            "background_level": self.background_level,
            "background_gradient": self.background_gradient,
            "gradient_angle_deg": self.gradient_angle_deg,
        }


def render_seed(base_seed: int, *key: object) -> int:
    """A 63-bit seed from the job seed and a render's identity: the same render, the same seed."""
    text = "\x1f".join(str(part) for part in (base_seed, *key))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def sample_render(config: DRConfig, rng: np.random.Generator) -> RenderParams:
    """Draw one render's settings from `config`."""
    pose_cfg = config.pose
    transfer_seed = int(rng.integers(len(config.transfer.seeds)))
    points = jitter_control_points(
        config.transfer.seeds[transfer_seed],
        rng,
        config.transfer.jitter_intensity,
        config.transfer.jitter_log_scale,
    )
    pose = Pose(
        rotation_deg=(
            _uniform(rng, pose_cfg.rotation_z_deg),
            _uniform(rng, pose_cfg.rotation_y_deg),
            _uniform(rng, pose_cfg.rotation_x_deg),
        ),
        source_to_isocentre_mm=_uniform(rng, pose_cfg.source_to_isocentre_mm),
        source_to_detector_mm=_uniform(rng, pose_cfg.source_to_detector_mm),
        detector_offset_mm=(
            _uniform(rng, pose_cfg.detector_offset_mm),
            _uniform(rng, pose_cfg.detector_offset_mm),
        ),
    )
    return RenderParams(
        transfer_seed=transfer_seed,
        transfer_points=points,
        pose=pose,
        noise_sigma=_uniform(rng, config.noise.sigma),
        background_level=_uniform(rng, config.background.level),
        background_gradient=_uniform(rng, config.background.gradient),
        gradient_angle_deg=round(float(rng.uniform(0.0, 360.0)), 3),
    )


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    # Always draw, even for a fixed value, so fixing one setting leaves the others' draws alone.
    return round(float(rng.uniform(bounds[0], bounds[1])), 4)


# --- reading and checking the YAML -----------------------------------------------------------

_SECTIONS: dict[str, type] = {
    "image": ImageSettings,
    "transfer": TransferSettings,
    "pose": PoseSettings,
    "noise": NoiseSettings,
    "background": BackgroundSettings,
    "keypoints": KeypointSettings,
}


def load_dr_config(path: Path | str | None) -> DRConfig:
    """Read a DR YAML file over the defaults; `None` gives the defaults.

    Keys left out keep their defaults. A range is `[low, high]` or one number (fixed).

    Raises:
        UserError: the file is missing or not YAML, or a key is unknown or has an impossible
            value; the message names the file and the key.
    """
    if path is None:
        return DRConfig()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: DR config not found; check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from exc
    return dr_config_from_dict(data or {}, source=str(path))


def dr_config_from_dict(data: Any, source: str = "DR config") -> DRConfig:
    """Build a checked `DRConfig` from nested mappings (as read from YAML).

    Raises:
        UserError: naming `source` and the key that is unknown or impossible.
    """
    if not isinstance(data, Mapping):
        raise UserError(f"{source}: expected a mapping of sections ({', '.join(_SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, values in data.items():
        if name not in _SECTIONS:
            raise UserError(f"{source}: unknown key '{name}'; known sections: {', '.join(_SECTIONS)}")
        if not isinstance(values, Mapping):
            raise UserError(f"{source}: key '{name}' must be a mapping of settings")
        sections[name] = _read_section(_SECTIONS[name], values, f"{source}: key '{name}.")
    config = DRConfig(**sections)
    _check_config(config, source)
    return config


def _read_section(kind: type, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(kind)}
    parsed: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{where}{key}' is unknown; known keys: {', '.join(known)}")
        default = getattr(kind(), key)
        try:
            parsed[key] = _coerce(key, value, default)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}{key}' {exc}") from exc
    return kind(**parsed)


def _coerce(key: str, value: Any, default: Any) -> Any:
    if key == "seeds":
        if not isinstance(value, list) or not value:
            raise ValueError(
                "must be a non-empty list of control-point lists [[intensity, attenuation], ...]"
            )
        seeds = []
        for index, points in enumerate(value):
            if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
                raise ValueError(f"seed {index} must be a list of [intensity, attenuation] pairs")
            try:
                seeds.append(check_control_points([[_number(a), _number(b)] for a, b in points]))
            except ValueError as exc:
                raise ValueError(f"seed {index}: {exc}") from exc
        return tuple(seeds)
    if isinstance(default, tuple):  # a range
        if isinstance(value, list):
            if len(value) != 2:
                raise ValueError(f"must be [low, high] or one number, got {value}")
            low, high = _number(value[0]), _number(value[1])
        else:
            low = high = _number(value)
        if low > high:
            raise ValueError(f"has low {low} above high {high}; write [low, high]")
        return (low, high)
    if key in {"pixel_mm", "samples_per_ray"} and value is None:
        return None
    if key == "projector":
        if not isinstance(value, str):
            raise ValueError(f"must be 'slices' or 'rays', got {value!r}")
        return value
    if key in {"size", "samples_per_ray", "min_count", "fast_threshold", "max_attempts_per_render"}:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, got {value!r}")
        return value
    return _number(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return float(value)


def _check_config(config: DRConfig, source: str) -> None:
    """Impossible combinations, each named by its key."""

    def fail(key: str, why: str) -> None:
        raise UserError(f"{source}: key '{key}' {why}")

    image, pose, keypoints = config.image, config.pose, config.keypoints
    if not 8 <= image.size <= 4096:
        fail("image.size", f"must be between 8 and 4096 pixels, got {image.size}")
    if image.pixel_mm is not None and not image.pixel_mm > 0:
        fail("image.pixel_mm", f"must be > 0 mm, got {image.pixel_mm}")
    if not 0 < image.fill <= 1:
        fail("image.fill", f"must be in (0, 1], got {image.fill}")
    if image.projector not in ("slices", "rays"):
        fail("image.projector", f"must be 'slices' or 'rays', got {image.projector!r}")
    if image.samples_per_ray is not None and not 2 <= image.samples_per_ray <= 4096:
        fail("image.samples_per_ray", f"must be between 2 and 4096, got {image.samples_per_ray}")
    if config.transfer.jitter_intensity < 0:
        fail("transfer.jitter_intensity", f"cannot be negative, got {config.transfer.jitter_intensity}")
    if config.transfer.jitter_log_scale < 0:
        fail("transfer.jitter_log_scale", f"cannot be negative, got {config.transfer.jitter_log_scale}")
    for name in ("rotation_z_deg", "rotation_y_deg", "rotation_x_deg"):
        low, high = getattr(pose, name)
        if low < -360 or high > 360:
            fail(f"pose.{name}", f"must lie within [-360, 360] degrees, got [{low}, {high}]")
    if pose.source_to_isocentre_mm[0] <= 0:
        fail("pose.source_to_isocentre_mm", f"must be > 0 mm, got {list(pose.source_to_isocentre_mm)}")
    if pose.source_to_detector_mm[0] <= pose.source_to_isocentre_mm[1]:
        fail(
            "pose.source_to_detector_mm",
            f"must exceed source_to_isocentre_mm everywhere (the detector sits behind the object), "
            f"got {list(pose.source_to_detector_mm)} against {list(pose.source_to_isocentre_mm)}",
        )
    if config.noise.sigma[0] < 0:
        fail("noise.sigma", f"cannot be negative, got {list(config.noise.sigma)}")
    low, high = config.background.level
    if low <= 0 or high > MAX_COUNTS:
        fail("background.level", f"must lie in (0, {MAX_COUNTS}] counts, got [{low}, {high}]")
    low, high = config.background.gradient
    if low < 0 or high >= 1:
        fail("background.gradient", f"must lie in [0, 1), got [{low}, {high}]")
    if keypoints.min_count < 0:
        fail("keypoints.min_count", f"cannot be negative, got {keypoints.min_count}")
    if not 1 <= keypoints.fast_threshold <= 254:
        fail("keypoints.fast_threshold", f"must be between 1 and 254, got {keypoints.fast_threshold}")
    if keypoints.max_attempts_per_render < 1:
        fail(
            "keypoints.max_attempts_per_render",
            f"must be at least 1, got {keypoints.max_attempts_per_render}",
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value
