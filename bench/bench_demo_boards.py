"""The demo's board model alone: draw its synthetic boards, train it, score it (issue 23).

Draws the boards `ewaste demo` draws (or another look, via the options), trains the multi-label
model with the demo's settings, and prints per seed the test micro-F1, the predict-every-class
baseline beside it, and the heatmaps' pointing game with its centre-Gaussian baseline, so a change
to the boards or the settings can be judged without running the whole demo.

Run from the repository root:
    python bench/bench_demo_boards.py --seeds 0 1 2                            # the demo's boards
    python bench/bench_demo_boards.py --field-mm 72 --count-range 2 10 --seeds 0   # the old ones
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import describe, machine_facts, write_json
from ewaste_vision.config import TrainConfig
from ewaste_vision.data.synth import write_synthetic_boards
from ewaste_vision.demo import DEMO_BOARD_LOOK, DEMO_BOARD_TRAINING, DEMO_BOARDS
from ewaste_vision.training.trainer import train


def pointing(metrics: dict[str, Any]) -> tuple[float, float, int]:
    """Pointing game over all (image, class present) pairs, its centre baseline, and the pairs."""
    per_class = metrics.get("cam_pointing", {}).values()
    pairs = sum(c["n"] for c in per_class)
    if not pairs:
        return float("nan"), float("nan"), 0
    cam = sum(c["cam"] * c["n"] for c in per_class) / pairs
    centre = sum(c["centre_baseline"] * c["n"] for c in per_class) / pairs
    return cam, centre, pairs


def run_seed(work: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    data = write_synthetic_boards(
        work / f"boards-{seed}",
        args.boards,
        seed=seed,
        field_mm=args.field_mm,
        count_range=tuple(args.count_range),
    )
    drawn = time.perf_counter()
    settings: dict[str, Any] = {"strategy": args.strategy, "image_size": args.image_size}
    settings["extra"] = dict(DEMO_BOARD_TRAINING.get("extra", {}))  # the demo's ROAD images
    if args.max_epochs:
        settings["max_epochs"] = args.max_epochs
    config = TrainConfig(
        data=str(data.parent), out=str(work / f"run-{seed}"), task="multilabel", seed=seed, **settings
    )
    result = train(config, progress=False)
    assert result is not None  # one process
    metrics = result.metrics
    cam, centre, pairs = pointing(metrics)
    return {
        "seed": seed,
        "micro_f1": round(metrics["micro_f1"], 3),
        "micro_f1_interval": metrics.get("micro_f1_interval"),
        "baseline_micro_f1": round(metrics["baseline_micro_f1"], 3),
        "macro_f1": round(metrics["macro_f1"], 3),
        "map": round(metrics["map"], 3),
        "pointing": round(cam, 3),
        "pointing_centre_baseline": round(centre, 3),
        "pointing_pairs": pairs,
        "n_test": metrics["n_test"],
        "draw_s": round(drawn - started, 1),
        "train_and_evaluate_s": round(time.perf_counter() - drawn, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--boards", type=int, default=DEMO_BOARDS)
    parser.add_argument("--field-mm", type=float, default=DEMO_BOARD_LOOK["field_mm"])
    parser.add_argument("--count-range", type=int, nargs=2, default=list(DEMO_BOARD_LOOK["count_range"]))
    parser.add_argument("--strategy", default=DEMO_BOARD_TRAINING["strategy"])
    parser.add_argument("--image-size", type=int, default=DEMO_BOARD_TRAINING["image_size"])
    parser.add_argument("--max-epochs", type=int, default=0, help="fine-tunes only (0: the task's own)")
    parser.add_argument("--json", type=Path, help="also write the rows and the machine here")
    args = parser.parse_args()
    facts = machine_facts()
    print(describe(facts))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            row = run_seed(Path(folder), seed, args)
            rows.append(row)
            print(row, flush=True)
    if args.json:
        settings = {**vars(args), "json": str(args.json)}
        write_json(args.json, {"machine": facts, "settings": settings, "rows": rows})


if __name__ == "__main__":
    main()
