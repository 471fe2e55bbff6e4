"""The box classifier (`detect.box_classifier`): a detect run's test figures without and with it.

For a run trained with a box classifier, both are read from the run. For a run trained without one
(`--no-box-classifier`, or before it existed), one is trained for its detector exactly as
`ewaste train` would (same code, the run's train and validation splits, gamma fitted on
validation) and saved with the detector in `--save` (a copy of the run that `ewaste evaluate` and
`ewaste value` take); the run itself is not changed. With `--refit`, a run that has a box
classifier gets its confidence exponents fitted again by today's code (the same weights), saved
in the copy. Test-split figures: mAP@0.5, mAP@0.5:0.95 and 001's counts (IoU > 0.5, confidence
> 0.5), overall and for `ic`.

Run from the repository root:
    python bench/bench_box_classifier.py runs/detector --save runs/detector-boxes
    python bench/bench_box_classifier.py runs/detector-boxes --refit --save runs/detector-refit
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, describe, machine_facts, print_table, write_json
from ewaste_vision.config import TrainConfig
from ewaste_vision.data.records import ImageRecord
from ewaste_vision.data.split_file import read_split_file
from ewaste_vision.detect.box_classifier import detector_state, load_box_classifier
from ewaste_vision.detect.box_classifier_train import add_box_classifier, fit_box_confidence
from ewaste_vision.detect.evaluate import predict_records
from ewaste_vision.detect.metrics import detection_metrics
from ewaste_vision.detect.model import load_detector
from ewaste_vision.detect.predictor import Detector
from ewaste_vision.hardware import configure_threads, use_bf16
from ewaste_vision.runs import MODEL_FILE, ModelMeta, read_model_file, save_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a detect run directory")
    parser.add_argument("--save", type=Path, help="where the run with a new box classifier goes")
    parser.add_argument(
        "--refit", action="store_true", help="fit the box classifier's exponents again (needs --save)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "box_classifier.json")
    args = parser.parse_args()
    configure_threads()
    facts = machine_facts()
    state, meta = read_model_file(args.run / MODEL_FILE)
    records = read_split_file(args.run / "split.csv")
    with_boxes = args.run
    training: dict[str, Any] = {}
    if args.refit and "box_classifier" not in meta.extra:
        parser.error("--refit: this run has no box classifier; give --save DIR alone to train one")
    if "box_classifier" not in meta.extra or args.refit:
        if args.save is None:
            parser.error("give --save DIR for the run with a new or refitted box classifier")
        copy = _add_to_copy if "box_classifier" not in meta.extra else _refit_copy
        training = copy(args.run, args.save, state, meta, records)
        with_boxes = args.save
    test = [r for r in records if r.split == "test"]
    full = Detector.from_run(with_boxes)
    alone = Detector(full.model, full.meta)
    rows = []
    for name, detector in (("detector alone", alone), ("with box classifier", full)):
        started = time.perf_counter()
        predictions, truths, _, _ = predict_records(detector, test)
        seconds = time.perf_counter() - started
        scores = detection_metrics(predictions, truths, detector.class_names)
        ic = scores["per_class"].get("ic", {})
        rows.append(
            {
                "model": name,
                "test_map50": scores["map50"],
                "test_map50_95": scores["map50_95"],
                "test_f1": scores["f1"],
                "test_ic_f1": ic.get("f1"),
                "test_ic_precision": ic.get("precision"),
                "test_ic_recall": ic.get("recall"),
                "images_per_s": round(len(test) / seconds, 2),
            }
        )
    print(describe(facts))
    print_table(list(rows[0]), [[_show(v) for v in row.values()] for row in rows])
    write_json(
        args.out,
        {
            "run": str(args.run),
            "saved": str(with_boxes),
            "settings": full.meta.extra.get("box_classifier"),
            "training": training,
            "machine": facts,
            "rows": rows,
        },
    )


def _add_to_copy(
    run: Path, save: Path, state: dict[str, Any], meta: ModelMeta, records: list[ImageRecord]
) -> dict[str, Any]:
    """Copy `run` to `save`, give the copy a box classifier trained as `ewaste train` does, and
    return what its training reports."""
    _copy_run(run, save)
    detector = load_detector(detector_state(state), meta, run / MODEL_FILE)
    splits = {split: [r for r in records if r.split == split] for split in ("train", "val")}
    config = TrainConfig(data=str(run), out=str(save))
    merged, facts = add_box_classifier(
        detector, state, meta, splits, config, save / "box_classifier", "cpu", use_bf16("auto"), True
    )
    save_model(save, merged, meta)
    return facts


def _refit_copy(
    run: Path, save: Path, state: dict[str, Any], meta: ModelMeta, records: list[ImageRecord]
) -> dict[str, Any]:
    """Copy `run` to `save` with its box classifier's exponents fitted again on validation."""
    _copy_run(run, save)
    detector = load_detector(detector_state(state), meta, run / MODEL_FILE)
    box_classifier = load_box_classifier(state, meta)
    assert box_classifier is not None
    val = [r for r in records if r.split == "val"]
    settings, facts = fit_box_confidence(detector, box_classifier.network, meta, val, box_classifier.settings)
    meta.extra["box_classifier"] = settings.to_dict()
    save_model(save, state, meta)
    return facts


def _copy_run(run: Path, save: Path) -> None:
    if save.exists():
        shutil.rmtree(save)
    shutil.copytree(run, save, ignore=shutil.ignore_patterns("checkpoints", "repeats"))


def _show(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
