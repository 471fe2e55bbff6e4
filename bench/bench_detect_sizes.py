"""Detecting at the training size alone or also at the photos' own size (`detect.scales`).

For a detect run, the size sets `ewaste train` compares are scored on the run's validation split
(the figure training uses to choose) and on its test split (reported, never used to choose), with
mAP@0.5, mAP@0.5:0.95 and 001's counts (IoU > 0.5, confidence > 0.5). Older runs, trained before the
choice existed, get the choice their training would now make; the run itself is not changed. A
run's box classifier (`detect.box_classifier`) re-scores the test boxes of every size set; the
validation figures are the detector's alone, as training scores them.

Run from the repository root:
    python bench/bench_detect_sizes.py runs/detector
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, describe, machine_facts, print_table, write_json
from ewaste_vision.data.split_file import read_split_file
from ewaste_vision.detect.evaluate import choose_detect_sizes, predict_records
from ewaste_vision.detect.metrics import detection_metrics
from ewaste_vision.detect.predictor import Detector
from ewaste_vision.detect.scales import candidate_sizes
from ewaste_vision.hardware import configure_threads


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a detect run directory")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "detect_sizes.json")
    args = parser.parse_args()
    configure_threads()
    trained = Detector.from_run(args.run)
    meta = trained.meta
    records = read_split_file(args.run / "split.csv")
    by_split = {split: [r for r in records if r.split == split] for split in ("val", "test")}
    started = time.perf_counter()
    chosen, val_scores = choose_detect_sizes(trained.model, meta, by_split["val"])
    rows: list[dict[str, Any]] = []
    source = int(meta.extra.get("source_size", meta.image_size))
    for sizes in candidate_sizes(meta.image_size, source):
        detector = trained.at_sizes(sizes)
        predictions, truths, _, _ = predict_records(detector, by_split["test"])
        scores = detection_metrics(predictions, truths, detector.class_names)
        key = "+".join(map(str, sizes))
        rows.append(
            {
                "sizes": key,
                "chosen": sizes == chosen,
                "val_map50": val_scores.get(key),
                "test_map50": scores["map50"],
                "test_map50_95": scores["map50_95"],
                "test_f1": scores["f1"],
                "test_ic_f1": scores["per_class"].get("ic", {}).get("f1"),
            }
        )
    facts = machine_facts()
    print(describe(facts))
    print_table(list(rows[0]), [[_show(v) for v in row.values()] for row in rows])
    write_json(
        args.out,
        {
            "run": str(args.run),
            "seconds": round(time.perf_counter() - started, 1),
            "machine": facts,
            "rows": rows,
        },
    )


def _show(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
