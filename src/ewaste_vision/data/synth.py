"""Synthetic waste circuit boards: drawn boards with YOLO boxes, and single-component crops.

The offline demo and the fast tests need images that look like the V-PCB photos of the source
paper (eight component classes on green, blue, brown, black or red boards) without any data or
network. Every component is drawn by its own small function in one registry, on a transparent
sprite in a canonical pose; sprites are rotated, given a shadow and pasted onto a board drawn with
traces, vias, empty footprints and silkscreen. Drawing happens at twice the output size and is
halved at the end, which anti-aliases the thin strokes (leads, pins, bands) for free.

Everything is driven by one `numpy.random.Generator`, so a seed fixes every pixel.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ewaste_vision.io.atomic import write_yaml

COMPONENT_CLASSES = (
    "capacitor",
    "electrolytic_capacitor",
    "transistor",
    "diode",
    "resistor",
    "ic",
    "transformer",
    "coil",
)
"""The eight component classes of the V-PCB data set, in label-index order."""

_SUPERSAMPLE = 2
"""Boards and sprites are drawn this many times larger than the output, then reduced."""

_BOARD_MM = 72.0
"""Width of the board region a `size`-pixel image shows, on average (millimetres)."""

_COMPONENTS_PER_BOARD = (2, 10)
"""Fewest and most components a board is drawn with, when the caller names no count."""

_MIN_DRAW_PX_PER_MM = 5.0
"""Smallest scale a drawer is called at; smaller components are drawn at this scale and shrunk."""

RGB = tuple[int, int, int]
Drawer = Callable[[np.random.Generator, float], Image.Image]
"""A component drawer: (rng, pixels per millimetre) -> tight RGBA sprite in its canonical pose."""

_DRAWERS: dict[str, Drawer] = {}
COMPONENT_DRAWERS: Mapping[str, Drawer] = MappingProxyType(_DRAWERS)
"""Read-only view of the registry: component class -> its drawer, filled by `_component_drawer`."""


@dataclass(frozen=True)
class Box:
    """One component's axis-aligned box in YOLO convention (normalised to the image, in [0, 1]).

    Attributes:
        class_id: index into `COMPONENT_CLASSES`.
        cx: box centre, fraction of the image width.
        cy: box centre, fraction of the image height.
        w: box width, fraction of the image width.
        h: box height, fraction of the image height.
    """

    class_id: int
    cx: float
    cy: float
    w: float
    h: float

    @property
    def class_name(self) -> str:
        """The component class this box holds."""
        return COMPONENT_CLASSES[self.class_id]

    def to_yolo_line(self) -> str:
        """The box as one `cls cx cy w h` line of a YOLO label file (6 decimals)."""
        return f"{self.class_id} {self.cx:.6f} {self.cy:.6f} {self.w:.6f} {self.h:.6f}"

    def to_pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The box as (left, top, right, bottom) in pixels of a `width` x `height` image."""
        return (
            (self.cx - self.w / 2) * width,
            (self.cy - self.h / 2) * height,
            (self.cx + self.w / 2) * width,
            (self.cy + self.h / 2) * height,
        )


def _component_drawer(name: str) -> Callable[[Drawer], Drawer]:
    """Register the decorated function as the drawer of component class `name`."""

    def register(drawer: Drawer) -> Drawer:
        if name not in COMPONENT_CLASSES:
            raise ValueError(f"{name!r} is not a component class; choose from {COMPONENT_CLASSES}")
        if name in _DRAWERS:
            raise ValueError(f"a drawer for {name!r} is already registered")
        _DRAWERS[name] = drawer
        return drawer

    return register


# --------------------------------------------------------------------------------------------
# Colour and sprite helpers


def _jitter(rng: np.random.Generator, rgb: RGB, spread: int = 14) -> RGB:
    """`rgb` with a shared brightness shift and a smaller per-channel shift."""
    common = int(rng.integers(-spread, spread + 1))
    r, g, b = (
        int(np.clip(c + common + int(rng.integers(-spread // 2, spread // 2 + 1)), 0, 255)) for c in rgb
    )
    return (r, g, b)


def _shade(rgb: RGB, factor: float) -> RGB:
    r, g, b = (int(np.clip(round(c * factor), 0, 255)) for c in rgb)
    return (r, g, b)


def _pick(rng: np.random.Generator, options: Sequence[RGB], spread: int = 14) -> RGB:
    return _jitter(rng, options[int(rng.integers(len(options)))], spread)


def _canvas(width: float, height: float) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGBA", (max(2, math.ceil(width)), max(2, math.ceil(height))), (0, 0, 0, 0))
    return image, ImageDraw.Draw(image)


def _lead_colour(rng: np.random.Generator) -> RGB:
    # Tinned copper leads: silver, sometimes dulled or yellowed by age on waste boards.
    return _pick(rng, [(190, 190, 184), (168, 166, 155), (196, 184, 150)], 10)


@functools.lru_cache(maxsize=64)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(5, size_px))


def _random_marking(rng: np.random.Generator, length: int) -> str:
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    return "".join(alphabet[int(i)] for i in rng.integers(len(alphabet), size=length))


def _axial_leads(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, y: float, x_left: float, x_right: float, p: float
) -> None:
    """Horizontal leads across the whole sprite width at height `y` (bodies are drawn on top)."""
    width = max(1, round(rng.uniform(0.45, 0.7) * p))
    draw.line([(x_left, y), (x_right, y)], fill=_lead_colour(rng), width=width)


def _cylinder_sheen(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], rgb: RGB) -> None:
    """A lighter stripe along the top of a lying cylinder, so it reads as round, not flat."""
    x0, y0, x1, y1 = box
    height = y1 - y0
    draw.rounded_rectangle(
        (x0 + height * 0.3, y0 + height * 0.18, x1 - height * 0.3, y0 + height * 0.36),
        radius=height * 0.09,
        fill=_shade(rgb, 1.25) if max(rgb) > 60 else _shade((60, 60, 62), 1.0),
    )


# --------------------------------------------------------------------------------------------
# Component drawers: one per class, canonical pose, sizes in millimetres times `p` (pixels/mm).


@_component_drawer("capacitor")
def _draw_ceramic_capacitor(rng: np.random.Generator, p: float) -> Image.Image:
    """A dipped ceramic disc: tan, orange or blue blob with two leads below."""
    diameter = rng.uniform(3.5, 7.0) * p
    height = diameter * rng.uniform(0.78, 0.95)
    lead_length = rng.uniform(1.2, 3.0) * p
    image, draw = _canvas(diameter, height + lead_length)
    body = _pick(rng, [(200, 122, 50), (214, 152, 72), (206, 92, 36), (182, 140, 82), (56, 96, 172)])
    centre = diameter / 2
    spacing = diameter * rng.uniform(0.3, 0.55)
    lead_width = max(1, round(0.5 * p))
    lead = _lead_colour(rng)
    for x in (centre - spacing / 2, centre + spacing / 2):
        draw.line([(x, height * 0.6), (x, height + lead_length)], fill=lead, width=lead_width)
    # The dip coating runs down the leads a little: a tapered neck under the disc.
    neck = height + lead_length * rng.uniform(0.15, 0.4)
    draw.polygon(
        [
            (centre - diameter * 0.3, height * 0.7),
            (centre + diameter * 0.3, height * 0.7),
            (centre + spacing / 2 + lead_width, neck),
            (centre - spacing / 2 - lead_width, neck),
        ],
        fill=body,
    )
    draw.ellipse(
        (0, 0, diameter - 1, height - 1), fill=body, outline=_shade(body, 0.75), width=max(1, round(p * 0.2))
    )
    draw.ellipse(
        (diameter * 0.2, height * 0.15, diameter * 0.5, height * 0.4), fill=_shade(body, 1.18)
    )  # glaze highlight
    ink = _shade(body, 0.45)
    for row in range(int(rng.integers(1, 3))):
        y = height * (0.45 + 0.18 * row)
        draw.line(
            [(diameter * 0.3, y), (diameter * rng.uniform(0.55, 0.72), y)],
            fill=ink,
            width=max(1, round(p * 0.3)),
        )
    return image


@_component_drawer("electrolytic_capacitor")
def _draw_electrolytic_capacitor(rng: np.random.Generator, p: float) -> Image.Image:
    """An aluminium can: seen from the top (vent cross, polarity sector) or lying on its side."""
    sleeve = _pick(rng, [(34, 62, 150), (26, 26, 30), (30, 92, 54), (70, 36, 90), (24, 80, 130)])
    stripe = _pick(rng, [(200, 200, 205), (150, 150, 160), (212, 184, 100)], 10)
    if rng.random() < 0.7:
        diameter = rng.uniform(5.0, 13.0) * p
        image, draw = _canvas(diameter, diameter)
        draw.ellipse((0, 0, diameter - 1, diameter - 1), fill=sleeve)
        start = float(rng.uniform(0, 360))
        draw.pieslice(
            (0, 0, diameter - 1, diameter - 1), start, start + float(rng.uniform(45, 80)), fill=stripe
        )
        rim = diameter * rng.uniform(0.08, 0.13)
        can = _pick(rng, [(178, 180, 184), (160, 162, 168), (196, 196, 198)], 10)
        draw.ellipse((rim, rim, diameter - rim, diameter - rim), fill=can)
        draw.ellipse(
            (rim * 1.8, rim * 1.8, diameter * 0.62, diameter * 0.62), fill=_shade(can, 1.08)
        )  # curved-lid reflection
        vent = _shade(can, 0.6)
        centre = diameter / 2
        arm = (diameter / 2 - rim) * 0.8
        width = max(1, round(diameter * 0.045))
        arms = 3 if rng.random() < 0.25 else 4
        for k in range(arms):
            angle = math.radians(90 + k * 360 / arms)
            draw.line(
                [(centre, centre), (centre + arm * math.cos(angle), centre - arm * math.sin(angle))],
                fill=vent,
                width=width,
            )
        return image
    length = rng.uniform(8.0, 20.0) * p
    diameter = rng.uniform(5.0, 10.0) * p
    lead_length = rng.uniform(1.5, 4.0) * p
    image, draw = _canvas(length + lead_length, diameter)
    lead = _lead_colour(rng)
    for y in (diameter * 0.3, diameter * 0.7):
        draw.line([(0, y), (lead_length + p, y)], fill=lead, width=max(1, round(0.5 * p)))
    body = (lead_length, 0, lead_length + length - 1, diameter - 1)
    draw.rounded_rectangle(body, radius=diameter * 0.15, fill=sleeve)
    _cylinder_sheen(draw, body, sleeve)
    draw.rectangle((lead_length, diameter * 0.7, lead_length + length * 0.96, diameter * 0.9), fill=stripe)
    for k in range(int(length / (3 * p))):
        x = lead_length + (k + 0.7) * 3 * p
        draw.line(
            [(x, diameter * 0.8), (x + 1.2 * p, diameter * 0.8)], fill=sleeve, width=max(1, round(0.3 * p))
        )
    end = lead_length + length
    draw.rectangle((end - length * 0.05, diameter * 0.12, end - 1, diameter * 0.88), fill=(176, 178, 182))
    draw.line(
        [(lead_length + length * 0.12, 0), (lead_length + length * 0.12, diameter - 1)],
        fill=_shade(sleeve, 0.6),
        width=max(1, round(0.3 * p)),
    )  # crimp ring
    return image


@_component_drawer("transistor")
def _draw_transistor(rng: np.random.Generator, p: float) -> Image.Image:
    """A black TO-92 'D' with three legs, or a TO-220 body with a drilled metal tab."""
    black = _pick(rng, [(26, 26, 28), (40, 40, 44)], 8)
    lead = _lead_colour(rng)
    leg_length = rng.uniform(1.5, 4.0) * p
    if rng.random() < 0.6:
        width = rng.uniform(4.4, 5.2) * p
        depth = width * rng.uniform(0.7, 0.85)
        image, draw = _canvas(width, depth + leg_length)
        for k in (-1, 0, 1):
            x = width / 2 + k * 1.27 * p
            draw.line([(x, depth * 0.8), (x, depth + leg_length)], fill=lead, width=max(1, round(0.45 * p)))
        draw.pieslice((0, 0, width - 1, 2 * depth - 1), 180, 360, fill=black)
        draw.line(
            [(0, depth - 1), (width - 1, depth - 1)], fill=_shade(black, 2.2), width=max(1, round(0.4 * p))
        )
        ink = (150, 150, 150)
        draw.line(
            [(width * 0.25, depth * 0.6), (width * 0.75, depth * 0.6)], fill=ink, width=max(1, round(0.3 * p))
        )
        return image
    width = rng.uniform(9.8, 10.6) * p
    body_height = rng.uniform(8.5, 9.5) * p
    tab_height = rng.uniform(5.5, 6.8) * p
    image, draw = _canvas(width, tab_height + body_height + leg_length)
    tab = _pick(rng, [(176, 176, 180), (150, 150, 156)], 10)
    draw.rectangle((width * 0.02, 0, width * 0.98, tab_height + p), fill=tab)
    hole = 3.6 * p / 2
    centre = (width / 2, tab_height * 0.5)
    # The hole is left transparent so the board shows through it, as in a photo.
    draw.ellipse((centre[0] - hole, centre[1] - hole, centre[0] + hole, centre[1] + hole), fill=(0, 0, 0, 0))
    top = tab_height
    for k in (-1, 0, 1):
        x = width / 2 + k * 2.54 * p
        draw.line(
            [(x, top + body_height - p), (x, top + body_height + leg_length)],
            fill=lead,
            width=max(1, round(0.8 * p)),
        )
    draw.rectangle((0, top, width - 1, top + body_height - 1), fill=black)
    font = _font(round(1.6 * p))
    draw.text(
        (width * 0.12, top + body_height * 0.3), _random_marking(rng, 5), fill=(140, 140, 140), font=font
    )
    return image


@_component_drawer("diode")
def _draw_diode(rng: np.random.Generator, p: float) -> Image.Image:
    """An axial diode: orange glass or black epoxy cylinder with a cathode band at one end."""
    if rng.random() < 0.35:
        length, diameter = rng.uniform(3.2, 4.2) * p, rng.uniform(1.6, 2.1) * p
        body = _pick(rng, [(204, 92, 48), (214, 120, 60), (180, 60, 44)])
        band = (22, 22, 24)
    else:
        length, diameter = rng.uniform(4.5, 9.0) * p, rng.uniform(2.5, 5.0) * p
        body = _pick(rng, [(28, 28, 30), (44, 40, 40)], 8)
        band = _pick(rng, [(186, 186, 190), (150, 150, 156)], 10)
    leads = rng.uniform(2.0, 5.0, size=2) * p
    image, draw = _canvas(leads[0] + length + leads[1], diameter)
    _axial_leads(draw, rng, diameter / 2, 0, image.width, p)
    box = (leads[0], 0, leads[0] + length - 1, diameter - 1)
    draw.rounded_rectangle(box, radius=diameter * 0.3, fill=body)
    _cylinder_sheen(draw, box, body)
    band_x = leads[0] + length * rng.uniform(0.72, 0.8)
    draw.rectangle((band_x, 0, band_x + length * 0.12, diameter - 1), fill=band)
    return image


_RESISTOR_BANDS: tuple[RGB, ...] = (
    (20, 20, 20),
    (120, 64, 30),
    (200, 30, 30),
    (236, 120, 20),
    (236, 210, 40),
    (40, 150, 60),
    (40, 80, 200),
    (140, 60, 170),
    (128, 128, 128),
    (240, 240, 240),
)
"""Colour-code digits 0-9 (black ... white)."""


@_component_drawer("resistor")
def _draw_resistor(rng: np.random.Generator, p: float) -> Image.Image:
    """An axial resistor: dog-bone body (beige carbon or blue metal film) with colour bands."""
    length = rng.uniform(5.5, 10.0) * p
    diameter = length * rng.uniform(0.33, 0.42)
    kind = rng.random()
    if kind < 0.45:
        body, bands = _pick(rng, [(214, 186, 136), (200, 170, 120)]), 4
    elif kind < 0.85:
        body, bands = _pick(rng, [(80, 142, 202), (64, 120, 190)]), 5
    else:
        body, bands = _pick(rng, [(150, 190, 152), (170, 160, 120)]), 4
    leads = rng.uniform(2.0, 5.0, size=2) * p
    image, draw = _canvas(leads[0] + length + leads[1], diameter)
    _axial_leads(draw, rng, diameter / 2, 0, image.width, p)
    x0 = leads[0]
    draw.rounded_rectangle(
        (x0, diameter * 0.12, x0 + length - 1, diameter * 0.88), radius=diameter * 0.3, fill=body
    )
    for end in (x0, x0 + length * 0.76):
        draw.rounded_rectangle(
            (end, 0, end + length * 0.24 - 1, diameter - 1), radius=diameter * 0.4, fill=body
        )
    _cylinder_sheen(draw, (x0, 0, x0 + length - 1, diameter - 1), body)
    band_width = length * 0.07
    positions = np.linspace(0.16, 0.6, bands - 1)
    colours = [_RESISTOR_BANDS[int(i)] for i in rng.integers(len(_RESISTOR_BANDS), size=bands - 1)]
    tolerance = [(196, 160, 60), (120, 64, 30), (180, 180, 186)][int(rng.integers(3))]
    for position, colour in zip([*positions, 0.84], [*colours, tolerance], strict=True):
        x = x0 + length * float(position)
        top = 0.0 if position < 0.24 or position > 0.76 else diameter * 0.12
        draw.rectangle((x, top, x + band_width, diameter - 1 - top), fill=colour)
    return image


@_component_drawer("ic")
def _draw_ic(rng: np.random.Generator, p: float) -> Image.Image:
    """A black package with a pin-1 mark: DIP or SOIC (pins on two sides) or QFP (four sides)."""
    style = rng.random()
    if style < 0.5:
        per_side = int(rng.choice([4, 7, 8, 9, 10, 12, 14, 20]))
        pitch, body_width, pin_width = 2.54, 15.2 if per_side >= 14 and rng.random() < 0.5 else 6.4, 0.6
    elif style < 0.75:
        per_side = int(rng.choice([4, 7, 8, 10, 14]))
        pitch, body_width, pin_width = 1.27, float(rng.uniform(3.9, 7.5)), 0.45
    else:
        per_side = int(rng.integers(8, 26))
        pitch, pin_width = float(rng.uniform(0.5, 0.8)), 0.3
        body_width = per_side * pitch + 1.5
    body_length = per_side * pitch + rng.uniform(0.6, 1.6)
    four_sides = style >= 0.75
    pin_out = rng.uniform(0.8, 1.4) * p
    length_px, width_px = body_length * p, body_width * p
    margin_x = pin_out if four_sides else 0.0
    image, draw = _canvas(length_px + 2 * margin_x, width_px + 2 * pin_out)
    pin = _pick(rng, [(196, 196, 198), (176, 176, 170), (206, 196, 160)], 10)
    half = max(0.5, pin_width * p / 2)
    first = (body_length - (per_side - 1) * pitch) / 2
    for k in range(per_side):
        x = margin_x + (first + k * pitch) * p
        draw.rectangle((x - half, 0, x + half, image.height - 1), fill=pin)
        if four_sides:
            y = pin_out + (first + k * pitch) * p * body_width / body_length
            draw.rectangle((0, y - half, image.width - 1, y + half), fill=pin)
    body = _pick(rng, [(24, 24, 26), (36, 36, 40), (30, 30, 34)], 6)
    left, top = margin_x, pin_out
    draw.rectangle((left, top, left + length_px - 1, top + width_px - 1), fill=body)
    mark = _shade(body, 1.8)
    if not four_sides and rng.random() < 0.7:
        notch = min(width_px * 0.18, 1.2 * p)
        draw.pieslice(
            (left - notch, top + width_px / 2 - notch, left + notch, top + width_px / 2 + notch),
            270,
            90,
            fill=mark,
        )
    dot = max(1.0, min(width_px, length_px) * 0.07)
    draw.ellipse(
        (left + dot * 1.2, top + width_px - dot * 3.2, left + dot * 3.2, top + width_px - dot * 1.2),
        fill=mark,
    )
    font = _font(round(min(width_px * 0.22, 1.8 * p)))
    ink = _pick(rng, [(150, 150, 150), (190, 190, 186)], 10)
    rows = 1 if width_px < 5 * p else int(rng.integers(1, 4))
    for row in range(rows):
        text = _random_marking(rng, max(2, min(10, int(body_length / 1.6))))
        y = top + width_px * (0.2 + 0.25 * row)
        draw.text((left + length_px * 0.18, y), text, fill=ink, font=font)
    return image


@_component_drawer("transformer")
def _draw_transformer(rng: np.random.Generator, p: float) -> Image.Image:
    """A big block: laminated iron or ferrite core at both ends, taped winding in the middle."""
    width = rng.uniform(14.0, 28.0) * p
    height = width * rng.uniform(0.7, 0.95)
    laminated = rng.random() < 0.65
    image, draw = _canvas(width, height)
    core = _pick(rng, [(98, 98, 104), (120, 118, 112)] if laminated else [(52, 52, 56), (64, 62, 60)], 10)
    inset = height * 0.1
    draw.rectangle((0, inset, width - 1, height - 1 - inset), fill=core)
    if laminated:
        # Laminations seen edge-on: fine parallel lines, each a steel sheet of the stack.
        step = max(2.0, 0.5 * p)
        line = _shade(core, 0.7)
        for y in np.arange(inset + step, height - inset, step):
            draw.line([(0, float(y)), (width - 1, float(y))], fill=line, width=1)
    else:
        draw.line(
            [(width / 2, inset), (width / 2, height - inset)],
            fill=_shade(core, 0.5),
            width=max(1, round(0.4 * p)),
        )
    tape = _pick(rng, [(230, 196, 64), (236, 208, 96), (214, 176, 60), (226, 220, 200)], 10)
    span = width * rng.uniform(0.42, 0.58)
    x0 = (width - span) / 2
    draw.rounded_rectangle((x0, 0, x0 + span, height - 1), radius=min(span, height) * 0.08, fill=tape)
    wrap = _shade(tape, 0.85)
    for k in range(1, int(rng.integers(3, 7))):
        x = x0 + span * k / 7 + rng.uniform(-1, 1) * p
        draw.line([(x, 0), (x + rng.uniform(-1, 1) * p, height - 1)], fill=wrap, width=max(1, round(0.3 * p)))
    if rng.random() < 0.6:
        for colour in [(190, 40, 36), (30, 30, 30), (40, 80, 190)][: int(rng.integers(1, 4))]:
            y = float(rng.uniform(0.25, 0.75)) * height
            draw.line(
                [(x0 + span * 0.3, y), (x0 + span * 0.7, y + rng.uniform(-2, 2) * p)],
                fill=colour,
                width=max(1, round(0.7 * p)),
            )
    if not laminated:
        bobbin = _pick(rng, [(30, 30, 30), (226, 226, 220)], 8)
        draw.rectangle((x0 - p, 0, x0, height - 1), fill=bobbin)
        draw.rectangle((x0 + span, 0, x0 + span + p, height - 1), fill=bobbin)
    return image


@_component_drawer("coil")
def _draw_coil(rng: np.random.Generator, p: float) -> Image.Image:
    """A toroid ring wrapped in copper strokes, or a drum inductor with a copper (or green) winding."""
    copper = [(184, 115, 51), (206, 142, 72), (150, 88, 40)]
    if rng.random() < 0.55:
        diameter = rng.uniform(8.0, 22.0) * p
        inner = diameter * rng.uniform(0.38, 0.55)
        lead_length = rng.uniform(1.5, 3.5) * p
        image, draw = _canvas(diameter, diameter + lead_length)
        wire = max(1, round(rng.uniform(0.4, 1.0) * p))
        for x in (diameter * 0.4, diameter * 0.6):
            draw.line(
                [(x, diameter * 0.8), (x, diameter + lead_length)], fill=_jitter(rng, copper[0]), width=wire
            )
        core = _pick(rng, [(206, 194, 92), (80, 140, 82), (122, 122, 128), (34, 34, 36)])
        draw.ellipse((0, 0, diameter - 1, diameter - 1), fill=core)
        centre, r_out, r_in = diameter / 2, diameter / 2 - 1, inner / 2
        turns = int(rng.integers(14, 44))
        for k in range(turns):
            angle = 2 * math.pi * k / turns + rng.uniform(-0.03, 0.03)
            c, s = math.cos(angle), math.sin(angle)
            draw.line(
                [
                    (centre + r_in * 0.9 * c, centre + r_in * 0.9 * s),
                    (centre + r_out * c, centre + r_out * s),
                ],
                fill=_jitter(rng, copper[k % 3], 10),
                width=wire,
            )
        draw.ellipse((centre - r_in, centre - r_in, centre + r_in, centre + r_in), fill=(0, 0, 0, 0))
        return image
    width = rng.uniform(6.0, 13.0) * p
    height = width * rng.uniform(0.8, 1.2)
    leg_length = rng.uniform(1.5, 3.5) * p
    image, draw = _canvas(width, height + leg_length)
    lead = _lead_colour(rng)
    for x in (width * 0.3, width * 0.7):
        draw.line([(x, height * 0.8), (x, height + leg_length)], fill=lead, width=max(1, round(0.6 * p)))
    flange = _pick(rng, [(46, 46, 50), (70, 66, 62)], 8)
    thick = height * 0.15
    winding = (width * 0.08, thick, width * 0.92, height - thick)
    draw.rectangle(winding, fill=copper[0])
    step = max(2.0, 0.35 * p)
    for k, y in enumerate(np.arange(thick, height - thick, step)):
        draw.line(
            [(winding[0], float(y)), (winding[2], float(y))],
            fill=copper[1 + k % 2],
            width=max(1, round(step / 2)),
        )
    if rng.random() < 0.45:
        sleeve = _pick(rng, [(40, 124, 64), (30, 100, 56)])
        draw.rectangle((winding[0], height * 0.3, winding[2], height * 0.7), fill=sleeve)
    draw.rounded_rectangle((0, 0, width - 1, thick), radius=thick * 0.3, fill=flange)
    draw.rounded_rectangle((0, height - thick, width - 1, height - 1), radius=thick * 0.3, fill=flange)
    return image


def draw_component(class_name: str, rng: np.random.Generator, px_per_mm: float = 6.4) -> Image.Image:
    """Draw one component of `class_name` as an RGBA sprite in its canonical (unrotated) pose.

    Args:
        class_name: one of `COMPONENT_CLASSES`.
        rng: source of every random choice (shape variant, size, colours).
        px_per_mm: drawing scale; components keep roughly real proportions to each other.

    Returns:
        An RGBA image cropped to the drawn pixels; alpha is 0 outside the component.
    """
    if class_name not in _DRAWERS:
        raise ValueError(f"unknown component class {class_name!r}; choose from {COMPONENT_CLASSES}")
    if px_per_mm <= 0:
        raise ValueError(f"px_per_mm must be positive, got {px_per_mm}")
    # Below a few pixels per millimetre the thin parts (bands, pins, rims) round to nothing and
    # shapes invert; draw at a workable scale and shrink instead.
    drawn_at = max(px_per_mm, _MIN_DRAW_PX_PER_MM)
    sprite = _crop_to_alpha(_DRAWERS[class_name](rng, drawn_at))
    if drawn_at > px_per_mm:
        factor = px_per_mm / drawn_at
        size = (max(2, round(sprite.width * factor)), max(2, round(sprite.height * factor)))
        sprite = _crop_to_alpha(sprite.convert("RGBa").resize(size, Image.Resampling.BOX).convert("RGBA"))
    return sprite


def _crop_to_alpha(sprite: Image.Image) -> Image.Image:
    # Faint anti-aliased fringes are not part of the component; the box hugs the solid pixels.
    bbox = sprite.getchannel("A").point(lambda a: 255 if a > 96 else 0).getbbox()
    return sprite.crop(bbox) if bbox else sprite


def _pose(rng: np.random.Generator, sprite: Image.Image) -> Image.Image:
    """Rotate by a multiple of 90 degrees, and sometimes by a few degrees more."""
    quarter = int(rng.integers(4))
    if quarter:
        turns = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
        sprite = sprite.transpose(turns[quarter - 1])
    if rng.random() < 0.35:
        # Premultiplied alpha keeps the transparent black from bleeding into the edges.
        tilt = float(rng.uniform(-15, 15))
        sprite = (
            sprite.convert("RGBa")
            .rotate(tilt, resample=Image.Resampling.BICUBIC, expand=True)
            .convert("RGBA")
        )
        sprite = _crop_to_alpha(sprite)
    return sprite


# --------------------------------------------------------------------------------------------
# Boards


_SUBSTRATES: tuple[tuple[RGB, float], ...] = (
    ((28, 96, 52), 0.42),  # green solder mask
    ((26, 58, 128), 0.14),  # blue
    ((158, 112, 62), 0.2),  # brown FR-2 paper phenolic, often unmasked
    ((30, 30, 34), 0.12),  # black
    ((140, 30, 32), 0.12),  # red
)


@dataclass(frozen=True)
class _BoardLook:
    substrate: RGB
    trace: RGB
    pad: RGB
    silk: RGB


def _board_look(rng: np.random.Generator) -> _BoardLook:
    weights = np.array([w for _, w in _SUBSTRATES])
    base, _ = _SUBSTRATES[int(rng.choice(len(_SUBSTRATES), p=weights / weights.sum()))]
    substrate = _jitter(rng, base, 16)
    is_paper = base == _SUBSTRATES[2][0]
    if is_paper:
        trace = _pick(rng, [(184, 116, 60), (120, 84, 46)], 10)
    elif max(substrate) < 50:
        trace = (
            _shade(substrate, 1.0 + rng.uniform(0.5, 0.9))
            if rng.random() < 0.5
            else _jitter(rng, (55, 55, 60))
        )
    else:
        # Copper under the mask reads as a lighter shade of the mask colour.
        trace = _shade(substrate, rng.uniform(1.12, 1.32))
    pad = _pick(rng, [(194, 194, 188), (212, 178, 96), (180, 120, 70)], 10)
    silk = _pick(rng, [(236, 236, 230), (232, 226, 180)], 8)
    if is_paper and rng.random() < 0.4:
        silk = _jitter(rng, (40, 38, 36), 8)
    return _BoardLook(substrate, trace, pad, silk)


def _draw_substrate(
    rng: np.random.Generator,
    width: int,
    height: int,
    p: float,
    area: tuple[float, float, float, float],
    look: _BoardLook,
) -> Image.Image:
    """A bare board: traces, vias, empty footprints, silkscreen and wear, inside `area`."""
    image = Image.new("RGB", (width, height), look.substrate)
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = area
    square_mm = (x1 - x0) * (y1 - y0) / (p * p)
    per_board = square_mm / (_BOARD_MM * _BOARD_MM)

    def count(mean_per_board: float, minimum: float) -> int:
        return int(rng.poisson(max(minimum, mean_per_board * per_board)))

    def point() -> tuple[float, float]:
        return float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))

    for _ in range(count(24, 2)):
        x, y = point()
        points = [(x, y)]
        horizontal = rng.random() < 0.5
        trace_width = max(1, round(rng.uniform(0.25, 1.0) * p))
        for _ in range(int(rng.integers(2, 6))):
            step = float(rng.uniform(4, 35) * p) * (1 if rng.random() < 0.5 else -1)
            if rng.random() < 0.2:
                x, y = (
                    x + step / math.sqrt(2),
                    y + abs(step) / math.sqrt(2) * (1 if rng.random() < 0.5 else -1),
                )
            elif horizontal:
                x += step
            else:
                y += step
            x, y = float(np.clip(x, x0, x1)), float(np.clip(y, y0, y1))
            points.append((x, y))
            horizontal = not horizontal
        draw.line(points, fill=look.trace, width=trace_width, joint="curve")
        for end in (points[0], points[-1]):
            r = trace_width * 0.9 + 0.3 * p
            draw.ellipse((end[0] - r, end[1] - r, end[0] + r, end[1] + r), fill=look.pad)
    hole_colour = _shade(look.substrate, 0.35)
    for _ in range(count(45, 1)):
        x, y = point()
        ring, hole = rng.uniform(0.5, 1.0) * p, rng.uniform(0.2, 0.35) * p
        draw.ellipse((x - ring, y - ring, x + ring, y + ring), fill=look.pad)
        draw.ellipse((x - hole, y - hole, x + hole, y + hole), fill=hole_colour)
    # Empty footprints: rows of drilled pads left where parts were pulled or never fitted.
    for _ in range(count(4, 0.5)):
        x, y = point()
        pitch, ring = 2.54 * p, rng.uniform(0.6, 0.9) * p
        vertical = rng.random() < 0.5
        rows = int(rng.integers(1, 3))
        for row in range(rows):
            for k in range(int(rng.integers(2, 12))):
                px = x + (row * 7.6 * p if vertical else k * pitch)
                py = y + (k * pitch if vertical else row * 7.6 * p)
                draw.rectangle((px - ring, py - ring, px + ring, py + ring), fill=look.pad)
                draw.ellipse(
                    (px - ring * 0.4, py - ring * 0.4, px + ring * 0.4, py + ring * 0.4), fill=hole_colour
                )
    silk_width = max(1, round(0.25 * p))
    for _ in range(count(10, 1)):
        x, y = point()
        w, h = rng.uniform(3, 20, size=2) * p
        if rng.random() < 0.12:
            draw.ellipse((x, y, x + w, y + w), outline=look.silk, width=silk_width)
        else:
            draw.rectangle((x, y, x + w, y + h), outline=look.silk, width=silk_width)
    font = _font(round(rng.uniform(1.4, 2.4) * p))
    for _ in range(count(14, 1)):
        label = "RCUQDLTJK"[int(rng.integers(9))] + str(int(rng.integers(1, 120)))
        if rng.random() < 0.15:
            label = ("GND", "+5V", "VCC", "12V", "IN", "OUT")[int(rng.integers(6))]
        draw.text(point(), label, fill=look.silk, font=font)
    # Waste boards are dirty and scuffed: translucent stains and light scratches.
    wear = ImageDraw.Draw(image, "RGBA")
    for _ in range(int(rng.integers(0, 5))):
        x, y = point()
        r = min(rng.uniform(2, 9) * p, 0.2 * (x1 - x0))
        stain = (*_pick(rng, [(90, 70, 40), (200, 200, 190), (40, 36, 30)]), int(rng.integers(15, 45)))
        wear.ellipse((x - r, y - r * rng.uniform(0.4, 1), x + r, y + r), fill=stain)
    for _ in range(int(rng.integers(0, 4))):
        x, y = point()
        dx, dy = rng.uniform(-25, 25, size=2) * p
        wear.line([(x, y), (x + dx, y + dy)], fill=(230, 230, 220, 50), width=1)
    return image


def _paste(
    board: Image.Image, sprite: Image.Image, x: int, y: int, shadow: tuple[float, float] | None
) -> None:
    """Paste `sprite` with its top-left at (x, y), after a soft shadow offset by `shadow` (pixels)."""
    if shadow is not None:
        alpha = sprite.getchannel("A")
        reach = 0.08 * math.sqrt(sprite.width * sprite.height)
        dx, dy = round(shadow[0] * reach), round(shadow[1] * reach)
        blur = max(1.0, reach * 0.6)
        pad = math.ceil(2 * blur)
        mask = Image.new("L", (sprite.width + 2 * pad, sprite.height + 2 * pad), 0)
        mask.paste(alpha, (pad, pad))
        mask = mask.filter(ImageFilter.GaussianBlur(blur)).point(lambda a: a * 55 // 100)
        board.paste((8, 8, 8), (x + dx - pad, y + dy - pad), mask)
    board.paste(sprite, (x, y), sprite)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / max(1, smaller)


def _finish(rng: np.random.Generator, image: Image.Image, blur_chance: float = 0.35) -> Image.Image:
    """Camera and lighting: white balance, a light gradient or spot, focus blur and sensor noise."""
    if rng.random() < blur_chance:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.2))))
    pixels = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    height, width = pixels.shape[:2]
    gain = rng.uniform(0.92, 1.08, size=3).astype(np.float32) * np.float32(rng.uniform(0.82, 1.12))
    angle, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.45)
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)
    light: np.ndarray = 1 + strength * (
        xs[None, :] * math.cos(angle) + ys[:, None] * math.sin(angle)
    )  # (H, W)
    if rng.random() < 0.3:
        cx, cy, spread = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.15, 0.4)
        light = light + rng.uniform(0.1, 0.3) * np.exp(
            -((xs[None, :] - cx) ** 2 + (ys[:, None] - cy) ** 2) / (2 * spread**2)
        )
    pixels = pixels * gain * light[:, :, None]
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(rng.uniform(1.0, 7.0))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def _choose_classes(
    rng: np.random.Generator,
    classes_present: Sequence[str] | None,
    count: int | None,
    count_range: tuple[int, int] = _COMPONENTS_PER_BOARD,
) -> list[str]:
    """Component classes to draw: every class of `classes_present` at least once, plus repeats."""
    total = int(rng.integers(count_range[0], count_range[1] + 1)) if count is None else count
    if classes_present is None:
        if total <= 0:
            return []
        distinct = int(rng.integers(1, min(total, len(COMPONENT_CLASSES)) + 1))
        chosen = [
            COMPONENT_CLASSES[int(i)]
            for i in rng.choice(len(COMPONENT_CLASSES), size=distinct, replace=False)
        ]
    else:
        unknown = sorted(set(classes_present) - set(COMPONENT_CLASSES))
        if unknown:
            raise ValueError(f"unknown component classes {unknown}; choose from {COMPONENT_CLASSES}")
        chosen = list(dict.fromkeys(classes_present))
        if not chosen:
            return []
    # Repeats favour the small parts: a board has many resistors and few transformers.
    weights = np.array([0.05 if name == "transformer" else 1.0 for name in chosen])
    extra = rng.choice(len(chosen), size=max(0, total - len(chosen)), p=weights / weights.sum())
    return chosen + [chosen[int(i)] for i in extra]


def draw_board(
    rng: np.random.Generator,
    size: int = 320,
    classes_present: Sequence[str] | None = None,
    *,
    count: int | None = None,
    background: tuple[int, int, int] | None = None,
    field_mm: float = _BOARD_MM,
    count_range: tuple[int, int] = _COMPONENTS_PER_BOARD,
) -> tuple[Image.Image, list[Box]]:
    """Draw a square synthetic waste circuit board with components and their boxes.

    Args:
        rng: source of every random choice; the same generator state gives the same board.
        size: output width and height in pixels.
        classes_present: component classes to draw, each at least once and nothing else (empty:
            a bare board). None picks a random subset of the eight classes.
        count: number of components to attempt, never fewer than the classes in
            `classes_present`; None draws a number in `count_range`. Parts that do not fit
            without heavy overlap are dropped, except the first of each class in `classes_present`.
        background: a uniform RGB colour instead of a drawn board, with no shadows, lighting or
            noise, so every non-background pixel belongs to a component (for tests and figures).
        field_mm: width of board the image shows, on average, in millimetres: smaller is a
            closer shot with larger components (72: a whole small board; 40: a close-up).
        count_range: fewest and most components attempted when `count` is None (inclusive).

    Returns:
        The RGB board image and one `Box` per drawn component.
    """
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    _check_board_shape(field_mm, count_range)
    big = size * _SUPERSAMPLE
    p = big / field_mm * float(rng.uniform(0.8, 1.25))
    plain = background is not None
    area = (0.0, 0.0, float(big), float(big))
    if plain:
        board = Image.new("RGB", (big, big), background)
    else:
        if rng.random() < 0.25:
            # Boards photographed on a table show a strip of table at some edges.
            left, top, right, bottom = rng.uniform(0.0, 0.08, size=4) * big
            area = (float(left), float(top), float(big - right), float(big - bottom))
        table = _pick(rng, [(180, 180, 178), (214, 212, 206), (150, 112, 76), (70, 70, 74)])
        look = _board_look(rng)
        board = Image.new("RGB", (big, big), table)
        substrate = _draw_substrate(rng, big, big, p, area, look)
        left_top = (round(area[0]), round(area[1]))
        board.paste(substrate.crop((*left_top, round(area[2]), round(area[3]))), left_top)
    names = _choose_classes(rng, classes_present, count, count_range)
    required = set(names) if classes_present is not None else set()
    shadow_dir = (float(rng.uniform(-1, 1)), float(rng.uniform(0.2, 1)))
    sprites = [(name, _pose(rng, draw_component(name, rng, p))) for name in names]
    sprites.sort(key=lambda item: -item[1].width * item[1].height)  # big parts first pack better
    placed: list[tuple[int, int, int, int]] = []
    boxes: list[Box] = []
    for name, sprite in sprites:
        spot = _find_spot(rng, sprite, area, placed, must_place=name in required)
        if spot is None:
            continue
        sprite, x, y = spot
        required.discard(name)
        _paste(board, sprite, x, y, None if plain else shadow_dir)
        rect = (x, y, x + sprite.width, y + sprite.height)
        placed.append(rect)
        boxes.append(_box_from_pixels(COMPONENT_CLASSES.index(name), rect, big))
    image = board.reduce(_SUPERSAMPLE)
    if not plain:
        image = _finish(rng, image)
    return image, boxes


def _check_board_shape(field_mm: float, count_range: tuple[int, int]) -> None:
    if not field_mm > 0:
        raise ValueError(f"field_mm must be positive, got {field_mm}")
    low, high = count_range
    if not 0 <= low <= high:
        raise ValueError(f"count_range must be (fewest, most) with 0 <= fewest <= most, got {count_range}")


def _find_spot(
    rng: np.random.Generator,
    sprite: Image.Image,
    area: tuple[float, float, float, float],
    placed: list[tuple[int, int, int, int]],
    must_place: bool,
) -> tuple[Image.Image, int, int] | None:
    """A position for `sprite` inside `area` overlapping placed parts by at most 12 %."""
    best: tuple[float, Image.Image, int, int] | None = None
    for attempt in range(4):
        # Too big for the board, or no free spot at this size: try again 20 % smaller.
        shrink = min(
            1.0 if attempt == 0 else 0.8,
            (area[2] - area[0]) / sprite.width,
            (area[3] - area[1]) / sprite.height,
        )
        if shrink < 1.0:
            size = (max(2, int(sprite.width * shrink)), max(2, int(sprite.height * shrink)))
            sprite = sprite.convert("RGBa").resize(size, Image.Resampling.BILINEAR).convert("RGBA")
        low_x, low_y = math.ceil(area[0]), math.ceil(area[1])
        high_x = max(low_x, math.floor(area[2]) - sprite.width)
        high_y = max(low_y, math.floor(area[3]) - sprite.height)
        for _ in range(30):
            x, y = int(rng.integers(low_x, high_x + 1)), int(rng.integers(low_y, high_y + 1))
            rect = (x, y, x + sprite.width, y + sprite.height)
            worst = max((_overlap(rect, other) for other in placed), default=0.0)
            if worst <= 0.12:
                return sprite, x, y
            if best is None or worst < best[0]:
                best = (worst, sprite, x, y)
        if not must_place:
            return None
    assert best is not None  # must_place ran all attempts, each of which records a candidate
    return best[1], best[2], best[3]


def _box_from_pixels(class_id: int, rect: tuple[int, int, int, int], side: int) -> Box:
    x0, y0, x1, y1 = (min(max(v / side, 0.0), 1.0) for v in rect)
    return Box(class_id, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)


# --------------------------------------------------------------------------------------------
# Crops


def draw_component_crop(rng: np.random.Generator, class_name: str, size: int = 96) -> Image.Image:
    """Draw a square close-up of one component of `class_name` on a board, with partial neighbours.

    The component fills 45-85 % of the crop's side, so some board and parts of up to three
    neighbouring components show around it.

    Args:
        rng: source of every random choice.
        class_name: one of `COMPONENT_CLASSES`.
        size: output width and height in pixels.

    Returns:
        The RGB crop.
    """
    if class_name not in _DRAWERS:
        raise ValueError(f"unknown component class {class_name!r}; choose from {COMPONENT_CLASSES}")
    big = size * _SUPERSAMPLE
    fill = rng.uniform(0.45, 0.85)
    # Draw once at a nominal scale to learn the part's extent, then again at the scale that makes
    # it fill the crop; the copied generator makes both drawings the same part.
    probe_rng = copy.deepcopy(rng)
    probe = draw_component(class_name, probe_rng, 8.0)
    p = 8.0 * fill * big / max(probe.width, probe.height)
    target = _pose(rng, draw_component(class_name, rng, p))
    look = _board_look(rng)
    board = _draw_substrate(rng, big, big, p, (0.0, 0.0, float(big), float(big)), look)
    shadow_dir = (float(rng.uniform(-1, 1)), float(rng.uniform(0.2, 1)))
    x = int((big - target.width) / 2 + rng.uniform(-0.06, 0.06) * big)
    y = int((big - target.height) / 2 + rng.uniform(-0.06, 0.06) * big)
    keep_clear = (x - big // 40, y - big // 40, x + target.width + big // 40, y + target.height + big // 40)
    for _ in range(int(rng.integers(0, 4))):
        neighbour = _pose(
            rng, draw_component(COMPONENT_CLASSES[int(rng.integers(len(COMPONENT_CLASSES)))], rng, p)
        )
        for _ in range(10):
            nx = int(rng.integers(-neighbour.width // 2, big - neighbour.width // 2))
            ny = int(rng.integers(-neighbour.height // 2, big - neighbour.height // 2))
            if _overlap((nx, ny, nx + neighbour.width, ny + neighbour.height), keep_clear) == 0.0:
                _paste(board, neighbour, nx, ny, shadow_dir)
                break
    _paste(board, target, x, y, shadow_dir)
    return _finish(rng, board.reduce(_SUPERSAMPLE), blur_chance=0.45)


# --------------------------------------------------------------------------------------------
# Data sets on disk


def split_counts(n: int, splits: Sequence[float]) -> list[int]:
    """Share `n` items by the fractions `splits`, every non-empty fraction getting one if it can.

    Args:
        n: number of items.
        splits: fractions of items in train, valid and test.

    Returns:
        Item counts in train, valid and test, summing to `n`.

    Raises:
        ValueError: unless `splits` is three non-negative fractions summing to 1.
    """
    if len(splits) != 3 or any(s < 0 for s in splits) or not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
        raise ValueError(f"splits must be three non-negative fractions summing to 1, got {tuple(splits)}")
    raw = [n * s for s in splits]
    counts = [int(r) for r in raw]
    for i in sorted(range(3), key=lambda i: counts[i] - raw[i])[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        if splits[i] > 0 and counts[i] == 0 and max(counts) > 1:
            counts[counts.index(max(counts))] -= 1
            counts[i] = 1
    return counts


BoardWriter = Callable[[np.random.Generator, Path], Sequence[Box]]
"""Draws one board from the generator, saves its image at the path given plus its own suffix, and
returns the board's boxes."""


def write_yolo_split_boards(
    out_dir: Path | str,
    n: int,
    seed: int,
    splits: Sequence[float],
    write_board: BoardWriter,
    stem: str,
    image_glob: str,
    extra_yaml: Mapping[str, object] | None = None,
) -> Path:
    """Write `n` boards as a YOLO detection data set, each split drawn at random.

    Layout: `out_dir/{train,valid,test}/{images,labels}/<stem>_NNNNN.*` and `out_dir/data.yaml`.
    The YAML is written last (and any old one removed first), so a tree without it is incomplete.
    Old images matching `image_glob` and old `<stem>_*.txt` labels are removed first. Board `i`
    depends only on `seed` and `i`.

    Args:
        out_dir: folder to write into; created if missing.
        n: number of boards (non-negative).
        seed: fixes every board and split assignment.
        splits: fractions of boards in train, valid and test.
        write_board: draws and saves one board (see `BoardWriter`); given the path without suffix.
        stem: file name prefix of every image and label, as in `board_00007`.
        image_glob: pattern of the image files a previous run left, removed first.
        extra_yaml: keys added to `data.yaml` after the usual ones.

    Returns:
        The path of `data.yaml`.
    """
    out_dir = Path(out_dir)
    yaml_path = out_dir / "data.yaml"
    yaml_path.unlink(missing_ok=True)
    folders = ("train", "valid", "test")
    for folder in folders:
        for kind, pattern in (("images", image_glob), ("labels", f"{stem}_*.txt")):
            (out_dir / folder / kind).mkdir(parents=True, exist_ok=True)
            for stale in (out_dir / folder / kind).glob(pattern):
                stale.unlink()
    children = np.random.SeedSequence(seed).spawn(n + 1)
    order = np.random.default_rng(children[0]).permutation(n)
    split_of = np.empty(n, dtype=np.int64)
    start = 0
    for index, share in enumerate(split_counts(n, splits)):
        split_of[order[start : start + share]] = index
        start += share
    for i in range(n):
        split_dir = out_dir / folders[int(split_of[i])]
        boxes = write_board(np.random.default_rng(children[i + 1]), split_dir / "images" / f"{stem}_{i:05d}")
        lines = "".join(box.to_yolo_line() + "\n" for box in boxes)
        (split_dir / "labels" / f"{stem}_{i:05d}.txt").write_text(lines, encoding="utf-8")
    data = {
        "path": str(out_dir.resolve()),
        "train": "train/images",
        "val": "valid/images",
        "test": "test/images",
        "nc": len(COMPONENT_CLASSES),
        "names": list(COMPONENT_CLASSES),
        **(extra_yaml or {}),
    }
    return write_yaml(yaml_path, data)


def write_synthetic_boards(
    out_dir: Path,
    n: int,
    seed: int = 0,
    size: int = 320,
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    *,
    field_mm: float = _BOARD_MM,
    count_range: tuple[int, int] = _COMPONENTS_PER_BOARD,
) -> Path:
    """Write `n` synthetic boards as a YOLO detection data set.

    Layout: `out_dir/{train,valid,test}/{images,labels}/board_NNNNN.{jpg,txt}` and
    `out_dir/data.yaml`. The YAML is written last (and any old one removed first), so a tree
    without it is incomplete. Board `i` depends only on `seed` and `i`.

    Args:
        out_dir: folder to write into; created if missing.
        n: number of boards.
        seed: fixes every image, label and split assignment.
        size: image width and height in pixels.
        splits: fractions of boards in train, valid and test.
        field_mm: width of board each image shows, on average (see `draw_board`).
        count_range: fewest and most components per board (see `draw_board`).

    Returns:
        The path of `data.yaml`.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    _check_board_shape(field_mm, count_range)

    def write_board(rng: np.random.Generator, path: Path) -> list[Box]:
        image, boxes = draw_board(rng, size, field_mm=field_mm, count_range=count_range)
        image.save(path.with_suffix(".jpg"), quality=int(rng.integers(80, 96)))
        return boxes

    return write_yolo_split_boards(out_dir, n, seed, splits, write_board, "board", "board_*.jpg")


def write_component_crops(out_dir: Path, n_per_class: int, seed: int = 0, size: int = 96) -> Path:
    """Write a class-folder data set of single-component crops: `out_dir/<class>/NNNN.jpg`.

    Args:
        out_dir: folder to write into; created if missing.
        n_per_class: crops per component class.
        seed: fixes every image; crop `i` of a class depends only on `seed`, the class and `i`.
        size: crop width and height in pixels.

    Returns:
        `out_dir`.
    """
    if n_per_class < 0:
        raise ValueError(f"n_per_class must be non-negative, got {n_per_class}")
    out_dir = Path(out_dir)
    for class_id, name in enumerate(COMPONENT_CLASSES):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, child in enumerate(np.random.SeedSequence([seed, class_id]).spawn(n_per_class)):
            rng = np.random.default_rng(child)
            crop = draw_component_crop(rng, name, size)
            crop.save(folder / f"{i:04d}.jpg", quality=int(rng.integers(80, 96)))
    return out_dir
