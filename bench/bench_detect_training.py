"""Detector training steps: the product's `full` strategy (early backbone stages frozen) against
the same detector with every backbone layer trainable.

Both run the same step (FCOS forward on a batch of 8 boards with 60 boxes each, summed losses,
backward, AdamW), under bf16 autocast where the CPU supports it as `ewaste train` does, with
batch-norm statistics frozen as the product's `DetectionModule` keeps them; the two are called in
turn. A Lite0 detector's stride-2 and stride-4 stages hold few weights but run at the highest
resolution, so their gradients are a large share of the backward pass.

Run from the repository root:
    python bench/bench_detect_training.py           # about 2 minutes on 2 cores
    python bench/bench_detect_training.py --quick
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from _common import RESULTS_DIR, describe, machine_facts, median, print_table, time_interleaved, write_json
from ewaste_vision.detect.model import build_detector
from ewaste_vision.detect.module import DetectionModule
from ewaste_vision.hardware import autocast, configure_threads, use_bf16
from ewaste_vision.models.classifier import set_backbone_trainable

BATCH = 8
BOXES_PER_IMAGE = 60


def training_step(size: int, freeze_early: bool, bf16: bool) -> Callable[[], None]:
    """One optimisation step of a fresh Lite0 FCOS (size n) on fixed random boards."""
    detector, _ = build_detector("efficientnet_lite0", 16, "n", size)
    set_backbone_trainable(detector.backbone.body, "efficientnet_lite0", "full", freeze_early=freeze_early)
    detector.train()
    DetectionModule(detector, 1e-4, 0.0, 1).on_train_epoch_start()  # batch norm frozen, as in training
    optimiser = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=generator) for _ in range(BATCH)]
    targets = []
    for _ in range(BATCH):
        corner = torch.rand(BOXES_PER_IMAGE, 2, generator=generator) * size * 0.9
        extent = torch.rand(BOXES_PER_IMAGE, 2, generator=generator) * size * 0.08 + 4
        labels = torch.randint(0, 16, (BOXES_PER_IMAGE,), generator=generator)
        targets.append({"boxes": torch.cat([corner, corner + extent], 1), "labels": labels})

    def step() -> None:
        with autocast(bf16):
            losses = detector(images, targets)
        loss = sum(losses.values())
        optimiser.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        optimiser.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[448, 640])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="one size (448), 1 iteration")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "detect_training.json")
    args = parser.parse_args()
    configure_threads()
    facts_before = machine_facts()
    bf16 = use_bf16("auto")
    sizes = [448] if args.quick else args.sizes
    iterations = 1 if args.quick else args.iterations
    rows, timings = [], {}
    for size in sizes:
        seconds = time_interleaved(
            {
                "all_trainable": training_step(size, False, bf16),
                "product": training_step(size, True, bf16),
            },
            iterations,
        )
        baseline = median(seconds["all_trainable"])
        for path, values in seconds.items():
            rows.append(
                {
                    "size": size,
                    "path": path,
                    "seconds_per_step": round(median(values), 3),
                    "images_per_s": round(BATCH / median(values), 2),
                    "ratio_vs_all_trainable": round(baseline / median(values), 2),
                }
            )
        timings[str(size)] = seconds
    facts = {**facts_before, "load_average_1min_after": machine_facts()["load_average_1min"]}
    print(f"{describe(facts_before)}; bf16 autocast: {bf16}; batch {BATCH}")
    print_table(list(rows[0]), [list(row.values()) for row in rows])
    write_json(args.json, {"machine": facts, "bf16": bf16, "rows": rows, "seconds": timings})


if __name__ == "__main__":
    main()
