"""The multi-label report: headline scores beside two baselines, per-class table, 2x2 grids."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ewaste_vision.report.markdown import (
    context_section,
    figures_section,
    markdown_table,
    notes_section,
    write_markdown_report,
)
from ewaste_vision.report.plots import plot_learning_curves, save_figure


def plot_per_class_confusions(per_class: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """One 2x2 confusion matrix (rows truth, columns prediction) per class, in a grid."""
    names = list(per_class)
    columns = 4
    rows = max(1, -(-len(names) // columns))
    figure = Figure(figsize=(3.0 * columns, 2.8 * rows))
    for index, name in enumerate(names):
        counts = per_class[name]["confusion"]
        matrix = [[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]]
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(matrix, cmap="Blues")
        peak = max(max(r) for r in matrix) or 1
        for i in range(2):
            for j in range(2):
                axes.text(
                    j,
                    i,
                    str(matrix[i][j]),
                    ha="center",
                    va="center",
                    color="white" if matrix[i][j] > peak / 2 else "black",
                )
        axes.set_xticks([0, 1], ["absent", "present"])
        axes.set_yticks([0, 1], ["absent", "present"])
        axes.set_title(f"{name} (F1 {per_class[name]['f1']:.2f})", fontsize=9)
        axes.set_xlabel("predicted", fontsize=8)
        axes.set_ylabel("true", fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)


def write_multilabel_report(run_dir: Path, metrics: Mapping[str, Any], context: Mapping[str, Any]) -> Path:
    """Write `run_dir/report.md` (and its plots) for a multi-label evaluation."""
    context = dict(context)
    context.pop("class_names", None)
    training_log = Path(context.pop("run_dir", run_dir)) / "logs" / "metrics.csv"
    extra_sections = context.pop("extra_sections", [])
    plots_dir = Path(run_dir) / "plots"
    plots = {
        "per-class confusion (2x2)": plot_per_class_confusions(
            metrics["per_class"], plots_dir / "per_class_confusion.png"
        )
    }
    if training_log.is_file():
        plots["loss curves"] = plot_learning_curves(training_log, plots_dir / "learning_curves.png")
    baselines = metrics["baselines"]
    headline = (
        "## Results\n\n"
        f"**micro-F1 {metrics['micro_f1']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, mAP {metrics['map']:.3f} "
        f"on {metrics['n_test']} test images.**{_interval_note(metrics)}\n\n"
        + markdown_table(
            ["Predictor", "micro-F1", "macro-F1", "mAP"],
            [
                [
                    "this model",
                    f"{metrics['micro_f1']:.3f}",
                    f"{metrics['macro_f1']:.3f}",
                    f"{metrics['map']:.3f}",
                ],
                [
                    "baseline: predict every class",
                    f"{baselines['predict every class']['micro_f1']:.3f}",
                    f"{baselines['predict every class']['macro_f1']:.3f}",
                    "-",
                ],
                [
                    "baseline: training prevalence",
                    f"{baselines['predict the training prevalence']['micro_f1']:.3f}",
                    f"{baselines['predict the training prevalence']['macro_f1']:.3f}",
                    f"{baselines['predict the training prevalence']['map']:.3f}",
                ],
            ],
        )
    )
    rows = [
        [
            name,
            f"{s['precision']:.3f}",
            f"{s['recall']:.3f}",
            f"{s['f1']:.3f}",
            "-" if s["average_precision"] is None else f"{s['average_precision']:.3f}",
            str(s["support"]),
            f"{s['threshold']:.2f}",
        ]
        for name, s in metrics["per_class"].items()
    ]
    per_class = "## Per class\n\n" + markdown_table(
        ["Class", "Precision", "Recall", "F1", "AP", "Images with it", "Threshold"], rows
    )
    title = str(context.pop("title", f"Multi-label report: {Path(run_dir).name}"))
    sections = [
        context_section(context),
        headline,
        per_class,
        *extra_sections,
        figures_section(Path(run_dir), plots),
        notes_section(context),
    ]
    return write_markdown_report(run_dir, title, sections)


def _interval_note(metrics: Mapping[str, Any]) -> str:
    """The micro-F1 bootstrap interval, for runs evaluated since it was added."""
    if "micro_f1_interval" not in metrics:
        return ""
    low, high = metrics["micro_f1_interval"]
    return (
        f" 95% bootstrap interval of micro-F1 over test images: {low:.3f}-{high:.3f} "
        "(augmented copies of one photo count as separate images, so it is too narrow where a split "
        "holds them)."
    )
