"""Score a detector run on its test split: 001's counting rule, mAP, drawn predictions, a report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.models.detection import FCOS

from ewaste_vision.data.records import ImageRecord
from ewaste_vision.data.split_file import read_split_file
from ewaste_vision.detect.data import boxes_to_pixels
from ewaste_vision.detect.draw import draw_detections
from ewaste_vision.detect.metrics import DetectionPrediction, detection_metrics, summarise_repeats
from ewaste_vision.detect.predictor import Detector
from ewaste_vision.detect.scales import candidate_sizes, choose_sizes
from ewaste_vision.detect.tile_merge import ArrayDetections
from ewaste_vision.detect.tiling import as_arrays, as_tensors
from ewaste_vision.engines import EngineSettings
from ewaste_vision.errors import DataError
from ewaste_vision.io.atomic import write_json
from ewaste_vision.model_meta import ModelMeta
from ewaste_vision.report.markdown import (
    context_section,
    figures_section,
    format_value,
    markdown_table,
    notes_section,
    write_markdown_report,
)
from ewaste_vision.report.plots import plot_learning_curves

DRAWN_IMAGES = 6
"""Test images drawn with their predictions for the report."""


def predict_records(
    detector: Detector, records: Sequence[ImageRecord], runner: Any = None
) -> tuple[list[DetectionPrediction], list[dict[str, torch.Tensor]], list[ImageRecord], list[str]]:
    """Detections and ground truth (pixel boxes) for each readable record; unreadable files are
    skipped and listed. `runner` is another engine's `detect_files` owner (e.g. `RayEngine`)."""
    from ewaste_vision.engines import local

    paths = [record.path for record in records]
    if runner is not None:
        outputs, unread = runner.detect_files(paths)
    else:
        outputs, unread = local.detect_files(detector, paths)
    by_path = {str(record.path): record for record in records}
    predictions: list[DetectionPrediction] = []
    truths: list[dict[str, torch.Tensor]] = []
    kept: list[ImageRecord] = []
    for output in outputs:
        record = by_path[str(output.path)]
        predictions.append(output.found)
        truths.append(boxes_to_pixels(record.boxes, output.width, output.height))
        kept.append(record)
    return predictions, truths, kept, [f"{path}: {reason}" for path, reason in unread]


def choose_detect_sizes(
    model: FCOS, meta: ModelMeta, records: Sequence[ImageRecord]
) -> tuple[list[int], dict[str, float]]:
    """The input sizes a freshly trained detector keeps (see `detect.scales`), by validation
    mAP@0.5 on `records`, with each candidate's figure; the training size alone without records."""
    candidates = candidate_sizes(meta.image_size, int(meta.extra.get("source_size", meta.image_size)))
    if not records or len(candidates) == 1:
        return [meta.image_size], {}

    truths: list[dict[str, torch.Tensor]] = []

    def detect_at(size: int) -> list[ArrayDetections]:
        detector = Detector(model, replace(meta, extra={**meta.extra, "detect_sizes": [size]}))
        found, truths[:], _, _ = predict_records(detector, records)
        return [as_arrays(f) for f in found]

    def score(found: list[ArrayDetections]) -> float:
        predictions = [as_tensors(f, "cpu") for f in found]
        return float(detection_metrics(predictions, truths, meta.class_names)["map50"] or 0.0)

    return choose_sizes(candidates, detect_at, score, model.nms_thresh, model.detections_per_img)


def evaluate_detector(
    run_dir: Path | str,
    split: str = "test",
    context: Mapping[str, Any] | None = None,
    progress: bool = False,
    engine: str | EngineSettings = "local",
) -> tuple[dict[str, Any], Path]:
    """Score the detector in `run_dir` on `split` of its own split.csv; write metrics.json,
    drawn predictions, curves and report.md into the run. Returns the metrics and the report.

    `engine="ray"` runs the detector on Ray (see `predict.predict_paths`)."""
    from ewaste_vision.engines import as_engine

    settings = as_engine(engine)
    run_dir = Path(run_dir)
    detector = Detector.from_run(run_dir)
    runner = None
    if settings.name == "ray":
        from ewaste_vision.engines.ray_engine import RayEngine

        runner = RayEngine.from_settings(settings, run_dir, run_dir / ".ray-parts", progress)
    records = [r for r in read_split_file(run_dir / "split.csv") if r.split == split]
    if not records:
        raise DataError(f"{run_dir}: no images in the {split} split")
    predictions, truths, kept, skipped = predict_records(detector, records, runner)
    metrics = detection_metrics(predictions, truths, detector.class_names)
    metrics.update({"task": "detect", "split": split, "skipped_files": len(skipped)})
    # Counts on the evaluated split are corrected with rates measured on another split, so the
    # corrected error below is not flattered by correcting the test set with its own errors.
    rates_split = "val" if split != "val" else "train"
    rates = correction_rates(
        detector, [r for r in read_split_file(run_dir / "split.csv") if r.split == rates_split]
    )
    metrics["correction_rates"] = {"split": rates_split, "per_class": rates}
    metrics["value_vs_truth"] = value_against_truth(
        predictions, truths, kept, detector.class_names, rates, rates_split
    )
    write_json(run_dir / "metrics.json", metrics)

    plots: dict[str, Path] = {}
    log_file = run_dir / "logs" / "metrics.csv"
    if log_file.is_file():
        plots["Losses and validation mAP@0.5 per epoch"] = plot_learning_curves(
            log_file, run_dir / "plots" / "learning_curves.png"
        )
    for index, (record, found) in enumerate(zip(kept[:DRAWN_IMAGES], predictions, strict=False)):
        target = run_dir / "plots" / f"detections_{index}.jpg"
        draw_detections(detector.display_image(record.path), found, detector.class_names, target)
        plots[f"Detections on {record.path.name} (confidence > 0.5)"] = target
    sections = [
        _results_section(metrics),
        _per_class_section(metrics),
        context_section({**(context or {}), "run_dir": str(run_dir), "evaluated_on": f"split {split}"}),
        figures_section(run_dir, plots),
        notes_section({**(context or {}), "skipped": [*(context or {}).get("skipped", []), *skipped]}),
    ]
    report = write_markdown_report(run_dir, "Component detection", sections)
    return metrics, report


def correction_rates(detector: Detector, records: Sequence[ImageRecord]) -> dict[str, dict[str, float]]:
    """Per-class precision and recall (001's rule) with their counts on `records`, as
    `rates_from_metrics` reads them; empty when there are no records."""
    if not records:
        return {}
    predictions, truths, _, _ = predict_records(detector, records)
    per_class = detection_metrics(predictions, truths, detector.class_names)["per_class"]
    keys = ("precision", "recall", "tp", "fp", "fn")
    return {name: {key: values.get(key) for key in keys} for name, values in per_class.items()}


def value_against_truth(
    predictions: Sequence[DetectionPrediction],
    truths: Sequence[dict[str, torch.Tensor]],
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    rates: Mapping[str, Mapping[str, Any]] | None = None,
    rates_split: str = "val",
) -> dict[str, Any]:
    """Board values (the packaged price table) from predicted boxes against the true boxes: the
    error per board (median, 90th percentile of |relative error|) and on the lot total, as
    counted and, given per-class `rates` from another split, after count correction with the
    share of boards and of the lot whose true value falls inside the 90% interval."""
    from ewaste_vision.lot_value import detections_for_value, rates_from_metrics
    from ewaste_vision.value import compare_with_ground_truth, load_price_table, lot_values, value_interval

    table = load_price_table()
    names = [str(r.path) for r in records]
    predicted = {n: detections_for_value(p, class_names) for n, p in zip(names, predictions, strict=True)}
    true_scores = [{**t, "scores": torch.ones(len(t["labels"]))} for t in truths]
    truth = {
        n: detections_for_value(t, class_names, min_score=0.0)  # type: ignore[arg-type]
        for n, t in zip(names, true_scores, strict=True)
    }
    boards, true_boards = lot_values(predicted, table), lot_values(truth, table)
    comparison = compare_with_ground_truth(boards, true_boards)
    result: dict[str, Any] = {
        "currency": table.currency,
        "price_date": table.date,
        "median_abs_relative_error": comparison.median_abs_relative_error,
        "p90_abs_relative_error": comparison.p90_abs_relative_error,
        "lot_predicted": comparison.lot_predicted,
        "lot_true": comparison.lot_true,
        "lot_relative_error": comparison.lot_relative_error,
        "boards_without_true_value": comparison.n_zero_truth,
    }
    try:
        uncertainty = value_interval(boards, rates_from_metrics(rates or {}))
    except ValueError as exc:  # a detected valued class the other split never showed
        result["corrected"] = {"rates_split": rates_split, "not_computed": str(exc)}
        return result
    expected = {interval.image: interval for interval in uncertainty.boards}
    corrected_boards = [replace(b, value=expected[b.image].expected) for b in boards]
    corrected = compare_with_ground_truth(corrected_boards, true_boards)
    true_value = {board.image: board.value for board in true_boards}
    inside = [expected[n].low <= true_value[n] <= expected[n].high for n in expected]
    lot = uncertainty.lot
    result["corrected"] = {
        "rates_split": rates_split,
        "median_abs_relative_error": corrected.median_abs_relative_error,
        "p90_abs_relative_error": corrected.p90_abs_relative_error,
        "lot_predicted": corrected.lot_predicted,
        "lot_relative_error": corrected.lot_relative_error,
        "lot_interval": [lot.low, lot.high],
        "lot_true_inside_interval": bool(lot.low <= comparison.lot_true <= lot.high),
        "boards_true_inside_interval": float(np.mean(inside)) if inside else None,
    }
    return result


def summarise_repeat_runs(
    run_dir: Path, runs: list[dict[str, Any]], context: Mapping[str, Any]
) -> tuple[dict[str, Any], Path]:
    """Mean and standard deviation over seeds, added to the first run's metrics and report."""
    summary = summarise_repeats(runs)
    metrics = {**runs[0], "repeats": summary}
    write_json(run_dir / "metrics.json", metrics)
    rows = []
    for key in ("map50", "map50_95", "precision", "recall", "f1"):
        mean, std = summary.get("mean", {}).get(key), summary.get("std", {}).get(key)
        rows.append([key, format_value(mean), format_value(std)])
    section = f"## Over {len(runs)} seeds\n\n" + markdown_table(
        ["metric", "mean", "standard deviation"], rows
    )
    report = run_dir / "report.md"
    text = report.read_text(encoding="utf-8") if report.is_file() else "# Component detection\n"
    head, _, rest = text.partition("\n## ")
    write_markdown_report(run_dir, head.lstrip("# ").strip(), [section, "## " + rest if rest else ""])
    return metrics, report


def _results_section(metrics: Mapping[str, Any]) -> str:
    rows = [
        ["mAP@0.5", format_value(metrics.get("map50"))],
        ["mAP@0.5:0.95", format_value(metrics.get("map50_95"))],
        ["precision (IoU > 0.5, confidence > 0.5)", format_value(metrics.get("precision"))],
        ["recall", format_value(metrics.get("recall"))],
        ["F1", format_value(metrics.get("f1"))],
        ["test images", format_value(metrics.get("n_images"))],
    ]
    value = metrics.get("value_vs_truth") or {}
    if value:
        currency = value.get("currency", "")
        rows += [
            [
                f"lot value from predicted boxes ({currency}, prices of {value.get('price_date')})",
                format_value(value.get("lot_predicted")),
            ],
            [f"lot value from true boxes ({currency})", format_value(value.get("lot_true"))],
            ["lot value error (relative)", format_value(value.get("lot_relative_error"))],
            [
                "board value error, median / 90th percentile (|relative|)",
                f"{format_value(value.get('median_abs_relative_error'))} / "
                f"{format_value(value.get('p90_abs_relative_error'))}",
            ],
        ]
        corrected = value.get("corrected") or {}
        if "lot_predicted" in corrected:
            low, high = corrected["lot_interval"]
            rows += [
                [
                    f"lot value, counts corrected with {corrected['rates_split']}-split precision/recall",
                    f"{format_value(corrected['lot_predicted'])} "
                    f"(90% interval {format_value(low)} to {format_value(high)})",
                ],
                ["corrected lot value error (relative)", format_value(corrected.get("lot_relative_error"))],
                [
                    "corrected board value error, median / 90th percentile",
                    f"{format_value(corrected.get('median_abs_relative_error'))} / "
                    f"{format_value(corrected.get('p90_abs_relative_error'))}",
                ],
                [
                    "boards whose true value is inside their 90% interval",
                    format_value(corrected.get("boards_true_inside_interval")),
                ],
            ]
        elif corrected:
            rows.append(["corrected lot value", f"not computed: {corrected.get('not_computed')}"])
    return "## Results\n\n" + markdown_table(["metric", "value"], rows)


def _per_class_section(metrics: Mapping[str, Any]) -> str:
    rows = []
    for name, values in (metrics.get("per_class") or {}).items():
        rows.append(
            [name]
            + [
                format_value(values.get(key))
                for key in ("precision", "recall", "f1", "ap50", "tp", "fp", "fn")
            ]
        )
    if not rows:
        return ""
    return "## Per class\n\n" + markdown_table(
        ["class", "precision", "recall", "F1", "AP@0.5", "TP", "FP", "FN"], rows
    )
