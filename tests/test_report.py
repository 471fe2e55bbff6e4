"""Tests for the report layer: intervals, classification metrics, plots and report.md."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image

from ewaste_vision.report.classification import classification_metrics, majority_baseline
from ewaste_vision.report.markdown import (
    REPORT_NAME,
    format_duration,
    markdown_table,
    write_classification_report,
)
from ewaste_vision.report.plots import plot_confusion_matrix, plot_learning_curves, read_epoch_metrics
from ewaste_vision.report.stats import bootstrap_interval, wilson_interval

CLASSES = ["board", "phone", "cable"]
# Hand-made case (N = 8): rows of the confusion matrix are true classes.
#   true board: 2 board, 1 phone      true phone: 2 phone      true cable: 1 board, 2 cable
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2]
TOP1 = [0, 0, 1, 1, 1, 2, 0, 2]
TOP2 = [1, 2, 0, 0, 2, 0, 1, 1]  # the second choice recovers sample 2 (true board) only
TRAIN_LABELS = [1, 1, 1, 1, 0, 2]  # majority class of the training split: phone


def _probs(first: list[int], second: list[int], num_classes: int = 3) -> torch.Tensor:
    probs = torch.full((len(first), num_classes), 0.1 / max(num_classes - 2, 1))
    for row, (top, runner_up) in enumerate(zip(first, second, strict=True)):
        probs[row, top], probs[row, runner_up] = 0.6, 0.3
    return probs


# --- stats -------------------------------------------------------------------------------------


def test_wilson_matches_published_values() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=5e-4)
    assert high == pytest.approx(0.9433, abs=5e-4)


def test_wilson_edges_stay_inside_unit_interval() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=5e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(0.7225, abs=5e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_widens_with_confidence_and_rejects_bad_counts() -> None:
    low95, high95 = wilson_interval(30, 50)
    low99, high99 = wilson_interval(30, 50, confidence=0.99)
    assert low99 < low95 < 0.6 < high95 < high99
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    values = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1]

    def mean(sample: object) -> float:
        return float(torch.as_tensor(sample).float().mean())

    first = bootstrap_interval(values, mean, n=200, seed=3)
    assert first == bootstrap_interval(values, mean, n=200, seed=3)
    assert first[0] < 0.7 < first[1]
    assert bootstrap_interval([2.0] * 5, mean, n=50) == (2.0, 2.0)


# --- classification metrics ----------------------------------------------------------------------


def test_classification_metrics_hand_computed() -> None:
    metrics = classification_metrics(Y_TRUE, _probs(TOP1, TOP2), CLASSES, train_labels=TRAIN_LABELS)

    assert metrics["n_test"] == 8
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["accuracy_ci95"] == pytest.approx(list(wilson_interval(6, 8)))
    assert metrics["top2_accuracy"] == pytest.approx(7 / 8)
    # board: TP 2, FP 1, FN 1; phone: TP 2, FP 1, FN 0; cable: TP 2, FP 0, FN 1.
    expected = {
        "board": (2 / 3, 2 / 3, 2 / 3, 3),
        "phone": (2 / 3, 1.0, 0.8, 2),
        "cable": (1.0, 2 / 3, 0.8, 3),
    }
    for name, (precision, recall, f1, support) in expected.items():
        scores = metrics["per_class"][name]
        assert scores["precision"] == pytest.approx(precision)
        assert scores["recall"] == pytest.approx(recall)
        assert scores["f1"] == pytest.approx(f1)
        assert scores["support"] == support
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.8) / 3)
    assert metrics["baseline"]["class"] == "phone"
    assert metrics["baseline"]["rule"] == "majority class of the training split"
    assert metrics["baseline_accuracy"] == pytest.approx(2 / 8)


def test_confusion_matrix_rows_are_true_classes() -> None:
    matrix = classification_metrics(Y_TRUE, _probs(TOP1, TOP2), CLASSES)["confusion_matrix"]
    assert matrix == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
    # One true board predicted as phone sits at [board][phone], not the transpose.
    assert matrix[0][1] == 1 and matrix[1][0] == 0


def test_baseline_without_train_labels_uses_test_majority_lowest_index_on_tie() -> None:
    baseline = majority_baseline(Y_TRUE, CLASSES)  # board and cable both have 3 test images
    assert baseline["class"] == "board"
    assert baseline["accuracy"] == pytest.approx(3 / 8)
    assert "test split" in baseline["rule"]


def test_classes_without_support_are_listed_with_zero_scores() -> None:
    names = ["board", "phone", "battery", "tablet"]
    y_true = [0, 0, 1, 1]
    top1 = [0, 2, 1, 1]  # battery is predicted once but never true; tablet never appears at all
    metrics = classification_metrics(y_true, _probs(top1, [3, 3, 3, 3], num_classes=4), names)

    assert set(metrics["per_class"]) == set(names)
    for name in ("battery", "tablet"):
        assert metrics["per_class"][name] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert "top2_accuracy" in metrics
    # torchmetrics' macro mean skips a class absent from both labels and predictions (tablet)
    # but keeps one that was predicted (battery): board F1 2/3, phone F1 1, battery F1 0.
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert all(math.isfinite(value) for value in metrics["accuracy_ci95"])


def test_two_classes_have_no_top2_and_tensor_inputs_work() -> None:
    metrics = classification_metrics(torch.tensor([0, 1, 1]), torch.tensor([[2.0, -1.0]] * 3), ["a", "b"])
    assert "top2_accuracy" not in metrics
    assert metrics["accuracy"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("y_true", "probs", "message"),
    [
        ([0, 1], torch.rand(3, 3), "labels"),
        ([0, 1], torch.rand(2, 2), "shape"),
        ([0, 5], torch.rand(2, 3), "classes"),
        ([], torch.rand(0, 3), "empty"),
    ],
)
def test_classification_metrics_rejects_bad_input(
    y_true: list[int], probs: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, probs, CLASSES)


# --- plots ---------------------------------------------------------------------------------------


def _assert_png(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 0 and height > 0
    # atomic_path leaves no temporary files behind
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return width, height


@pytest.mark.parametrize("normalise", [True, False])
def test_confusion_matrix_png_with_many_classes(tmp_path: Path, normalise: bool) -> None:
    names = [f"component_{index:02d}" for index in range(16)]
    matrix = torch.eye(16, dtype=torch.long) * 5
    matrix[3, 4] = 2
    matrix[7] = 0  # a class with no test images must not divide by zero
    path = plot_confusion_matrix(matrix, names, tmp_path / "plots" / "cm.png", normalise=normalise)
    width, height = _assert_png(path)
    assert width > 600 and height > 600  # grows with the class count


def test_confusion_matrix_rejects_mismatched_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix([[1, 0], [0, 1]], CLASSES, tmp_path / "cm.png")


LIGHTNING_CSV_LONG = "epoch,step,train_loss_step,train_loss_epoch,val_loss,val_acc\n" + "".join(
    f"{e},{e},{2.0 / (e + 1):.3f},{2.0 / (e + 1):.3f},,\n{e},{e},,,{1.5 - 0.1 * e:.3f},{0.3 + 0.06 * e:.3f}\n"
    for e in range(8)
)
"""Eight epochs of falling losses and a rising score, as Lightning logs them."""

LIGHTNING_CSV = """epoch,step,train_loss_step,train_loss_epoch,val_loss,val_acc,lr-AdamW
0,0,2.0,,,,0.001
0,1,1.0,,,,
0,1,,,1.4,0.40,
0,1,,1.5,,,
1,2,0.8,,,,0.001
1,3,0.6,,,,
1,3,,,0.9,0.70,
1,3,,0.7,,,
"""


def test_read_epoch_metrics_aggregates_interleaved_rows(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(LIGHTNING_CSV)
    axis, per_epoch = read_epoch_metrics(csv_path)
    assert axis == "epoch"
    assert per_epoch["train_loss_step"] == {0.0: pytest.approx(1.5), 1.0: pytest.approx(0.7)}
    assert per_epoch["train_loss_epoch"] == {0.0: 1.5, 1.0: 0.7}
    assert per_epoch["val_acc"] == {0.0: 0.40, 1.0: 0.70}


@pytest.mark.parametrize(
    "text",
    [
        LIGHTNING_CSV,
        "epoch,step,val_acc\n0,5,0.5\n1,10,0.6\n",  # no loss at all
        "epoch,step,train_loss\n0,1,nan\n0,2,1.0\n",  # one epoch, NaN written out
        "step,train_loss\n1,2.0\n2,1.5\n",  # no epoch column
    ],
    ids=["lightning", "scores-only", "single-epoch", "no-epoch-column"],
)
def test_learning_curves_png(tmp_path: Path, text: str) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(text)
    _assert_png(plot_learning_curves(csv_path, tmp_path / "plots" / "learning_curves.png"))


@pytest.mark.parametrize("text", ["", "epoch,step\n", "epoch,step,lr\n0,1,0.1\n"])
def test_learning_curves_without_values_say_so(tmp_path: Path, text: str) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(text)
    width, height = _assert_png(plot_learning_curves(csv_path, tmp_path / "curves.png"))
    assert width > height  # the small "no epochs logged" banner, not an empty set of axes


class _FigureCatcher:
    """Wraps `plots.save_figure` to keep the figure it saved, so a test can map data to pixels."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from ewaste_vision.report import plots

        self.figures: list[Any] = []
        original = plots.save_figure

        def save(figure: Any, path: Path) -> Path:
            saved = original(figure, path)
            self.figures.append(figure)
            return saved

        monkeypatch.setattr(plots, "save_figure", save)


def _to_pixels(figure: Any, axes: Any, xs: Any, ys: Any) -> np.ndarray:
    """Data points of `axes` as (column, row) pixel positions in the PNG the figure was saved as."""
    from ewaste_vision.report.plots import PNG_DPI

    display = axes.transData.transform(np.column_stack([xs, ys]))  # (n, 2), origin bottom left
    scale = PNG_DPI / figure.dpi
    height = figure.get_figheight() * PNG_DPI
    return np.column_stack([display[:, 0] * scale, height - display[:, 1] * scale])


def _share_drawn(pixels: np.ndarray, path_points: np.ndarray, colour: Any, radius: int = 3) -> float:
    """Share of points sampled along a polyline with a pixel of `colour` within `radius` pixels."""
    target = np.array(to_rgb(colour)) * 255
    near = np.abs(pixels[..., :3].astype(float) - target).max(axis=2) < 60  # (H, W) colour mask
    samples = np.concatenate(
        [np.linspace(a, b, 12, endpoint=False) for a, b in itertools.pairwise(path_points)]
        + [path_points[-1:]]
    )
    hits = 0
    for column, row in np.rint(samples).astype(int):
        window = near[max(row - radius, 0) : row + radius + 1, max(column - radius, 0) : column + radius + 1]
        hits += bool(window.any())
    return hits / len(samples)


def test_learning_curves_draw_every_series_where_its_values_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catcher = _FigureCatcher(monkeypatch)
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(LIGHTNING_CSV_LONG)
    path = plot_learning_curves(csv_path, tmp_path / "curves.png")
    (figure,) = catcher.figures
    pixels = np.asarray(Image.open(path).convert("RGB"))
    _, per_epoch = read_epoch_metrics(csv_path)
    drawn: dict[str, float] = {}
    for axes in figure.axes:
        for line in axes.get_lines():
            name = line.get_label()
            values = per_epoch[name]
            assert list(line.get_xdata()) == list(values) and list(line.get_ydata()) == list(values.values())
            xs, ys = np.array(list(values)), np.array(list(values.values()))
            on_curve = _to_pixels(figure, axes, xs, ys)
            drawn[name] = _share_drawn(pixels, on_curve, line.get_color())
            # The same colour is absent where the curve is not: a path mirrored top to bottom.
            low, high = axes.get_ylim()
            mirrored = _to_pixels(figure, axes, xs, low + high - ys)
            assert _share_drawn(pixels, mirrored, line.get_color(), radius=1) < 0.5, name
    assert set(drawn) == {"train_loss_epoch", "val_loss", "val_acc"}  # _step is Lightning's duplicate
    assert min(drawn.values()) > 0.85, drawn


def test_confusion_matrix_cells_are_shaded_by_row_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catcher = _FigureCatcher(monkeypatch)
    matrix = np.array([[8, 2, 0], [0, 5, 5], [0, 0, 3]])
    path = plot_confusion_matrix(matrix, CLASSES, tmp_path / "cm.png", normalise=True)
    (figure,) = catcher.figures
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(float)
    axes = figure.axes[0]
    shares = matrix / matrix.sum(axis=1, keepdims=True)
    colormap = axes.images[0].get_cmap()
    for row in range(3):
        for column in range(3):
            # A point inside the cell, clear of the count written at its centre.
            ((x, y),) = np.rint(_to_pixels(figure, axes, [column - 0.38], [row - 0.38])).astype(int)
            expected = np.array(colormap(shares[row, column])[:3]) * 255
            assert np.abs(pixels[y, x] - expected).max() < 12, (row, column, pixels[y, x], expected)


def test_learning_curves_missing_log_is_a_user_error(tmp_path: Path) -> None:
    from ewaste_vision.errors import UserError

    with pytest.raises(UserError, match="training log not found"):
        plot_learning_curves(tmp_path / "metrics.csv", tmp_path / "curves.png")


# --- markdown ------------------------------------------------------------------------------------


def test_markdown_table_escapes_pipes_and_checks_widths() -> None:
    table = markdown_table(["a", "b"], [["x|y", 1]], align=["l", "r"])
    assert table.splitlines() == ["| a | b |", "| :-- | --: |", "| x\\|y | 1 |"]
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [[1]])


def test_format_duration() -> None:
    assert format_duration(12.34) == "12.3 s"
    assert format_duration(125) == "2 min 05 s"
    assert format_duration(3723) == "1 h 02 min"


def test_classification_report_has_headline_and_working_links(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    metrics = classification_metrics(Y_TRUE, _probs(TOP1, TOP2), CLASSES, train_labels=TRAIN_LABELS)
    csv_path = run_dir / "logs" / "metrics.csv"
    csv_path.parent.mkdir(parents=True)
    csv_path.write_text(LIGHTNING_CSV)
    plots = {
        "confusion matrix": plot_confusion_matrix(
            metrics["confusion_matrix"], CLASSES, run_dir / "plots" / "confusion_matrix.png"
        ),
        "learning curves": plot_learning_curves(csv_path, run_dir / "plots" / "learning_curves.png"),
    }
    context = {
        "dataset": "boards-v1",
        "backbone": "efficientnet_lite0",
        "image_size": (224, 224),
        "split_sizes": {"train": 6, "val": 2, "test": 8},
        "training_time_s": 125.0,
        "seed": 7,
        "skipped": [("data/broken.jpg", "truncated file")],
        "duplicates": "2 near-duplicate groups kept in one split",
    }

    report = write_classification_report(run_dir, metrics, plots, context)

    assert report == run_dir / REPORT_NAME
    text = report.read_text()
    low, high = wilson_interval(6, 8)
    headline = (
        f"Accuracy 75.0% (95% CI {100 * low:.1f}%-{100 * high:.1f}%) on 8 test images; "
        "majority-class baseline 25.0%"
    )
    assert headline in text
    assert "Macro-F1: 0.756" in text
    assert "| board | 0.667 | 0.667 | 0.667 | 3 |" in text
    assert "| Image size | 224 x 224 |" in text
    assert "| Training time | 2 min 05 s |" in text
    assert "`data/broken.jpg`: truncated file" in text
    assert "near-duplicate groups" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["plots/confusion_matrix.png", "plots/learning_curves.png"]
    assert all((run_dir / link).is_file() for link in links)


def test_report_refuses_to_link_a_missing_figure(tmp_path: Path) -> None:
    metrics = classification_metrics(Y_TRUE, _probs(TOP1, TOP2), CLASSES)
    with pytest.raises(FileNotFoundError):
        write_classification_report(tmp_path, metrics, {"cm": Path("plots/missing.png")}, {})
    assert not (tmp_path / REPORT_NAME).exists()


def test_figures_section_accepts_plots_under_a_relative_run_dir(tmp_path, monkeypatch):
    from ewaste_vision.report.markdown import figures_section

    monkeypatch.chdir(tmp_path)
    run_dir = Path("runs") / "x"
    (run_dir / "plots").mkdir(parents=True)
    (run_dir / "plots" / "curve.png").write_bytes(b"png")
    section = figures_section(
        run_dir, {"curve": run_dir / "plots" / "curve.png", "same": Path("plots/curve.png")}
    )
    assert section.count("](plots/curve.png)") == 2
