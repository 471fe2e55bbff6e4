"""Markdown run reports: generic formatting helpers and the classification report.

The helpers (`markdown_table`, `format_percent`, `context_section`, `figures_section`,
`notes_section`, `write_markdown_report`) know nothing about any task, so each task's report is
a short function that orders sections; `write_classification_report` is the single-label one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ewaste_vision.io.atomic import write_text

REPORT_NAME = "report.md"
"""File name of the human-readable report inside a run directory."""

NOTE_KEYS = {"skipped": "Skipped files", "duplicates": "Duplicates", "notes": "Notes"}
"""Context keys rendered as sections of their own after the figures, not as table rows."""

MAX_LISTED_NOTES = 20
"""Longer note lists are cut so a dataset with thousands of unreadable files keeps a short report."""


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None
) -> str:
    """Format a GitHub-flavoured Markdown table.

    Args:
        headers: column titles.
        rows: one sequence of cells per row, each as long as `headers`; cells are turned into
            text with `str`, and `|` or line breaks inside them are escaped.
        align: one of "l", "r", "c" per column; default left.

    Returns:
        The table, ending with a newline.

    Raises:
        ValueError: if a row or `align` has the wrong length, or an alignment is unknown.
    """
    markers = {"l": ":--", "r": "--:", "c": ":-:"}
    align = list(align) if align is not None else ["l"] * len(headers)
    if len(align) != len(headers) or any(a not in markers for a in align):
        raise ValueError(f"align must give one of l/r/c for each of {len(headers)} columns, got {align}")
    lines = [_table_line(headers), _table_line([markers[a] for a in align])]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells, expected {len(headers)}")
        lines.append(_table_line([str(cell) for cell in row]))
    return "\n".join(lines) + "\n"


def format_percent(fraction: float, digits: int = 1) -> str:
    """Format a fraction in [0, 1] as a percentage, e.g. 0.8751 -> "87.5%"."""
    return f"{100.0 * fraction:.{digits}f}%"


def format_value(value: Any) -> str:
    """Format a context value for a table cell: mappings as "k: v, ...", lists joined by commas."""
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {format_value(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(format_value, value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_duration(seconds: float) -> str:
    """Format seconds as "1 h 02 min", "3 min 20 s" or "12.3 s"."""
    if seconds >= 3600:
        hours, rest = divmod(round(seconds), 3600)
        return f"{hours} h {rest // 60:02d} min"
    if seconds >= 60:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    return f"{seconds:.1f} s"


def context_section(context: Mapping[str, Any]) -> str:
    """A two-column table of the run's context, skipping `NOTE_KEYS` and None values.

    Keys become labels ("image_size" -> "Image size"); keys ending in "_s" or "_seconds" with a
    number are shown as durations, and keys ending in "size" with a list of integers as
    "224 x 224". Returns "" when nothing is left to show.
    """
    rows = []
    for key, value in context.items():
        if key in NOTE_KEYS or value is None:
            continue
        is_duration = key.endswith(("_s", "_seconds")) and isinstance(value, (int, float))
        label = key.removesuffix("_seconds").removesuffix("_s") if is_duration else key
        if is_duration:
            cell = format_duration(float(value))
        elif key.endswith("size") and isinstance(value, (list, tuple)) and _all_ints(value):
            cell = " x ".join(map(str, value))
        else:
            cell = format_value(value)
        rows.append([label.replace("_", " ").capitalize(), cell])
    if not rows:
        return ""
    return "## Run\n\n" + markdown_table(["Setting", "Value"], rows)


def figures_section(run_dir: Path, plots: Mapping[str, Path]) -> str:
    """Embed each figure with a link relative to `run_dir`, so the run folder can be moved.

    Args:
        run_dir: folder the report is written to.
        plots: {caption: image path}; a relative path is taken as relative to `run_dir`, or to the
            working directory when it names a file there (as `run_dir / "plots" / ...` does when
            `run_dir` itself is relative).

    Returns:
        A "## Figures" section, or "" when `plots` is empty.

    Raises:
        FileNotFoundError: if an image does not exist; a report must not link to nothing.
    """
    if not plots:
        return ""
    blocks = ["## Figures\n"]
    for caption, image in plots.items():
        image = Path(image)
        if not image.is_absolute() and not image.is_file():
            image = Path(run_dir) / image
        if not image.is_file():
            raise FileNotFoundError(f"{image}: figure for the report not found")
        link = quote(Path(os.path.relpath(image, run_dir)).as_posix(), safe="/._-")
        alt = caption.replace("_", " ")
        blocks.append(f"![{alt}]({link})\n")
    return "\n".join(blocks)


def notes_section(context: Mapping[str, Any]) -> str:
    """Sections for the `NOTE_KEYS` in `context` (skipped files, duplicates, free notes).

    A value may be a string, a number (a count), or a list whose items are strings or
    (path, reason) pairs; lists longer than `MAX_LISTED_NOTES` are cut with a count of the rest.
    """
    sections = []
    for key, heading in NOTE_KEYS.items():
        value = context.get(key)
        if value is None or (isinstance(value, (list, tuple, dict)) and not value):
            continue
        if isinstance(value, (list, tuple)):
            lines = [f"- {_note_item(item)}" for item in value[:MAX_LISTED_NOTES]]
            if len(value) > MAX_LISTED_NOTES:
                lines.append(f"- ... and {len(value) - MAX_LISTED_NOTES} more")
            body = "\n".join(lines)
        else:
            body = format_value(value)
        sections.append(f"## {heading}\n\n{body}\n")
    return "\n".join(sections)


def write_markdown_report(run_dir: Path, title: str, sections: Sequence[str]) -> Path:
    """Write `run_dir/report.md` from a title and already-formatted sections (empty ones dropped)."""
    parts = [f"# {title}\n"] + [section.rstrip("\n") + "\n" for section in sections if section.strip()]
    return write_text(Path(run_dir) / REPORT_NAME, "\n".join(parts))


def write_classification_report(
    run_dir: Path, metrics: Mapping[str, Any], plots: Mapping[str, Path], context: Mapping[str, Any]
) -> Path:
    """Write the single-label classification report to `run_dir/report.md`.

    Args:
        run_dir: the run directory; image links are made relative to it.
        metrics: output of `classification_metrics`.
        plots: {caption: PNG path}, e.g. {"confusion matrix": run_dir / "plots/confusion_matrix.png"}.
        context: facts about the run shown as a table (dataset, backbone, strategy, image size,
            split sizes, training time, seed, ...; whatever keys it has), plus optional
            `skipped`, `duplicates` and `notes` shown as sections of their own. An optional
            `title` key replaces the default title.

    Returns:
        The path of the written report.
    """
    context = dict(context)
    title = str(context.pop("title", f"Classification report: {Path(run_dir).name}"))
    sections = [
        context_section(context),
        _classification_results(metrics),
        _per_class_section(metrics),
        _confusions_section(metrics),
        figures_section(Path(run_dir), plots),
        notes_section(context),
    ]
    return write_markdown_report(run_dir, title, sections)


def _classification_results(metrics: Mapping[str, Any]) -> str:
    low, high = metrics["accuracy_ci95"]
    baseline = metrics["baseline"]
    lines = [
        "## Results\n",
        f"**Accuracy {format_percent(metrics['accuracy'])} "
        f"(95% CI {format_percent(low)}-{format_percent(high)}) on {metrics['n_test']} test images; "
        f"majority-class baseline {format_percent(baseline['accuracy'])}.**\n",
        f"- Macro-F1: {metrics['macro_f1']:.3f}",
    ]
    if "top2_accuracy" in metrics:
        lines.append(f"- Top-2 accuracy: {format_percent(metrics['top2_accuracy'])}")
    lines.append(f"- Baseline: always predict `{baseline['class']}` ({baseline['rule']}).")
    return "\n".join(lines) + "\n"


def _per_class_section(metrics: Mapping[str, Any]) -> str:
    rows = [
        [_escape_name(name), f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", s["support"]]
        for name, s in metrics["per_class"].items()
    ]
    text = "## Per class\n\n" + markdown_table(
        ["Class", "Precision", "Recall", "F1", "Support"], rows, align=["l", "r", "r", "r", "r"]
    )
    unseen = [name for name, s in metrics["per_class"].items() if s["support"] == 0]
    if unseen:
        names = ", ".join(map(_escape_name, unseen))
        text += (
            f"\nNo test images for: {names}. Their recall and F1 show as 0 and say nothing about the model.\n"
        )
    return text


def _confusions_section(metrics: Mapping[str, Any], limit: int = 5) -> str:
    # The largest off-diagonal cells are what a reader acts on (relabel, collect more photos),
    # and they are hard to spot in a 20-class matrix image.
    names = list(metrics["per_class"])
    matrix = metrics["confusion_matrix"]
    pairs = [
        (count, names[true], names[pred])
        for true, row in enumerate(matrix)
        for pred, count in enumerate(row)
        if true != pred and count > 0
    ]
    if not pairs:
        return ""
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    rows = [[_escape_name(true), _escape_name(pred), count] for count, true, pred in pairs[:limit]]
    return "## Most frequent confusions\n\n" + markdown_table(
        ["True class", "Predicted as", "Images"], rows, align=["l", "l", "r"]
    )


def _table_line(cells: Sequence[str]) -> str:
    escaped = [cell.replace("|", "\\|").replace("\n", " ") for cell in cells]
    return "| " + " | ".join(escaped) + " |"


def _escape_name(name: str) -> str:
    # Class names come from folder names and may hold Markdown syntax such as `*` or `_`.
    return "".join(f"\\{char}" if char in "\\`*_[]<>#" else char for char in name)


def _note_item(item: Any) -> str:
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return f"`{item[0]}`: {item[1]}"
    return str(item)


def _all_ints(value: Sequence[Any]) -> bool:
    return bool(value) and all(isinstance(item, int) and not isinstance(item, bool) for item in value)
