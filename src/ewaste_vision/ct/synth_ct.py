"""Procedural CT volumes of phone-like devices, and photos of their outside, for demos and tests.

Seed 002 classifies phone generations that look alike outside and differ inside, from X-rays
rendered out of 2-3 CT scans per class plus RGB photos. This module stands in for those scans so
the whole pipeline runs offline: `write_synthetic_ct` writes

    OUT/volumes/CLASS/DEVICE.nrrd     int16, HU-like (air -1000, plastic ~200, glass ~1500,
                                      battery ~1200-2000, copper/steel 3000+), anisotropic spacing
    OUT/rgb/CLASS/DEVICE_kk.png       photos of the device's back: pose, light, background varied
    OUT/synth_ct.json                 the settings, and which classes share an outside

How the classes differ, on purpose:
- Inside, every class has its own layout, drawn from the class's own random stream: battery size
  and place, board outline (top strip, L, U, side strip, ...), shield cans, camera module sizes,
  logo plate (none, disc, ring, bar), screw pattern, speaker and motor.
- Outside, classes come in *families* of two (class 2k and 2k+1) that share one exterior design:
  camera bump position and lens count, logo glyph, frame. Within a family only the lens size
  differs, by less than its device-to-device scatter. So from the outside (RGB) a classifier can
  tell families apart but hardly the classes within one; from the inside (X-ray) it can tell all.
- Every device of a class is jittered (placement, part sizes and positions, a small rotation,
  intensity, noise, an occasional missing screw), so a model must generalise to a held-out device.

Coordinates: parts are placed in millimetres on the phone (u along its length, top at -u; v
across; z through its thickness, back at small z) and voxelised at the grid's centres, so any
`size` gives the same device. Volume axes are (D, H, W) = (z, u, v).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ewaste_vision.ct.volume import Volume
from ewaste_vision.errors import UserError
from ewaste_vision.io.atomic import atomic_path, write_json

FIELD_MM = (14.0, 168.0, 112.0)
"""The scanned box (D, H, W) in mm: the phone plus air around it."""

PHONE_MM = (8.0, 146.0, 72.0)
"""Phone thickness, length and width in mm."""

PHONE_Z0 = 3.0
"""Height of the phone's back above the bottom of the field, in mm (the camera bump is below)."""

AIR_HU = -1000.0
PHOTO_SIZE = 128
"""Side of the square RGB photos, in pixels."""

FAMILY_SIZE = 2
"""Classes that share one exterior design."""

# Material intensities in HU (illustrative, in the ranges clinical and industrial CT show).
HU = {
    "display": 600.0,
    "glass": 1500.0,
    "plastic": 200.0,
    "aluminium": 2400.0,
    "fr4": 900.0,
    "battery": 1600.0,
    "battery_foil": 2600.0,
    "steel": 3400.0,
    "copper": 3000.0,
    "magnet": 3800.0,
    "lens": 1900.0,
}

BOARD_SHAPES = ("top", "l_left", "l_right", "u", "side_left", "side_right")
LOGO_PLATES = ("none", "disc", "ring", "bar")

# Body colours shared by all classes (phones of every generation come in most colours).
BODY_COLOURS = (
    (30, 30, 34),
    (225, 225, 220),
    (180, 182, 186),
    (214, 190, 150),
    (52, 74, 110),
    (150, 40, 45),
    (80, 110, 90),
    (200, 170, 200),
)


@dataclass(frozen=True)
class Part:
    """One solid piece of a device: a rounded rectangle in (u, v) extruded over [z0, z1] mm.

    `hole` > 0 makes it a ring (a rectangle or disc with the inner `hole` mm removed from each
    side); `radius` is the corner radius (half the smaller side gives a disc or a rod).
    """

    centre: tuple[float, float]
    size: tuple[float, float]
    z: tuple[float, float]
    hu: float
    radius: float = 0.0
    angle: float = 0.0
    hole: float = 0.0


@dataclass(frozen=True)
class ExteriorDesign:
    """What a class looks like outside; shared by the classes of one family."""

    lenses: int
    bump_centre: tuple[float, float]
    bump_size: tuple[float, float]
    logo_glyph: int
    frame_hu: float
    lens_radius: float


@dataclass(frozen=True)
class SynthCTResult:
    """What `write_synthetic_ct` wrote."""

    root: Path
    class_names: list[str]
    volumes: list[Path]
    photos: list[Path]


def class_names_for(classes: int) -> list[str]:
    """Class names `sp01`, `sp02`, ... (seed 002 calls its phone generations SP1..SP10)."""
    return [f"sp{index + 1:02d}" for index in range(classes)]


def device_names_for(devices: int) -> list[str]:
    """Device names `dev01`, `dev02`, ... within each class."""
    return [f"dev{index + 1:02d}" for index in range(devices)]


def grid_shape(size: int) -> tuple[int, int, int]:
    """Voxels (D, H, W) for a volume `size` voxels long (96 gives 16 x 96 x 64)."""
    depth = max(8, round(size / 6))  # finer in z (~0.9 mm at 96) so thin glass and plates show
    width = max(8, round(size * FIELD_MM[2] / FIELD_MM[1]))
    return depth, size, width


def exterior_design(family: int, class_index: int, seed: int) -> ExteriorDesign:
    """The outside of class `class_index`, from its family's stream plus a tiny per-class lens size."""
    rng = _rng(seed, 1, family)
    lenses = int(rng.integers(1, 4))
    bump_size = (
        12.0 + 9.0 * (lenses > 1) + rng.uniform(-1, 1),
        12.0 + 8.0 * (lenses > 2) + rng.uniform(-1, 1),
    )
    bump_centre = (
        -PHONE_MM[1] / 2 + 8 + bump_size[0] / 2 + rng.uniform(0, 4),
        rng.choice([-1.0, 0.0]) * rng.uniform(10, 18),
    )
    lens_radius = 3.2 + rng.uniform(-0.3, 0.3) + 0.12 * (class_index % FAMILY_SIZE)
    return ExteriorDesign(
        lenses=lenses,
        bump_centre=(float(bump_centre[0]), float(bump_centre[1])),
        bump_size=(float(bump_size[0]), float(bump_size[1])),
        logo_glyph=int(rng.integers(0, 3)),
        frame_hu=float(rng.choice([HU["aluminium"], HU["steel"] * 0.8])),
        lens_radius=float(lens_radius),
    )


def device_parts(class_index: int, device_index: int, seed: int) -> list[Part]:
    """The parts of one device, in painting order (later parts overwrite earlier ones)."""
    outside = exterior_design(class_index // FAMILY_SIZE, class_index, seed)
    design = _rng(seed, 2, class_index)  # the class's own inside
    jitter = _rng(seed, 3, class_index, device_index)  # this device's scatter

    def j(scale: float) -> float:
        return float(jitter.normal(0.0, scale))

    length, width = PHONE_MM[1], PHONE_MM[2]
    z_back, z_front = PHONE_Z0, PHONE_Z0 + PHONE_MM[0]
    parts = [
        # Shell: frame ring, back glass, display stack, front glass.
        Part((0, 0), (length, width), (z_back, z_front), outside.frame_hu, radius=9.0, hole=1.6),
        Part((0, 0), (length - 1, width - 1), (z_back, z_back + 0.8), HU["glass"], radius=8.5),
        Part((0, 0), (length - 3, width - 3), (z_front - 1.6, z_front - 0.8), HU["display"], radius=8.0),
        Part((0, 0), (length - 1, width - 1), (z_front - 0.8, z_front), HU["glass"], radius=8.5),
    ]

    # Battery: the largest block inside, its size and place set by the class.
    bat_len = design.uniform(52, 82) * (1 + j(0.015))
    bat_wid = design.uniform(44, 62) * (1 + j(0.015))
    bat_u = design.uniform(4, 64 - bat_len / 2) + j(0.8)
    bat_v = design.uniform(-5, 5) + j(0.6)
    bat_hu = design.uniform(1250, 1900) * (1 + j(0.02))
    parts.append(Part((bat_u, bat_v), (bat_len, bat_wid), (z_back + 1.0, z_back + 5.2), bat_hu, radius=3.0))
    # Foil tabs: a dense strip on one end of the battery, which end set by the class.
    tab_end = 1 if design.random() < 0.5 else -1
    parts.append(
        Part(
            (bat_u + tab_end * (bat_len / 2 - 2.5), bat_v),
            (4.0, bat_wid * 0.6),
            (z_back + 1.0, z_back + 5.2),
            HU["battery_foil"],
        )
    )

    # Board: outline by class, placed in the space the battery leaves.
    shape = BOARD_SHAPES[_choice_for_class(seed, 7, class_index, len(BOARD_SHAPES))]
    top_edge = -length / 2 + 4
    bat_top = bat_u - bat_len / 2 - 1.5
    board_z = (z_back + 3.4, z_back + 4.6)
    strip_len = bat_top - top_edge
    board: list[Part] = []
    if shape in ("top", "l_left", "l_right", "u"):
        board.append(
            Part(((top_edge + bat_top) / 2, 0), (strip_len, width - 7), board_z, HU["fr4"], radius=2)
        )
    side_w = design.uniform(7, 11)
    side_span = (bat_top - 2, bat_u + bat_len / 2)
    side_len = side_span[1] - side_span[0]
    side_centre_u = (side_span[0] + side_span[1]) / 2
    for side, flag in ((-1, ("l_left", "u", "side_left")), (1, ("l_right", "u", "side_right"))):
        if shape in flag:
            board.append(
                Part(
                    (side_centre_u, side * (width / 2 - 3.5 - side_w / 2)),
                    (side_len, side_w),
                    board_z,
                    HU["fr4"],
                    radius=1.5,
                )
            )
    if shape.startswith("side"):
        # A side-strip board still needs room for the camera: a small top island.
        board.append(
            Part(((top_edge + bat_top) / 2, 0), (strip_len * 0.7, width * 0.45), board_z, HU["fr4"], radius=2)
        )
    parts += [Part((p.centre[0] + j(0.4), p.centre[1] + j(0.4)), p.size, p.z, p.hu, p.radius) for p in board]
    # Copper pours: a denser layer on the board, slightly smaller.
    parts += [
        Part(
            p.centre,
            (p.size[0] * 0.8, p.size[1] * 0.7),
            (board_z[0] + 0.5, board_z[1] - 0.3),
            HU["copper"] * 0.7,
            p.radius,
        )
        for p in board
    ]

    # Shield cans on the board: count, sizes and places by class.
    main = board[0]
    for _ in range(int(design.integers(1, 5))):
        can_len = design.uniform(0.2, 0.45) * main.size[0]
        can_wid = design.uniform(0.15, 0.4) * main.size[1]
        cu = main.centre[0] + design.uniform(-0.5, 0.5) * (main.size[0] - can_len)
        cv = main.centre[1] + design.uniform(-0.5, 0.5) * (main.size[1] - can_wid)
        parts.append(
            Part(
                (cu + j(0.5), cv + j(0.5)),
                (can_len, can_wid),
                (board_z[1], board_z[1] + 1.6),
                HU["steel"] * 0.85,
                hole=0.6,
            )
        )

    # Camera modules under the bump: their body size is the class's, their place the family's.
    module_scale = design.uniform(0.75, 1.25)
    for lens_u, lens_v in _lens_centres(outside):
        module_side = 7.0 * module_scale * (1 + j(0.03))
        parts.append(
            Part(
                (lens_u + j(0.3), lens_v + j(0.3)),
                (module_side, module_side),
                (z_back + 0.8, z_back + 6.5),
                HU["copper"] * 0.75,
                radius=1.0,
            )
        )
    # Camera bump (outside, below the back) and its lenses.
    bu, bv = outside.bump_centre
    parts.append(Part((bu, bv), outside.bump_size, (z_back - 1.2, z_back), HU["glass"], radius=4.0))
    lens_r = outside.lens_radius * (1 + j(0.05))
    for lens_u, lens_v in _lens_centres(outside):
        parts.append(
            Part(
                (lens_u, lens_v),
                (2 * lens_r, 2 * lens_r),
                (z_back - 1.2, z_back + 2.0),
                HU["lens"],
                radius=lens_r,
            )
        )

    # Logo plate (or coil) behind the back glass: kind and size by class.
    plate = LOGO_PLATES[_choice_for_class(seed, 8, class_index, len(LOGO_PLATES))]
    plate_u = bat_u + design.uniform(-8, 8) + j(0.6)
    if plate == "disc":
        r = design.uniform(8, 14)
        parts.append(
            Part((plate_u, j(0.5)), (2 * r, 2 * r), (z_back + 0.8, z_back + 1.0), HU["steel"], radius=r)
        )
    elif plate == "ring":
        r = design.uniform(14, 22)
        parts.append(
            Part(
                (plate_u, j(0.5)),
                (2 * r, 2 * r),
                (z_back + 0.8, z_back + 1.0),
                HU["magnet"],
                radius=r,
                hole=2.5,
            )
        )
    elif plate == "bar":
        parts.append(
            Part(
                (plate_u, j(0.5)),
                (design.uniform(6, 10), design.uniform(30, 45)),
                (z_back + 0.8, z_back + 1.0),
                HU["steel"],
                radius=1.0,
            )
        )

    # Speaker and vibration motor near the bottom, placed by class.
    spk_v = design.uniform(-18, 18)
    parts.append(
        Part(
            (length / 2 - 9 + j(0.4), spk_v + j(0.4)),
            (design.uniform(8, 12), design.uniform(14, 22)),
            (z_back + 1.5, z_back + 5.5),
            HU["magnet"] * 0.6,
            radius=1.5,
        )
    )
    motor_v = -math.copysign(1.0, spk_v) * design.uniform(14, 24)
    parts.append(
        Part(
            (length / 2 - 10 + j(0.4), motor_v + j(0.4)),
            (9.0, 9.0),
            (z_back + 2, z_back + 5),
            HU["steel"] * 0.9,
            radius=4.5,
        )
    )

    # Screws: a class's own pattern on the board, one sometimes missing (a repaired device).
    screws = int(design.integers(4, 9))
    for _ in range(screws):
        target = board[int(design.integers(0, len(board)))]
        su = target.centre[0] + design.uniform(-0.45, 0.45) * target.size[0]
        sv = target.centre[1] + design.uniform(-0.45, 0.45) * target.size[1]
        if jitter.random() < 0.08:
            continue
        parts.append(
            Part(
                (su + j(0.3), sv + j(0.3)),
                (2.2, 2.2),
                (z_back + 2.5, z_back + 6.2),
                HU["steel"] * 1.1,
                radius=1.1,
            )
        )
    return parts


def device_volume(class_index: int, device_index: int, size: int = 96, seed: int = 0) -> Volume:
    """Voxelise one device: int16-valued HU in a float32 `[D, H, W]` volume with its spacing.

    Args:
        class_index: which class (0-based).
        device_index: which device of that class (0-based).
        size: voxels along the device's length (H); D and W follow the field's proportions.
        seed: the dataset seed; the same arguments always give the same volume.
    """
    depth, height, width = grid_shape(size)
    spacing = (FIELD_MM[0] / depth, FIELD_MM[1] / height, FIELD_MM[2] / width)
    jitter = _rng(seed, 4, class_index, device_index)
    # Voxel centres in mm; (u, v) centred on the field, z from the field's bottom.
    z = (np.arange(depth) + 0.5) * spacing[0]
    u = (np.arange(height) + 0.5) * spacing[1] - FIELD_MM[1] / 2
    v = (np.arange(width) + 0.5) * spacing[2] - FIELD_MM[2] / 2
    grid_u, grid_v = np.meshgrid(u, v, indexing="ij")  # [H, W]
    # The device lies slightly turned and off-centre on the scanner's table.
    turn = math.radians(jitter.normal(0, 2.0))
    shift_u, shift_v = jitter.normal(0, 1.5, size=2)
    cos, sin = math.cos(turn), math.sin(turn)
    local_u = cos * (grid_u - shift_u) + sin * (grid_v - shift_v)
    local_v = -sin * (grid_u - shift_u) + cos * (grid_v - shift_v)

    voxels = np.full((depth, height, width), AIR_HU, dtype=np.float32)
    gain = 1 + jitter.normal(0, 0.03)  # scanner calibration differs a little between scans
    for part in device_parts(class_index, device_index, seed):
        footprint = _footprint(part, local_u, local_v)  # [H, W]
        slices = _slab(part.z, z)
        voxels[slices, footprint] = part.hu * gain if part.hu > 0 else part.hu
    voxels += jitter.normal(0, 25.0, size=voxels.shape).astype(np.float32)
    voxels = np.clip(np.round(voxels), -1024, 32767).astype(np.float32)
    return Volume(voxels=voxels, spacing=spacing, source=Path(f"synthetic/{class_index}/{device_index}"))


def device_photo(
    class_index: int, device_index: int, photo_index: int, seed: int = 0, size: int = PHOTO_SIZE
) -> np.ndarray:
    """A photo of one device's back: `[size, size, 3]` uint8 RGB.

    The device's colour is its own (from a palette every class shares); the camera bump and the
    logo glyph are its family's; pose, light, background and noise vary per photo.
    """
    outside = exterior_design(class_index // FAMILY_SIZE, class_index, seed)
    device = _rng(seed, 5, class_index, device_index)
    shot = _rng(seed, 6, class_index, device_index, photo_index)
    scale = 2  # draw at 2 px/mm, then rotate and shrink: smooth edges without hand-written AA
    length, width = PHONE_MM[1], PHONE_MM[2]
    colour = np.array(BODY_COLOURS[int(device.integers(0, len(BODY_COLOURS)))], dtype=float)
    colour = np.clip(colour * device.uniform(0.92, 1.08) + device.normal(0, 6, 3), 0, 255)

    canvas = Image.new("RGBA", (int(width * scale), int(length * scale)), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)

    def rect(
        centre: tuple[float, float], extent: tuple[float, float], radius: float, fill: tuple[int, ...]
    ) -> None:
        cu, cv = centre[0] + length / 2, centre[1] + width / 2
        box = (
            (cv - extent[1] / 2) * scale,
            (cu - extent[0] / 2) * scale,
            (cv + extent[1] / 2) * scale,
            (cu + extent[0] / 2) * scale,
        )
        draw.rounded_rectangle(box, radius=radius * scale, fill=fill)

    body = tuple(int(c) for c in colour)
    edge = tuple(int(c) for c in np.clip(colour * 0.75 + 20, 0, 255))
    rect((0, 0), (length, width), 9.0, (*edge, 255))
    rect((0, 0), (length - 2.0, width - 2.0), 8.0, (*body, 255))
    bump = tuple(int(c) for c in np.clip(colour * 0.8, 0, 255))
    rect(outside.bump_centre, outside.bump_size, 4.0, (*bump, 255))
    lens_r = outside.lens_radius * (1 + device.normal(0, 0.05))
    for lens_u, lens_v in _lens_centres(outside):
        rect((lens_u, lens_v), (2 * lens_r + 1.2, 2 * lens_r + 1.2), lens_r + 0.6, (90, 90, 96, 255))
        rect((lens_u, lens_v), (2 * lens_r, 2 * lens_r), lens_r, (12, 12, 18, 255))
        rect(
            (lens_u - lens_r * 0.3, lens_v - lens_r * 0.3),
            (lens_r * 0.5, lens_r * 0.5),
            lens_r * 0.25,
            (70, 80, 110, 255),
        )
    flash_u = outside.bump_centre[0] + outside.bump_size[0] / 2 - 2.5
    rect(
        (flash_u, outside.bump_centre[1] + outside.bump_size[1] / 2 - 2.5),
        (2.4, 2.4),
        1.2,
        (235, 225, 170, 255),
    )
    logo = tuple(int(c) for c in np.clip(colour * 0.9 + 18, 0, 255))
    _draw_glyph(
        draw, outside.logo_glyph, ((width / 2) * scale, (length / 2 + 8) * scale), 7.0 * scale, (*logo, 255)
    )

    # Pose: either way up on the belt, turned a little, at a slightly different distance.
    angle = float(shot.choice([0.0, 180.0]) + shot.normal(0, 8))
    posed = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    target_len = size * shot.uniform(0.7, 0.85)
    zoom = target_len / (length * scale)
    posed = posed.resize(
        (max(1, round(posed.width * zoom)), max(1, round(posed.height * zoom))), Image.Resampling.LANCZOS
    )

    background = _background(shot, size)
    offset = (
        int((size - posed.width) / 2 + shot.uniform(-0.08, 0.08) * size),
        int((size - posed.height) / 2 + shot.uniform(-0.06, 0.06) * size),
    )
    # A soft shadow under the device.
    shadow = Image.new("RGBA", posed.size, (0, 0, 0, 0))
    shadow.putalpha(posed.getchannel("A").point(lambda a: int(a * 0.45)))
    background.alpha_composite(shadow.filter(ImageFilter.GaussianBlur(3)), (offset[0] + 3, offset[1] + 3))
    background.alpha_composite(posed, offset)

    # Light: a gradient from one side and a specular spot, then sensor blur and noise.
    image = np.asarray(background.convert("RGB"), dtype=np.float32)
    rows, cols = np.mgrid[0:size, 0:size] / size
    direction = shot.uniform(0, 2 * math.pi)
    light = 0.85 + 0.3 * ((rows - 0.5) * math.cos(direction) + (cols - 0.5) * math.sin(direction))
    spot = shot.uniform(0.2, 0.8, 2)
    light += 0.25 * np.exp(-(((rows - spot[0]) ** 2 + (cols - spot[1]) ** 2) / 0.02))
    image = image * light[..., None] * shot.uniform(0.8, 1.15)
    image += shot.normal(0, 3.0, image.shape)
    photo = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5))
    return np.asarray(photo)


def write_synthetic_ct(
    out: Path | str,
    classes: int,
    devices_per_class: int = 3,
    size: int = 96,
    photos_per_device: int = 8,
    seed: int = 0,
) -> SynthCTResult:
    """Write synthetic device CT volumes and photos of their outside under `out`.

    Files that already exist from an interrupted run with the same settings are kept, so the
    same command resumes; each file is written atomically.

    Args:
        out: output folder (`volumes/`, `rgb/` and `synth_ct.json` go in it).
        classes: number of device classes, at least 2.
        devices_per_class: devices per class, at least 1 (2 or more to hold one out).
        size: voxels along a device's length, 32 to 512.
        photos_per_device: RGB photos per device, 0 or more.
        seed: the same seed always gives the same files.

    Raises:
        UserError: a setting is out of range, or `out` holds synthetic CT made with other settings.
    """
    out = Path(out)
    if seed < 0:
        raise UserError(f"--seed must be 0 or more, got {seed}")
    if classes < 2:
        raise UserError(f"--classes must be at least 2, got {classes}")
    if devices_per_class < 1:
        raise UserError(f"--devices-per-class must be at least 1, got {devices_per_class}")
    if not 32 <= size <= 512:
        raise UserError(f"--size must be between 32 and 512 voxels, got {size}")
    if photos_per_device < 0:
        raise UserError(f"--photos-per-device must be 0 or more, got {photos_per_device}")
    names = class_names_for(classes)
    devices = device_names_for(devices_per_class)
    depth, height, width = grid_shape(size)
    settings = {
        "seed": seed,
        "classes": names,
        "devices_per_class": devices_per_class,
        "size": size,
        "photos_per_device": photos_per_device,
        "shape": [depth, height, width],
        "spacing_mm": [FIELD_MM[0] / depth, FIELD_MM[1] / height, FIELD_MM[2] / width],
        "exterior_family": {name: index // FAMILY_SIZE for index, name in enumerate(names)},
        "note": "classes of one exterior_family look alike outside and differ inside",
    }
    manifest = out / "synth_ct.json"
    if manifest.exists():
        try:
            previous = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{manifest}: cannot read ({exc}); delete it or use a new --out") from exc
        if previous != settings:
            raise UserError(
                f"{out}: holds synthetic CT made with other settings; use a new --out or delete it"
            )
    write_json(manifest, settings)

    volumes: list[Path] = []
    photos: list[Path] = []
    for class_index, class_name in enumerate(names):
        for device_index, device in enumerate(devices):
            target = out / "volumes" / class_name / f"{device}.nrrd"
            if not target.exists():
                _write_nrrd(device_volume(class_index, device_index, size, seed), target)
            volumes.append(target)
            for photo_index in range(photos_per_device):
                photo_path = out / "rgb" / class_name / f"{device}_{photo_index:02d}.png"
                if not photo_path.exists():
                    pixels = device_photo(class_index, device_index, photo_index, seed)
                    with atomic_path(photo_path) as tmp:
                        Image.fromarray(pixels).save(tmp, format="PNG")
                photos.append(photo_path)
    return SynthCTResult(root=out, class_names=names, volumes=volumes, photos=photos)


def _write_nrrd(volume: Volume, target: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume.voxels.astype(np.int16))  # [D, H, W] -> (x=W, y=H, z=D)
    image.SetSpacing(tuple(reversed(volume.spacing)))
    with atomic_path(target) as tmp:
        # The temporary name ends in .tmp, so the format is named rather than guessed.
        sitk.WriteImage(image, str(tmp), useCompression=True, imageIO="NrrdImageIO")


def _lens_centres(outside: ExteriorDesign) -> list[tuple[float, float]]:
    """Lens centres in the bump: one in the middle, two side by side, or three in an L."""
    bu, bv = outside.bump_centre
    du, dv = outside.bump_size[0] / 4, outside.bump_size[1] / 4
    if outside.lenses == 1:
        return [(bu, bv)]
    if outside.lenses == 2:
        return [(bu - du, bv), (bu + du, bv)]
    return [(bu - du, bv - dv), (bu + du, bv - dv), (bu - du, bv + dv)]


def _footprint(part: Part, grid_u: np.ndarray, grid_v: np.ndarray) -> np.ndarray:
    """Boolean [H, W]: grid points inside the part's rounded rectangle (or ring)."""
    cos, sin = math.cos(part.angle), math.sin(part.angle)
    du = cos * (grid_u - part.centre[0]) + sin * (grid_v - part.centre[1])
    dv = -sin * (grid_u - part.centre[0]) + cos * (grid_v - part.centre[1])
    inside = _rounded_rect_distance(du, dv, part.size, part.radius) <= 0
    if part.hole > 0:
        inner = (part.size[0] - 2 * part.hole, part.size[1] - 2 * part.hole)
        if min(inner) > 0:
            inside &= _rounded_rect_distance(du, dv, inner, max(0.0, part.radius - part.hole)) > 0
    return inside


def _rounded_rect_distance(
    du: np.ndarray, dv: np.ndarray, size: tuple[float, float], radius: float
) -> np.ndarray:
    """Signed distance (mm) to a rounded rectangle centred at 0; negative inside."""
    radius = min(radius, size[0] / 2, size[1] / 2)
    qu = np.abs(du) - (size[0] / 2 - radius)
    qv = np.abs(dv) - (size[1] / 2 - radius)
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0) - radius


def _slab(z_range: tuple[float, float], z_centres: np.ndarray) -> slice:
    """The slices whose centres lie in `z_range`; at least the nearest one, so thin parts survive."""
    inside = np.nonzero((z_centres >= z_range[0]) & (z_centres <= z_range[1]))[0]
    if inside.size:
        return slice(int(inside[0]), int(inside[-1]) + 1)
    nearest = int(np.argmin(np.abs(z_centres - (z_range[0] + z_range[1]) / 2)))
    return slice(nearest, nearest + 1)


def _draw_glyph(
    draw: ImageDraw.ImageDraw, glyph: int, centre: tuple[float, float], radius: float, fill: tuple[int, ...]
) -> None:
    """A family's logo: a disc, a triangle or a diamond."""
    x, y = centre
    if glyph == 0:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
    elif glyph == 1:
        draw.polygon(
            [(x, y - radius), (x + radius, y + radius * 0.8), (x - radius, y + radius * 0.8)], fill=fill
        )
    else:
        draw.polygon([(x, y - radius), (x + radius, y), (x, y + radius), (x - radius, y)], fill=fill)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A belt or table: a random muted colour with coarse texture."""
    base = rng.uniform(40, 200, 3)
    coarse = rng.normal(0, 12, (size // 8 + 1, size // 8 + 1, 3))
    texture = np.kron(coarse, np.ones((8, 8, 1)))[:size, :size]
    pixels = np.clip(base + texture, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(2)).convert("RGBA")


def _choice_for_class(seed: int, purpose: int, class_index: int, options: int) -> int:
    """Option for a class from one seeded shuffle of all options, so neighbouring classes (the two
    of a family among them) never share it and every option is used before any repeats."""
    order = _rng(seed, purpose).permutation(options)
    return int(order[class_index % options])


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent, reproducible random stream for (seed, purpose, class, device, ...)."""
    return np.random.default_rng([seed, *stream])
