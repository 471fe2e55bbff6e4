"""Figures for run reports: confusion matrices and learning curves, saved as PNG.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas rather than through pyplot,
so drawing a report never changes matplotlib's global backend or leaves figures open in a
process that also runs a web app or a notebook.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ewaste_vision.errors import RunError
from ewaste_vision.io.atomic import atomic_path

PNG_DPI = 120
"""Resolution of saved figures: sharp in a Markdown viewer, small enough to keep in every run."""

_SCORE_HINTS = ("acc", "f1", "precision", "recall", "auroc", "map", "iou")
"""Substrings that mark a logged column as a score in [0, 1], drawn apart from losses."""


def save_figure(figure: Figure, path: Path) -> Path:
    """Save `figure` to `path` as PNG, atomically, and return `path`."""
    path = Path(path)
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    with atomic_path(path) as tmp:
        # The temporary file ends in ".tmp", so the format must be named, not inferred.
        figure.savefig(tmp, format="png", dpi=PNG_DPI)
    return path


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    path: Path,
    normalise: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """Draw a confusion matrix (rows true, columns predicted) with the count in every cell.

    Args:
        matrix: square matrix of counts, shape [C, C], rows are true classes.
        class_names: names in index order, length C.
        path: where to write the PNG.
        normalise: colour each cell by its share of the row (the recall of that true class), so
            rare classes are as visible as common ones; counts are still written in the cells.
        title: figure title.

    Returns:
        `path`.

    Raises:
        ValueError: if the matrix is not square or does not match `class_names`.
    """
    counts = np.asarray(matrix.cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=float)
    num_classes = len(class_names)
    if counts.shape != (num_classes, num_classes):
        raise ValueError(f"matrix shape {counts.shape} does not match {num_classes} class names")
    if normalise:
        row_totals = counts.sum(axis=1, keepdims=True)  # [C, 1]
        # A class with no test images has an all-zero row; leave it at 0 instead of 0/0.
        shades = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
        colour_label, vmax = "share of true class", 1.0
    else:
        shades = counts
        colour_label, vmax = "images", max(float(counts.max()), 1.0)

    # Grow the canvas with the class count so 20 classes keep legible cells and labels.
    side = min(4.0 + 0.45 * num_classes, 16.0)
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shades, cmap="Blues", vmin=0.0, vmax=vmax)
    figure.colorbar(image, ax=axes, shrink=0.8, label=colour_label)

    font_size = 10 if num_classes <= 10 else 8 if num_classes <= 20 else 6
    for row in range(num_classes):
        for column in range(num_classes):
            count = int(counts[row, column])
            if count == 0 and row != column:
                continue  # empty off-diagonal cells are noise; leaving them blank shows structure
            dark_cell = shades[row, column] > 0.55 * vmax
            axes.text(
                column,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=font_size,
                color="white" if dark_cell else "black",
            )

    ticks = np.arange(num_classes)
    axes.set_xticks(ticks, labels=list(class_names), rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, labels=list(class_names))
    axes.tick_params(labelsize=font_size)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    return save_figure(figure, path)


def read_epoch_metrics(csv_path: Path) -> tuple[str, dict[str, dict[float, float]]]:
    """Read a Lightning `CSVLogger` file into one value per column per epoch.

    Lightning writes training and validation values on separate rows, with the other columns
    empty, and step-level values many times per epoch; each column's finite values are averaged
    per epoch. Without an `epoch` column the `step` column (or else the row number) is the axis.

    Args:
        csv_path: the `metrics.csv` file.

    Returns:
        (axis name, {column: {x: value}}) with columns that hold no finite number left out.

    Raises:
        RunError: if the file does not exist.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise RunError(f"{csv_path}: training log not found; was the run trained with a CSV logger?")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0]) if rows else []
    axis = "epoch" if "epoch" in fields else "step" if "step" in fields else "row"

    collected: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for index, row in enumerate(rows):
        x = float(index) if axis == "row" else _to_float(row.get(axis))
        if not math.isfinite(x):
            continue
        for column, raw in row.items():
            if column in ("epoch", "step") or column is None:
                continue
            value = _to_float(raw)
            if math.isfinite(value):
                collected[column][x].append(value)
    per_epoch = {
        column: {x: float(np.mean(values)) for x, values in sorted(by_x.items())}
        for column, by_x in collected.items()
    }
    return axis, per_epoch


def plot_learning_curves(csv_path: Path, path: Path) -> Path:
    """Plot losses (train and val) and scores (accuracy, F1, ...) per epoch from `metrics.csv`.

    Only the columns that exist are drawn; a log with no usable values gives a figure that says
    "no epochs logged", so a report can always embed the file.

    Args:
        csv_path: Lightning `CSVLogger` file.
        path: where to write the PNG.

    Returns:
        `path`.

    Raises:
        RunError: if `csv_path` does not exist.
    """
    axis_name, per_epoch = read_epoch_metrics(csv_path)
    series = _prefer_epoch_columns(per_epoch)
    losses = {name: values for name, values in series.items() if "loss" in name.lower()}
    scores = {
        name: values
        for name, values in series.items()
        if name not in losses and any(hint in name.lower() for hint in _SCORE_HINTS)
    }
    panels = [(title, group) for title, group in (("loss", losses), ("score", scores)) if group]

    if not panels:
        figure = Figure(figsize=(6.0, 3.0), layout="constrained")
        axes = figure.add_subplot()
        axes.set_axis_off()
        axes.text(0.5, 0.5, "no epochs logged", ha="center", va="center", fontsize=14)
        return save_figure(figure, path)

    figure = Figure(figsize=(5.5 * len(panels), 4.0), layout="constrained")
    for index, (ylabel, group) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        _draw_series(axes, group)
        axes.set_xlabel(axis_name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 0.5" ticks
        xs = [x for values in group.values() for x in values]
        if max(xs) - min(xs) < 1:
            # One logged epoch: matplotlib's default +-5% margin would label the axis in hundredths.
            axes.set_xlim(min(xs) - 1, max(xs) + 1)
        axes.set_ylabel(ylabel)
        if ylabel == "score":
            axes.set_ylim(0.0, 1.02)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle("Learning curves")
    return save_figure(figure, path)


def _prefer_epoch_columns(per_epoch: dict[str, dict[float, float]]) -> dict[str, dict[float, float]]:
    # `self.log(on_step=True, on_epoch=True)` writes both `x_step` and `x_epoch`; the epoch value
    # is Lightning's own aggregate, so drawing both would show one curve twice.
    chosen: dict[str, dict[float, float]] = {}
    for name, values in per_epoch.items():
        stem = name.removesuffix("_step")
        if name.endswith("_step") and (f"{stem}_epoch" in per_epoch or stem in per_epoch):
            continue
        chosen[name] = values
    return chosen


def _draw_series(axes: Axes, group: dict[str, dict[float, float]]) -> None:
    for name, values in sorted(group.items()):
        xs, ys = list(values), list(values.values())
        # Markers keep a one- or two-epoch run visible; on long runs they would only add clutter.
        marker = "o" if len(xs) <= 30 else None
        style = "--" if name.lower().startswith(("val", "valid")) else "-"
        axes.plot(xs, ys, linestyle=style, marker=marker, markersize=3, label=name)


def _to_float(raw: str | None) -> float:
    if raw is None or raw.strip() == "":
        return math.nan
    try:
        return float(raw)
    except ValueError:
        return math.nan
