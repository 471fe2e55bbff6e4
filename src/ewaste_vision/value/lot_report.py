"""The lot report: a CSV with one row per board and a Markdown summary with a value-per-class plot.

Files written to the output folder (each atomically):

- `lot_values.csv`: image, detections per class, value, interval low/high, not-valued count;
- `value_per_class.png`: bar chart of the lot's value per detector class;
- `value_report.md`: totals, per-class table, the plot, not-valued classes, the price table with
  its currency and date, and the detector's test metrics when given.

The report is named `value_report.md`, not `report.md`, so it can sit in a run directory beside
the training report.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ewaste_vision.io.atomic import write_text
from ewaste_vision.report.markdown import figures_section, format_percent, format_value, markdown_table
from ewaste_vision.report.plots import save_figure
from ewaste_vision.value.model import BoardValue
from ewaste_vision.value.prices import PriceTable
from ewaste_vision.value.uncertainty import LotUncertainty, ValueComparison

CSV_NAME = "lot_values.csv"
"""Per-board table inside the output folder."""

PLOT_NAME = "value_per_class.png"
"""Bar chart inside the output folder."""

REPORT_NAME = "value_report.md"
"""Markdown summary inside the output folder."""


def lot_csv_columns(boards: Sequence[BoardValue], currency: str) -> list[str]:
    """Column names of the lot CSV: image, one count column per class, value, interval, not valued."""
    return [
        "image",
        *(f"n_{name}" for name in _classes(boards)),
        f"value_{currency}",
        f"value_low_{currency}",
        f"value_high_{currency}",
        "n_not_valued",
    ]


def write_lot_csv(
    path: Path, boards: Sequence[BoardValue], currency: str, uncertainty: LotUncertainty | None = None
) -> Path:
    """Write one row per board; the interval cells are empty when `uncertainty` is None."""
    columns = lot_csv_columns(boards, currency)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    classes = _classes(boards)
    for board in boards:
        interval = uncertainty.for_image(board.image) if uncertainty is not None else None
        writer.writerow(
            [
                board.image,
                *(board.counts.get(name, 0) for name in classes),
                f"{board.value:.4f}",
                f"{interval.low:.4f}" if interval else "",
                f"{interval.high:.4f}" if interval else "",
                board.n_not_valued,
            ]
        )
    return write_text(path, buffer.getvalue())


def plot_value_per_class(class_values: Mapping[str, float], currency: str, path: Path) -> Path:
    """Horizontal bar chart of value per class, largest on top; says so when nothing was valued."""
    ordered = sorted(class_values.items(), key=lambda item: item[1])
    figure = Figure(figsize=(6.0, 1.2 + 0.35 * max(len(ordered), 2)), layout="constrained")
    axes = figure.add_subplot()
    if not ordered:
        axes.set_axis_off()
        axes.text(0.5, 0.5, "no valued components", ha="center", va="center", fontsize=14)
        return save_figure(figure, path)
    names, values = zip(*ordered, strict=True)
    axes.barh(names, values, color="#b8860b")
    axes.set_xlabel(f"value ({currency})")
    axes.set_title("Lot value per component class")
    axes.grid(axis="x", alpha=0.3)
    return save_figure(figure, path)


def write_lot_report(
    out_dir: Path | str,
    boards: Sequence[BoardValue],
    table: PriceTable,
    metrics: Mapping[str, Any] | None = None,
    uncertainty: LotUncertainty | None = None,
    comparison: ValueComparison | None = None,
) -> Path:
    """Write the lot CSV, the value-per-class plot and the Markdown summary to `out_dir`.

    Args:
        out_dir: output folder, created if needed.
        boards: `board_value` results, one per board.
        table: the price table the boards were valued with.
        metrics: the detector's test metrics, e.g. {class: {"precision": p, "recall": r}} and/or
            scalars such as {"map50": 0.61}; shown as given.
        uncertainty: `value_interval` result for the same boards; fills the interval columns.
        comparison: `compare_with_ground_truth` result, shown as its own section.

    Returns:
        Path of `value_report.md`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_lot_csv(out_dir / CSV_NAME, boards, table.currency, uncertainty)
    class_values: dict[str, float] = defaultdict(float)
    for board in boards:
        for name, value in board.class_values.items():
            class_values[name] += value
    plot = plot_value_per_class(class_values, table.currency, out_dir / PLOT_NAME)
    sections = [
        _totals_section(boards, table.currency, uncertainty),
        _per_class_section(boards, table, class_values),
        figures_section(out_dir, {"value per class": plot}),
        _not_valued_section(boards, table),
        _comparison_section(comparison),
        _price_section(table),
        _metrics_section(metrics),
    ]
    text = "# Lot value report\n\n" + "\n".join(s.rstrip("\n") + "\n" for s in sections if s.strip())
    return write_text(out_dir / REPORT_NAME, text)


def _classes(boards: Sequence[BoardValue]) -> list[str]:
    return sorted({name for board in boards for name in board.counts})


def _money(value: float, currency: str) -> str:
    # One board is often worth cents, so small amounts keep a third decimal.
    return f"{value:,.2f} {currency}" if abs(value) >= 10 else f"{value:.3f} {currency}"


def _totals_section(boards: Sequence[BoardValue], currency: str, uncertainty: LotUncertainty | None) -> str:
    total = sum(board.value for board in boards)
    detections = sum(sum(board.counts.values()) for board in boards)
    not_valued = sum(board.n_not_valued for board in boards)
    lines = [
        "## Totals\n",
        f"- Boards: {len(boards)}",
        f"- Detections: {detections}, of which not valued: {not_valued}",
        f"- Value of the detected components: **{_money(total, currency)}**",
    ]
    if uncertainty is not None:
        lot = uncertainty.lot
        lines.append(
            f"- Count-corrected value (n x precision / recall): **{_money(lot.expected, currency)}**, "
            f"{format_percent(lot.confidence, 0)} interval {_money(lot.low, currency)} to "
            f"{_money(lot.high, currency)} (parametric bootstrap, {uncertainty.n_draws} draws, "
            f"seed {uncertainty.seed})"
        )
    if not_valued:
        lines.append("- Not-valued detections are left out of every value above; see below.")
    return "\n".join(lines) + "\n"


def _per_class_section(
    boards: Sequence[BoardValue], table: PriceTable, class_values: Mapping[str, float]
) -> str:
    counts: Counter[str] = Counter()
    for board in boards:
        counts.update(board.counts)
    total = sum(class_values.values())
    rows = []
    for name in sorted(class_values, key=lambda n: -class_values[n]):
        value_class = table.value_class_of(name) or ""
        share = format_percent(class_values[name] / total) if total > 0 else "-"
        rows.append(
            [f"`{name}`", f"`{value_class}`", counts[name], _money(class_values[name], table.currency), share]
        )
    if not rows:
        return "## Per class\n\nNo detection belongs to a class with a known value.\n"
    return "## Per class\n\n" + markdown_table(
        ["Class", "Value class", "Detections", "Value", "Share"], rows, align=["l", "l", "r", "r", "r"]
    )


def _not_valued_section(boards: Sequence[BoardValue], table: PriceTable) -> str:
    counts: Counter[str] = Counter()
    for board in boards:
        counts.update(board.not_valued)
    if not counts:
        return ""
    rows = [[f"`{name}`", count, table.unvalued_reason(name)] for name, count in sorted(counts.items())]
    return "## Not valued\n\nThese detections have no known value and are not in any total.\n\n" + (
        markdown_table(["Class", "Detections", "Why"], rows, align=["l", "r", "l"])
    )


def _comparison_section(comparison: ValueComparison | None) -> str:
    if comparison is None:
        return ""

    def percent(value: float | None) -> str:
        return "-" if value is None else format_percent(value)

    lines = [
        "## Against ground truth\n",
        f"- Boards: {len(comparison.boards)} ({comparison.n_zero_truth} with true value 0 left out of the "
        "relative errors)",
        f"- Absolute relative error per board: median {percent(comparison.median_abs_relative_error)}, "
        f"90th percentile {percent(comparison.p90_abs_relative_error)}",
        f"- Lot total: predicted {comparison.lot_predicted:,.2f}, true {comparison.lot_true:,.2f}, "
        f"relative error {percent(comparison.lot_relative_error)}",
    ]
    return "\n".join(lines) + "\n"


def _price_section(table: PriceTable) -> str:
    metal_rows = [
        [f"`{m.name}`", f"{m.price:g} {m.unit}", f"{m.per_gram:.4g} {table.currency}/g"]
        for m in table.metals.values()
    ]
    class_rows = [
        [
            f"`{name}`",
            ", ".join(f"{material} {amount}" for material, amount in spec.written.items()),
            f"{spec.recovery_yield:g}",
            f"{table.piece_value(name):.4f} {table.currency}",
        ]
        for name, spec in table.value_classes.items()
    ]
    header = (
        f"## Price table\n\nCurrency **{table.currency}**, prices as of **{table.date}**, "
        f"from `{table.source}`."
    )
    if table.note:
        header += f"\nSource: {table.note}"
    return (
        header
        + "\n\n"
        + markdown_table(["Material", "Price", "Per gram"], metal_rows, align=["l", "r", "r"])
        + "\n"
        + markdown_table(
            ["Value class", "Content per piece", "Recovery yield", "Value per piece"],
            class_rows,
            align=["l", "l", "r", "r"],
        )
    )


def _metrics_section(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return ""
    per_class = {name: entry for name, entry in metrics.items() if isinstance(entry, Mapping)}
    scalars = {name: entry for name, entry in metrics.items() if not isinstance(entry, Mapping)}
    parts = ["## Detector test metrics\n"]
    if scalars:
        parts.append(markdown_table(["Metric", "Value"], [[k, format_value(v)] for k, v in scalars.items()]))
    if per_class:
        keys = list(dict.fromkeys(key for entry in per_class.values() for key in entry))
        rows = [
            [f"`{name}`", *(format_value(entry.get(key, "")) for key in keys)]
            for name, entry in per_class.items()
        ]
        parts.append(markdown_table(["Class", *keys], rows, align=["l"] + ["r"] * len(keys)))
    return "\n".join(parts)
