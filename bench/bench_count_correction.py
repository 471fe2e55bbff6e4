"""Ways to turn a detector's boxes into component counts for the value model, scored on a lot.

The product counts boxes above 001's confidence (0.5) and corrects each class's count to
n x precision / recall (`value.uncertainty`), with the validation split's rates when `ewaste
evaluate` scores the test split (here too), with the run's test rates in `ewaste value`. The bench sets
that beside counts from calibrated confidences: a box's chance of being a true component given
its confidence is fitted on the validation split (Platt scaling on the logit, or isotonic
regression), the expected number of true components found is the sum of those chances over every
box the detector returns, and dividing by the share of validation components any box found
gives the expected count. No 0.5 cut is involved, so a shift of confidences between splits moves
the estimate less than it moves a recall measured at 0.5, or so the idea goes.

Test-split lot values (the packaged price table) per method against the value of the true boxes.
Run from the repository root:
    python bench/bench_count_correction.py runs/detector-boxes runs/detector
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# scikit-learn comes with grad-cam; the bench alone uses it.
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from _common import RESULTS_DIR, describe, machine_facts, print_table, write_json
from ewaste_vision.data.split_file import read_split_file
from ewaste_vision.detect.evaluate import predict_records
from ewaste_vision.detect.metrics import DetectionPrediction, class_detections, match_detections
from ewaste_vision.detect.predictor import Detector
from ewaste_vision.hardware import configure_threads
from ewaste_vision.value import PriceTable, load_price_table

CUT = 0.5
"""001's confidence cut for counting a box."""

Scored = tuple[np.ndarray, np.ndarray]
"""Confidences [N] of one class's boxes over a split, and whether each is a true positive [N]."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, nargs="+", help="detect run directories")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "count_correction.json")
    args = parser.parse_args()
    configure_threads()
    facts = machine_facts()
    table = load_price_table()
    results, rows = [], []
    for run in args.runs:
        result = compare_methods(run, table)
        results.append(result)
        truth = result["lot"]["true"]
        rows.append(
            [str(run)]
            + [f"{value:.2f} ({(value / truth - 1) * 100:+.1f}%)" for value in result["lot"].values()]
        )
    write_json(args.out, {"machine": facts, "currency": table.currency, "runs": results})
    print(f"Test lot value in {table.currency} ({describe(facts)})")
    print_table(["run", *results[0]["lot"]], rows)


def compare_methods(run: Path, table: PriceTable) -> dict[str, Any]:
    """Test lot value and per-class counts by each method, with rates fitted on validation."""
    detector = Detector.from_run(run)
    records = read_split_file(run / "split.csv")
    split_scores = {}
    for split in ("val", "test"):
        predictions, truths, _, _ = predict_records(detector, [r for r in records if r.split == split])
        split_scores[split] = {
            name: scored_boxes(predictions, truths, label)
            for label, name in enumerate(detector.class_names)
            if table.value_class_of(name) is not None
        }
    lot: dict[str, float] = {}
    classes = {}
    for name, (val, val_true) in split_scores["val"].items():
        (test, test_true) = split_scores["test"][name]
        counts = class_counts(val, val_true, test, test_true)
        classes[name] = {key: round(value, 1) for key, value in counts.items()}
        piece = table.piece_value(str(table.value_class_of(name)))
        for method, count in counts.items():
            lot[method] = lot.get(method, 0.0) + count * piece
    return {"run": str(run), "lot": lot, "counts": classes}


def scored_boxes(
    predictions: Sequence[DetectionPrediction], truths: Sequence[dict[str, torch.Tensor]], label: int
) -> tuple[Scored, int]:
    """One class's boxes over a split, every confidence the detector returned, and its true count."""
    scores, hits, n_true = [], [], 0
    for found, truth in zip(predictions, truths, strict=True):
        boxes, confidences = class_detections(found, label)
        true_boxes = truth["boxes"][truth["labels"] == label]
        scores.append(confidences.float().numpy())
        hits.append(match_detections(boxes, true_boxes).numpy())
        n_true += len(true_boxes)
    return (np.concatenate(scores), np.concatenate(hits)), n_true


def class_counts(val: Scored, val_true: int, test: Scored, test_true: int) -> dict[str, float]:
    """The test count of one class by each method, every rate taken from validation."""
    val_scores, val_hits = val
    test_scores = test[0]
    confident = val_scores > CUT
    precision = float(val_hits[confident].mean()) if confident.any() else 0.0
    recall = float(val_hits[confident].sum()) / max(val_true, 1)
    found_any = float(val_hits.sum()) / max(val_true, 1)  # share of components any box found
    counted = float((test_scores > CUT).sum())
    counts = {"true": float(test_true), "counted": counted}
    # A rate of 0 cannot scale a count up: the count is left as counted (and the lot total usable).
    counts["n x precision / recall"] = counted * precision / recall if recall > 0 else counted
    for method, fit in (("calibrated (Platt)", _platt), ("calibrated (isotonic)", _isotonic)):
        found = float(fit(val_scores, val_hits)(test_scores).sum())
        counts[method] = found / found_any if found_any > 0 else found
    return counts


def _platt(scores: np.ndarray, hits: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    if hits.all() or not hits.any():  # one outcome only: nothing to fit
        return lambda new: np.full(len(new), float(hits.mean()) if len(hits) else 0.0)
    model = LogisticRegression(C=100.0).fit(_logit(scores), hits)
    return lambda new: model.predict_proba(_logit(new))[:, 1]


def _isotonic(scores: np.ndarray, hits: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, hits)
    return lambda new: model.predict(new)


def _logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(scores, 1e-4, 1 - 1e-4)
    return np.log(clipped / (1 - clipped))[:, None]  # [N, 1]


if __name__ == "__main__":
    main()
