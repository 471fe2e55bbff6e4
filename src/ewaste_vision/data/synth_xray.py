"""Synthetic dual-energy X-ray scans of waste boards, with YOLO boxes.

The layout (which components, where, their outlines) comes from `synth.draw_board`, drawn on a
plain key colour so every non-key pixel belongs to a component. Each component class then has a
recipe that fills its outline with materials of given thickness (epoxy body, copper pins, a
silicon die on a copper pad with gold bond wires, an aluminium can, a ferrite core, ...), and
the scan follows Beer-Lambert per energy: T_E = exp(-sum_m mu_E(m) * t_m), counted with Poisson
noise and written as 16-bit detector values [2, H, W] (high, low).

Double-sided boards: a transmission scan sees both sides at once, so a second, sparser layout is
placed as the back side, overlapping the front freely. Its components are labelled too: they are
as visible as the front ones, and leaving them unlabelled would teach a detector to miss real parts.

The board sits inside a strip of air (as on a conveyor belt), so the default air-level estimate
of `xray.preprocess_xray` finds real air. Values are already offset-free (dark level 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NamedTuple

import numpy as np
import tifffile
from PIL import Image, ImageDraw

from ewaste_vision.data.synth import COMPONENT_CLASSES, Box, draw_board, write_yolo_split_boards
from ewaste_vision.data.xray import ENERGIES, XRAY_CHANNELS


class Attenuation(NamedTuple):
    """Linear attenuation coefficients of one material (1/mm) at the two detector energies."""

    high: float
    low: float


MATERIALS: Mapping[str, Attenuation] = MappingProxyType(
    {
        # Illustrative, order-of-magnitude values: NIST mass attenuation x density at ~60 keV (high)
        # and ~40 keV (low), rounded. A real tube spectrum hardens in thick parts; this does not.
        "fr4": Attenuation(0.045, 0.075),  # glass-epoxy substrate
        "epoxy": Attenuation(0.042, 0.07),  # silica-filled mould compound of IC and transistor bodies
        "water": Attenuation(0.021, 0.027),  # electrolyte and paper in electrolytic capacitors
        "silicon": Attenuation(0.048, 0.105),
        "alumina": Attenuation(0.10, 0.20),  # resistor cores
        "aluminium": Attenuation(0.075, 0.154),
        "ferrite": Attenuation(0.41, 1.1),  # MnZn cores of coils
        "copper": Attenuation(0.71, 1.96),
        "iron": Attenuation(0.95, 2.86),  # transformer laminations
        "barium_titanate": Attenuation(2.7, 8.2),  # ceramic capacitor dielectric
        "solder": Attenuation(3.6, 10.6),  # tin-based
        "tantalum": Attenuation(4.2, 11.7),
        "gold": Attenuation(6.1, 17.2),
    }
)
"""Material -> attenuation (1/mm). Every material absorbs more at low energy; metals much more."""

_KEY = (255, 0, 255)
"""Plain background of the layout drawings; no component is drawn in pure magenta."""

Layers = dict[str, np.ndarray]
"""Material -> thickness (mm) along the beam, [H, W] float64."""


@dataclass(frozen=True)
class _Part:
    """One component's outline on the canvas.

    Attributes:
        footprint: pixels of the component [H, W] bool.
        metal: footprint pixels drawn as bare metal (grey, bright: pins, leads, cans).
        rect: (left, top, right, bottom) pixel box on the canvas.
    """

    footprint: np.ndarray
    metal: np.ndarray
    rect: tuple[int, int, int, int]

    def centre(self, fraction: float) -> np.ndarray:
        """A centred rectangle `fraction` of the box's size, inside the footprint, [H, W] bool."""
        left, top, right, bottom = self.rect
        width, height = max(1, round((right - left) * fraction)), max(1, round((bottom - top) * fraction))
        x, y = (left + right - width) // 2, (top + bottom - height) // 2
        mask = np.zeros_like(self.footprint)
        mask[y : y + height, x : x + width] = True
        return mask & self.footprint


Recipe = Callable[[np.random.Generator, _Part, Layers], None]
_RECIPES: dict[str, Recipe] = {}


def _recipe(name: str) -> Callable[[Recipe], Recipe]:
    """Register the decorated function as the material recipe of component class `name`."""

    def register(recipe: Recipe) -> Recipe:
        if name not in COMPONENT_CLASSES or name in _RECIPES:
            raise ValueError(f"{name!r} is not a component class or already has a recipe")
        _RECIPES[name] = recipe
        return recipe

    return register


def _add(layers: Layers, material: str, where: np.ndarray, thickness: float) -> None:
    shape = where.shape
    layers.setdefault(material, np.zeros(shape, dtype=np.float64))
    layers[material] += where * thickness


def _leads(rng: np.random.Generator, part: _Part, layers: Layers) -> None:
    """Tinned copper leads and pins: the grey metal the layout drew."""
    _add(layers, "copper", part.metal, float(rng.uniform(0.3, 0.6)))
    _add(layers, "solder", part.metal, float(rng.uniform(0.02, 0.08)))


@_recipe("capacitor")
def _capacitor(rng: np.random.Generator, part: _Part, layers: Layers) -> None:
    _leads(rng, part, layers)
    if rng.random() < 0.3:
        # Tantalum capacitors share the class: a sintered tantalum slug in an epoxy shell.
        _add(layers, "epoxy", part.footprint, float(rng.uniform(1.5, 2.5)))
        _add(layers, "tantalum", part.centre(0.55), float(rng.uniform(0.4, 1.0)))
    else:
        _add(layers, "epoxy", part.footprint, float(rng.uniform(0.5, 1.0)))  # dip coating
        _add(layers, "barium_titanate", part.centre(0.8), float(rng.uniform(0.2, 0.5)))


@_recipe("electrolytic_capacitor")
def _electrolytic(rng: np.random.Generator, part: _Part, layers: Layers) -> None:
    _add(layers, "aluminium", part.footprint, float(rng.uniform(0.6, 2.0)))  # can walls + rolled foil
    _add(layers, "water", part.footprint, float(rng.uniform(4.0, 10.0)))
    _add(layers, "copper", part.centre(0.35) & ~part.centre(0.2), float(rng.uniform(0.2, 0.4)))


@_recipe("transistor")
def _transistor(rng: np.random.Generator, part: _Part, layers: Layers) -> None:
    _leads(rng, part, layers)
    _add(layers, "epoxy", part.footprint, float(rng.uniform(1.5, 3.0)))
    _add(layers, "copper", part.centre(0.5), float(rng.uniform(0.3, 1.2)))  # lead frame / heat tab
    _add(layers, "silicon", part.centre(0.2), 0.3)


@_recipe("diode")
def _diode(rng: np.random.Generator, part: _Part, layers: Layers) -> None:
    _leads(rng, part, layers)
    _add(layers, "epoxy", part.footprint, float(rng.uniform(1.0, 2.5)))
    _add(layers, "copper", part.centre(0.35), float(rng.uniform(0.5, 1.0)))  # slugs around the die
    _add(layers, "silicon", part.centre(0.15), 0.25)


@_recipe("resistor")
def _resistor(rng: np.random.Generator, part: _Part, layers: Layers) -> None:
    _leads(rng, part, layers)
    _add(layers, "alumina", part.footprint & ~part.metal, float(rng.uniform(1.0, 2.5)))
    _add(layers, "epoxy", part.footprint, 0.2)  # lacquer


@_recipe("ic")
def _ic(rng: np.random.Generator, part: _Part, layers: Layers) -> None:
    _leads(rng, part, layers)
    _add(layers, "epoxy", part.footprint, float(rng.uniform(1.5, 3.5)))
    _add(layers, "copper", part.centre(0.45), 0.2)  # die pad of the lead frame
    die = part.centre(0.28)
    _add(layers, "silicon", die, float(rng.uniform(0.25, 0.5)))
    # Gold bond wires (25 um) fan out from the die to the pins; 5 um is their average over a pixel.
    wires = Image.new("L", part.footprint.shape[::-1], 0)
    draw = ImageDraw.Draw(wires)
    left, top, right, bottom = part.rect
    cx, cy = (left + right) / 2, (top + bottom) / 2
    for angle in np.linspace(0, 2 * math.pi, int(rng.integers(8, 24)), endpoint=False):
        reach = 0.42 * min(right - left, bottom - top)
        draw.line([(cx, cy), (cx + reach * math.cos(angle), cy + reach * math.sin(angle))], fill=255)
    _add(layers, "gold", (np.asarray(wires) > 0) & part.footprint & ~die, 0.005)


@_recipe("transformer")
def _transformer(rng: np.random.Generator, part: _Part, layers: Layers) -> None:
    _add(layers, "iron", part.footprint, float(rng.uniform(1.5, 4.0)))  # laminated core, air gaps averaged
    _add(layers, "copper", part.centre(0.6), float(rng.uniform(1.0, 3.0)))  # winding
    _add(layers, "epoxy", part.footprint, 1.0)  # bobbin and tape


@_recipe("coil")
def _coil(rng: np.random.Generator, part: _Part, layers: Layers) -> None:
    _add(layers, "ferrite", part.footprint, float(rng.uniform(1.0, 3.0)))
    _add(layers, "copper", part.footprint & ~part.centre(0.3), float(rng.uniform(0.3, 1.0)))


XRAY_RECIPES: Mapping[str, Recipe] = MappingProxyType(_RECIPES)
"""Component class -> material recipe; one per class of `synth.COMPONENT_CLASSES`."""


def beer_lambert(layers: Mapping[str, np.ndarray]) -> np.ndarray:
    """Transmission [2, H, W] (high, low) through the given material thicknesses (mm).

    Raises:
        ValueError: no layers, or a material missing from `MATERIALS`.
    """
    if not layers:
        raise ValueError("no material layers given")
    unknown = sorted(set(layers) - set(MATERIALS))
    if unknown:
        raise ValueError(f"unknown materials {unknown}; choose from {sorted(MATERIALS)}")
    shape = np.broadcast_shapes(*(np.shape(t) for t in layers.values()))
    attenuation = np.zeros((2, *shape), dtype=np.float64)  # [2, H, W]
    for material, thickness in layers.items():
        mu = MATERIALS[material]
        for index, energy in enumerate(ENERGIES):
            attenuation[index] += getattr(mu, energy) * np.asarray(thickness, dtype=np.float64)
    return np.exp(-attenuation)


def _parts(rng: np.random.Generator, side: int, count: int | None) -> tuple[list[_Part], list[Box]]:
    """Component outlines and boxes of one board side, from `synth.draw_board` on a key colour."""
    drawing, boxes = draw_board(rng, side, count=count, background=_KEY)
    pixels = np.asarray(drawing, dtype=np.int32)  # [H, W, 3]
    foreground = np.abs(pixels - np.array(_KEY)).sum(axis=2) > 60  # [H, W]
    grey_bright = (pixels.max(axis=2) - pixels.min(axis=2) < 40) & (pixels.max(axis=2) > 140)
    # Later boxes were pasted on top, so they own the pixels where boxes overlap.
    owner = np.full((side, side), -1, dtype=np.int64)
    rects = []
    for index, box in enumerate(boxes):
        left, top, right, bottom = (round(v) for v in box.to_pixels(side, side))
        rects.append((left, top, right, bottom))
        window = owner[top:bottom, left:right]
        window[foreground[top:bottom, left:right]] = index
    parts = [
        _Part(footprint=owner == index, metal=(owner == index) & grey_bright, rect=rect)
        for index, rect in enumerate(rects)
    ]
    return parts, boxes


def _substrate(rng: np.random.Generator, side: int, layers: Layers) -> None:
    """FR4 with copper traces, an occasional ground plane, and solder joints on pads."""
    board = np.ones((side, side), dtype=bool)
    _add(layers, "fr4", board, 1.6)
    if rng.random() < 0.3:
        _add(layers, "copper", board, 0.035)
    traces = Image.new("L", (side, side), 0)
    pads = Image.new("L", (side, side), 0)
    draw_traces, draw_pads = ImageDraw.Draw(traces), ImageDraw.Draw(pads)
    for _ in range(int(rng.integers(10, 40))):
        x, y = (float(v) for v in rng.uniform(0, side, size=2))
        for _ in range(int(rng.integers(1, 4))):  # a few straight or 45-degree runs
            angle = math.pi / 4 * int(rng.integers(8))
            length = float(rng.uniform(0.05, 0.3)) * side
            end = (x + length * math.cos(angle), y + length * math.sin(angle))
            draw_traces.line([(x, y), end], fill=255, width=int(rng.integers(1, 3)))
            x, y = end
        radius = float(rng.uniform(0.8, 2.0))
        draw_pads.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    _add(layers, "copper", np.asarray(traces) > 0, 0.035 * int(rng.integers(1, 3)))
    _add(layers, "solder", np.asarray(pads) > 0, float(rng.uniform(0.1, 0.4)))


def render_xray_board(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, list[Box]]:
    """Render one synthetic double-sided board as a noisy dual-energy scan.

    Args:
        rng: source of every random choice.
        size: output width and height in pixels (the board fills 78-92 % of it; the rest is air).

    Returns:
        uint16 detector values [2, size, size] (high, low), and the boxes of front and back
        components in the full image's coordinates.
    """
    if size < 48:
        raise ValueError(f"size must be at least 48 pixels, got {size}")
    side = round(size * float(rng.uniform(0.78, 0.92)))
    x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    layers: Layers = {}
    _substrate(rng, side, layers)
    front, front_boxes = _parts(rng, side, None)
    back, back_boxes = _parts(rng, side, int(rng.integers(0, 5)))
    for part, box in zip([*front, *back], [*front_boxes, *back_boxes], strict=True):
        _RECIPES[box.class_name](rng, part, layers)
    canvas = {name: np.zeros((size, size)) for name in layers}
    for name, thickness in layers.items():
        canvas[name][y0 : y0 + side, x0 : x0 + side] = thickness
    transmission = beer_lambert(canvas)  # [2, H, W]
    scale = side / size
    boxes = [
        Box(b.class_id, (x0 + b.cx * side) / size, (y0 + b.cy * side) / size, b.w * scale, b.h * scale)
        for b in [*front_boxes, *back_boxes]
    ]
    return _detect(rng, transmission), boxes


def _detect(rng: np.random.Generator, transmission: np.ndarray) -> np.ndarray:
    """Photon counting with Poisson noise, scaled to 16-bit detector values with air near 55000."""
    # The low-energy channel sees fewer photons after the tube filter, so it is noisier.
    photons = np.array([rng.uniform(5000, 8000), rng.uniform(2500, 4000)]).reshape(2, 1, 1)
    air_level = rng.uniform(50000, 58000, size=2).reshape(2, 1, 1)
    counts = rng.poisson(photons * transmission)  # [2, H, W]
    readout = rng.normal(0.0, 2.0, size=transmission.shape)  # electronics noise, a few LSB
    values = counts * (air_level / photons) + readout
    return np.clip(np.round(values), 0, 65535).astype(np.uint16)


def write_xray_file(path: Path, raw: np.ndarray) -> Path:
    """Write [2, H, W] uint16 values as `.npy` or as a two-page 16-bit `.tif` (by the suffix)."""
    if raw.dtype != np.uint16 or raw.ndim != 3 or raw.shape[0] != 2:
        raise ValueError(f"raw must be uint16 [2, H, W], got {raw.dtype} {list(raw.shape)}")
    if path.suffix == ".npy":
        np.save(path, raw, allow_pickle=False)
    elif path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, raw, photometric="minisblack", compression="zlib")
    else:
        raise ValueError(f"{path}: write .npy or .tif")
    return path


def write_synthetic_xray_boards(
    out_dir: Path | str,
    n_boards: int,
    seed: int = 0,
    size: int = 256,
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    image_format: Literal["tif", "npy"] = "tif",
) -> Path:
    """Write `n_boards` synthetic dual-energy scans as a YOLO detection data set.

    Layout: `out_dir/{train,valid,test}/{images,labels}/xray_NNNNN.{tif,txt}` and `data.yaml`
    (written last; it adds `modality: xray_dual_energy` and `channels` to the usual keys). Board
    `i` depends only on `seed` and `i`. Two-page 16-bit TIFFs are listed by the YOLO reader as
    they are; `.npy` files are not image files to it (see `data.images.IMAGE_EXTENSIONS`).

    Args:
        out_dir: folder to write into; created if missing.
        n_boards: number of boards.
        seed: fixes every scan, label and split assignment.
        size: image width and height in pixels.
        splits: fractions of boards in train, valid and test.
        image_format: "tif" (two pages, high then low) or "npy" ([2, H, W] uint16).

    Returns:
        The path of `data.yaml`.
    """
    if n_boards < 0:
        raise ValueError(f"n_boards must be non-negative, got {n_boards}")
    if image_format not in ("tif", "npy"):
        raise ValueError(f"image_format must be 'tif' or 'npy', got {image_format!r}")

    def write_board(rng: np.random.Generator, path: Path) -> list[Box]:
        raw, boxes = render_xray_board(rng, size)
        write_xray_file(path.with_suffix(f".{image_format}"), raw)
        return boxes

    extra = {"modality": "xray_dual_energy", "channels": list(XRAY_CHANNELS)}
    return write_yolo_split_boards(out_dir, n_boards, seed, splits, write_board, "xray", "xray_*.*", extra)
