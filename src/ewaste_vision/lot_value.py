"""`ewaste value`: detect the components on every board of a lot and turn them into money.

Detections above 001's confidence (0.5) are valued with a price table; counts are corrected with
the run's own test precision and recall, which also give each board and the lot a 90% interval.
Where the images carry YOLO labels, the value of the true boxes is computed too, so the error of
the estimate can be read off the same report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ewaste_vision.data.yolo import label_path_for, parse_label_file
from ewaste_vision.detect.data import boxes_to_pixels
from ewaste_vision.detect.draw import SHOWN_CONFIDENCE
from ewaste_vision.detect.metrics import DetectionPrediction
from ewaste_vision.detect.predictor import Detector
from ewaste_vision.engines import EngineSettings
from ewaste_vision.inference import expand_image_paths
from ewaste_vision.runs import resolve_run_dir
from ewaste_vision.value import (
    BoardValue,
    Detection,
    DetectorRates,
    LotUncertainty,
    PriceTable,
    ValueComparison,
    compare_with_ground_truth,
    load_price_table,
    lot_values,
    value_interval,
    write_lot_report,
)


@dataclass
class LotResult:
    """What `value_lot` found and where it wrote it."""

    boards: list[BoardValue]
    uncertainty: LotUncertainty | None
    comparison: ValueComparison | None
    report: Path
    skipped: list[str]


def detections_for_value(
    found: DetectionPrediction, class_names: Sequence[str], min_score: float = SHOWN_CONFIDENCE
) -> list[Detection]:
    """The confident detections (001's rule: confidence > 0.5) as value-model detections."""
    keep = found["scores"] > min_score
    return [
        Detection(class_names[int(label)], tuple(box), float(score))
        for box, label, score in zip(
            found["boxes"][keep].tolist(),
            found["labels"][keep].tolist(),
            found["scores"][keep].tolist(),
            strict=True,
        )
    ]


def rates_from_metrics(per_class: Mapping[str, Mapping[str, Any]]) -> dict[str, DetectorRates]:
    """Test precision and recall per class as `DetectorRates`, with the counts they rest on.

    A class the test set never showed or the detector never predicted has no rates (its counts
    cannot be corrected, and `value_interval` says so if it is valued). A measured recall of 0 is
    replaced by half a hit, 0.5 / (true count), so a count can still be corrected.
    """
    rates = {}
    for name, values in per_class.items():
        precision, recall = values.get("precision"), values.get("recall")
        tp, fp, fn = (int(values.get(k) or 0) for k in ("tp", "fp", "fn"))
        if precision is None or recall is None or tp + fn == 0:
            continue
        rates[name] = DetectorRates(
            precision=float(precision),
            recall=max(float(recall), 0.5 / (tp + fn)),
            n_predicted=tp + fp,
            n_true=tp + fn,
        )
    return rates


def value_lot(
    run_dir: Path | str,
    inputs: Sequence[Path | str],
    out_dir: Path | str,
    prices: Path | str | None = None,
    size_scaling: bool = False,
    table: PriceTable | None = None,
    engine: str | EngineSettings = "local",
) -> LotResult:
    """Detect, value and report a lot of board images (files or folders) with the run's detector.

    `engine="ray"` detects on Ray (see `predict.predict_paths`). With either engine finished
    shards of 32 boards wait in `OUT/.parts/` until the lot is whole, so the same command run
    again after a kill detects only the boards it had not finished; the lot is valued the same way.
    """
    from ewaste_vision.engines import as_engine

    settings = as_engine(engine)
    run_dir = resolve_run_dir(run_dir)
    detector = Detector.from_run(run_dir)
    table = table or load_price_table(prices)
    paths = expand_image_paths(inputs)
    parts = Path(out_dir) / ".parts"
    if settings.name == "ray":
        from ewaste_vision.engines.ray_engine import RayEngine

        outputs, unread = RayEngine.from_settings(settings, run_dir, parts).detect_files(paths)
    else:
        from ewaste_vision.engines.shards import detect_in_shards

        outputs, unread = detect_in_shards(detector, run_dir, paths, parts)
    skipped = [f"{path}: {reason}" for path, reason in unread]
    predicted: dict[str, list[Detection]] = {}
    truth: dict[str, list[Detection]] = {}
    for output in outputs:
        key = str(output.path)
        predicted[key] = detections_for_value(output.found, detector.class_names)
        labelled = _true_detections(Path(output.path), output.width, output.height, detector.class_names)
        if labelled is not None:
            truth[key] = labelled
    boards = lot_values(predicted, table, size_scaling=size_scaling)
    metrics = _read_metrics(run_dir)
    rates = rates_from_metrics(metrics.get("per_class") or {})
    valued = {b for board in boards for b in board.counts if table.value_class_of(b) is not None}
    uncertainty = value_interval(boards, rates) if boards and valued <= set(rates) else None
    comparison = None
    if truth and set(truth) == set(predicted):
        comparison = compare_with_ground_truth(boards, lot_values(truth, table, size_scaling=size_scaling))
    report = write_lot_report(Path(out_dir), boards, table, metrics, uncertainty, comparison)
    return LotResult(boards, uncertainty, comparison, report, skipped)


def _true_detections(
    path: Path, width: int, height: int, class_names: Sequence[str]
) -> list[Detection] | None:
    """The image's YOLO boxes as detections (score 1), or None when it has no label file."""
    label_file = label_path_for(path)
    if not label_file.is_file():
        return None
    boxes, _problems = parse_label_file(label_file, len(class_names))
    pixels = boxes_to_pixels(boxes, width, height)
    return [
        Detection(class_names[int(label)], tuple(box), 1.0)
        for box, label in zip(pixels["boxes"].tolist(), pixels["labels"].tolist(), strict=True)
    ]


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    import json

    path = run_dir / "metrics.json"
    return dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else {}
