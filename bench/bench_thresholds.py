"""How multi-label decision thresholds should be tuned on a small validation split.

For each multilabel run given, probabilities on its split's validation and test images are computed
once; thresholds are tuned on validation three ways and scored once on test:

- `own`: each class's F1-best threshold (the product's rule);
- `shared`: one threshold for all classes, the micro-F1-best;
- `shrunk`: each class's own threshold pulled toward the shared one by its validation positives,
  n / (n + SHRINK_POSITIVES) of the way.

With more than one run, the runs' mean probabilities are scored as one more model (an ensemble).

Run from the repository root, with runs trained on the same grouped split:
    python bench/bench_thresholds.py pcb-split runs/components runs/components-512
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _common import RESULTS_DIR, describe, machine_facts, print_table, write_json
from ewaste_vision.data.yolo import multi_hot, read_yolo_dataset
from ewaste_vision.hardware import configure_threads
from ewaste_vision.inference import Predictor
from ewaste_vision.report.multilabel import multilabel_metrics, shared_threshold, tune_thresholds

# A class's own threshold counts as much as the shared one once it has this many positives.
SHRINK_POSITIVES = 50

RULES = ("own", "shared", "shrunk")


def thresholds_by_rule(probs: torch.Tensor, targets: torch.Tensor, rule: str) -> list[float]:
    """Thresholds tuned on (validation) probabilities [N, C] under one of `RULES`."""
    own, shared = tune_thresholds(probs, targets), shared_threshold(probs, targets)
    if rule == "own":
        return own
    if rule == "shared":
        return [shared] * len(own)
    positives = (targets > 0.5).sum(0).tolist()
    return [
        round(shared + n / (n + SHRINK_POSITIVES) * (threshold - shared), 2)
        for n, threshold in zip(positives, own, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the grouped YOLO split the runs were trained on")
    parser.add_argument("runs", type=Path, nargs="+", help="multilabel runs")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "thresholds.json", help="where results go")
    args = parser.parse_args()
    configure_threads()
    dataset = read_yolo_dataset(args.data)
    classes = len(dataset.class_names)
    splits = {s: dataset.in_split(s) for s in ("train", "val", "test")}
    targets = {s: multi_hot(records, classes) for s, records in splits.items()}
    scored: dict[str, dict[str, torch.Tensor]] = {}
    for run in args.runs:
        predictor = Predictor.from_run(run)
        scored[run.name] = {}
        for split in ("val", "test"):
            scored[run.name][split], kept, _ = predictor.predict_files([r.path for r in splits[split]])
            assert len(kept) == len(splits[split]), f"unreadable images in the {split} split"
    if len(args.runs) > 1:
        runs = list(scored.values())
        scored["mean of the runs"] = {
            split: torch.stack([probs[split] for probs in runs]).mean(0) for split in ("val", "test")
        }
    rows = []
    for name, probs in scored.items():
        for rule in RULES:
            thresholds = thresholds_by_rule(probs["val"], targets["val"], rule)
            metrics = multilabel_metrics(
                targets["test"], probs["test"], dataset.class_names, thresholds, targets["train"]
            )
            rows.append(
                {
                    "run": name,
                    "thresholds": rule,
                    "micro_f1": round(metrics["micro_f1"], 3),
                    "micro_f1_interval": [round(v, 3) for v in metrics["micro_f1_interval"]],
                    "macro_f1": round(metrics["macro_f1"], 3),
                    "map": round(metrics["map"], 3),
                }
            )
    facts = machine_facts()
    print(describe(facts))
    print_table(
        ["run", "thresholds", "test micro-F1", "95% interval", "macro-F1", "mAP"],
        [
            [r["run"], r["thresholds"], r["micro_f1"], r["micro_f1_interval"], r["macro_f1"], r["map"]]
            for r in rows
        ],
    )
    write_json(args.json, {"machine": facts, "shrink_positives": SHRINK_POSITIVES, "rows": rows})


if __name__ == "__main__":
    main()
