"""Heatmaps drawn over images: one overlay per class, and a panel per image.

Files are written atomically as PNG without EXIF: images written by the toolkit must carry no GPS
or camera metadata from the user's photos (Pillow copies EXIF only when asked; the tests check it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from ewaste_vision.io.atomic import atomic_path
from ewaste_vision.report.plots import save_figure

COLORMAPS = ("jet", "inferno")
"""Colour maps offered: `jet` as in 000's figures, `inferno` where colour-blind readers matter."""

MAX_SIDE = 1024
"""Overlays are drawn at most this many pixels on the long side: a 12 MP phone photo would make a
30 MB PNG per class and show nothing more at the maps' resolution."""


def overlay_heatmap(
    image: Image.Image,
    heatmap: np.ndarray | torch.Tensor,
    colormap: str = "jet",
    alpha: float = 0.5,
    max_side: int = MAX_SIDE,
) -> Image.Image:
    """Blend a heatmap in [0, 1] over an RGB image.

    Args:
        image: the picture (8-bit RGB), any size; the heatmap is stretched over all of it, as the
            model saw the whole image resized.
        heatmap: [H, W] values in [0, 1] (normalised CAM).
        colormap: a matplotlib colour map name (see `COLORMAPS`).
        alpha: weight of the heatmap colour (0 shows only the image).
        max_side: the result is shrunk so its long side is at most this.

    Returns:
        An RGB image the size of `image` (or shrunk to `max_side`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = _fit(image.convert("RGB"), max_side)
    values = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    if values.ndim != 2:
        raise ValueError(f"expected a heatmap [H, W], got shape {values.shape}")
    # Resize the values, not the colours, so the colour map is applied at full resolution.
    field = Image.fromarray(np.clip(values, 0.0, 1.0).astype(np.float32), mode="F").resize(
        base.size, Image.Resampling.BILINEAR
    )
    colours = colormaps[colormap](np.asarray(field))[..., :3]  # [H, W, 3] in [0, 1]
    blended = (1.0 - alpha) * (np.asarray(base, dtype=np.float32) / 255.0) + alpha * colours
    return Image.fromarray(np.round(np.clip(blended, 0.0, 1.0) * 255).astype(np.uint8), mode="RGB")


def save_png(image: Image.Image, path: Path) -> Path:
    """Write `image` to `path` as PNG, atomically, with no EXIF or other metadata chunks."""
    path = Path(path)
    clean = Image.frombytes(image.mode, image.size, image.tobytes())  # drops `info`, EXIF included
    with atomic_path(path) as tmp:
        clean.save(tmp, format="PNG")
    return path


def save_panel(
    image: Image.Image,
    heatmaps: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    titles: Sequence[str],
    path: Path,
    shared_scale: bool = False,
    colormap: str = "jet",
    alpha: float = 0.5,
    method_label: str = "Grad-CAM",
) -> Path:
    """One figure per image: the original, then one overlay per explained class, and a colour bar.

    Args:
        image: the picture (8-bit RGB).
        heatmaps: K maps [H, W] in [0, 1].
        titles: K captions, e.g. "capacitor  p=0.93".
        path: where to write the PNG.
        shared_scale: the maps share one scale across classes (the colour bar says so); otherwise
            each map is scaled to its own maximum.
        colormap: matplotlib colour map name.
        alpha: heatmap weight in the blend.
        method_label: name of the CAM method for the colour bar.

    Returns:
        `path`.
    """
    maps = list(heatmaps)
    if len(maps) != len(titles):
        raise ValueError(f"{len(maps)} heatmaps but {len(titles)} titles")
    shown = _fit(image.convert("RGB"), 512)
    columns = 1 + len(maps)
    aspect = shown.height / shown.width
    figure = Figure(figsize=(3.2 * columns + 0.8, 3.2 * aspect + 0.7), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    axes[0].imshow(shown)
    axes[0].set_title("image", fontsize=9)
    for axis, heatmap, title in zip(axes[1:], maps, titles, strict=True):
        axis.imshow(overlay_heatmap(shown, heatmap, colormap, alpha))
        axis.set_title(title, fontsize=9)
    for axis in axes:
        axis.set_axis_off()
    scale = "shared scale" if shared_scale else "each map to its peak"
    colour_bar = figure.colorbar(
        ScalarMappable(Normalize(0.0, 1.0), colormaps[colormap]), ax=list(axes), shrink=0.8
    )
    colour_bar.set_label(f"{method_label} ({scale})", fontsize=8)
    return save_figure(figure, path)


def _fit(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)
