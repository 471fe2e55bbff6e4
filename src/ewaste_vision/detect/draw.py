"""Detections drawn on their image, one colour per class with a legend, for reports and the app."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from PIL import Image, ImageDraw

from ewaste_vision.detect.facts import SHOWN_CONFIDENCE
from ewaste_vision.detect.metrics import DetectionPrediction
from ewaste_vision.io.atomic import atomic_path


def class_colour(index: int) -> tuple[int, int, int]:
    """A distinct colour per class index (matplotlib's tab20)."""
    red, green, blue, _ = colormaps["tab20"](index % 20)
    return int(red * 255), int(green * 255), int(blue * 255)


def render_detections(
    image: Image.Image,
    detections: DetectionPrediction,
    class_names: Sequence[str],
    min_score: float = SHOWN_CONFIDENCE,
) -> Image.Image:
    """A copy of `image` (RGB) with boxes above `min_score` and a legend of the classes drawn.

    The copy is built from pixels only, so no metadata (EXIF, GPS) of the source survives.
    """
    canvas = Image.new("RGB", image.size)
    canvas.paste(image.convert("RGB"))
    draw = ImageDraw.Draw(canvas)
    line = max(1, round(min(image.size) / 300))
    keep = detections["scores"] > min_score
    shown: dict[int, int] = {}
    for box, label in zip(
        detections["boxes"][keep].tolist(), detections["labels"][keep].tolist(), strict=True
    ):
        draw.rectangle(box, outline=class_colour(int(label)), width=line)
        shown[int(label)] = shown.get(int(label), 0) + 1
    for row, (label, count) in enumerate(sorted(shown.items())):
        text = f"{class_names[label] if label < len(class_names) else label}: {count}"
        top = 4 + row * 14
        draw.rectangle((4, top, 14, top + 10), fill=class_colour(label))
        draw.text((18, top - 1), text, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return canvas


def draw_detections(
    image: Image.Image,
    detections: DetectionPrediction,
    class_names: Sequence[str],
    target: Path,
    min_score: float = SHOWN_CONFIDENCE,
) -> Path:
    """Write `render_detections(...)` to `target` (format from its suffix), atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    rendered = render_detections(image, detections, class_names, min_score)
    with atomic_path(target) as tmp:
        rendered.save(tmp, format="JPEG" if target.suffix.lower() in (".jpg", ".jpeg") else "PNG", quality=90)
    return target
