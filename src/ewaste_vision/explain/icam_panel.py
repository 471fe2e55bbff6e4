"""Where an iCAM head looked: one figure per image with the crop chosen at each iteration.

Panel 0 is the image with every iteration's view outlined in its own colour (a legend names them);
panel i + 1 is view i as the network saw it, under the CAM that chose the next crop, with that crop
outlined in the next iteration's colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from ewaste_vision.explain.gradcam import upsample_and_normalise
from ewaste_vision.explain.render import overlay_heatmap
from ewaste_vision.models.icam import IcamTrace
from ewaste_vision.report.plots import save_figure

ICAM_PANEL_NAME = "icam"
BOX_COLOURS = ("white", "lime", "cyan", "magenta", "yellow", "orange", "red", "blue")
"""One colour per iteration's view (cycled beyond eight)."""


def save_icam_panel(
    image: Image.Image,
    trace: IcamTrace,
    class_names: Sequence[str],
    input_size: int,
    path: Path,
    colormap: str = "jet",
) -> Path:
    """Draw the views of the first image of `trace` over `image` and write the figure to `path`.

    Args:
        image: the picture (8-bit RGB) the model saw resized to `input_size` x `input_size`.
        trace: `IcamClassifier.trace` of that one image.
        class_names: the run's classes, to name the class each CAM is of.
        input_size: the model's input side S (the boxes are in its pixels).
        path: where to write the PNG.
        colormap: matplotlib colour map of the CAMs.

    Returns:
        `path`.
    """
    boxes = trace.boxes[0].float()  # [N, 4] in input pixels
    iterations = boxes.shape[0]
    shown = image.convert("RGB")
    scale_x, scale_y = shown.width / input_size, shown.height / input_size
    figure = Figure(figsize=(3.2 * (iterations + 1), 3.9), layout="constrained")
    axes = figure.subplots(1, iterations + 1, squeeze=False)[0]
    axes[0].imshow(_fit(shown, 512))
    fit_scale = _fit(shown, 512).width / shown.width
    for index in range(iterations):
        x0, y0, x1, y1 = boxes[index].tolist()
        axes[0].add_patch(
            Rectangle(
                (x0 * scale_x * fit_scale, y0 * scale_y * fit_scale),
                (x1 - x0) * scale_x * fit_scale,
                (y1 - y0) * scale_y * fit_scale,
                fill=False,
                linewidth=2,
                edgecolor=_colour(index),
                label=f"view {index}",
            )
        )
    axes[0].legend(loc="lower right", fontsize=7, framealpha=0.6)
    predicted = class_names[int(trace.logits[0].argmax())]
    axes[0].set_title(f"image: iCAM says {predicted}", fontsize=9)
    for index in range(iterations):
        x0, y0, x1, y1 = boxes[index].tolist()
        view = shown.crop((x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y)).resize((256, 256))
        cam = upsample_and_normalise(trace.cams[index][:1, None], 256)[0, 0]  # [256, 256]
        axis = axes[index + 1]
        axis.imshow(overlay_heatmap(view, cam, colormap))
        cam_class = class_names[int(trace.classes[0, index])]
        axis.set_title(f"view {index}: CAM of {cam_class}", fontsize=9)
        if index + 1 < iterations:
            nx0, ny0, nx1, ny1 = boxes[index + 1].tolist()
            per_pixel = 256 / (x1 - x0)  # display pixels per input pixel of this view
            axis.add_patch(
                Rectangle(
                    ((nx0 - x0) * per_pixel, (ny0 - y0) * per_pixel),
                    (nx1 - nx0) * per_pixel,
                    (ny1 - ny0) * per_pixel,
                    fill=False,
                    linewidth=2,
                    edgecolor=_colour(index + 1),
                )
            )
    for axis in axes:
        axis.set_axis_off()
    return save_figure(figure, path)


def _colour(index: int) -> str:
    return BOX_COLOURS[index % len(BOX_COLOURS)]


def _fit(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
