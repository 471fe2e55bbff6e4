"""Grad-CAM speed: the toolkit's all-class Grad-CAM against plain inference and pytorch-grad-cam.

All paths run on the same synthetic batch in one process, called in turn, so their ratios are fair
on a busy machine. Every path is fp32, eager, contiguous, untrained weights (speed does not depend
on them):

    plain_inference   `torch.no_grad()` forward: the logits, nothing else (the baseline)
    fast_all_classes  `all_class_gradcam(model, images)` for every class, then
                      `upsample_and_normalise` to the input size: one backbone pass without a graph
                      and one batched backward through the head
    pgc_per_class     pytorch-grad-cam's `GradCAM(model, [layer4])` called once per class with
                      `ClassifierOutputTarget(k)`: a forward and a full backward per class

Targets: fast_all_classes <= 1.3x plain_inference's time; pgc_per_class >= 20x fast_all_classes's
time. The bench also reports the largest difference between the two Grad-CAMs' normalised maps.

Run from the repository root:
    python bench/bench_gradcam.py            # full run, about 4 minutes on 2 cores
    python bench/bench_gradcam.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from _common import RESULTS_DIR, describe, machine_facts, median, print_table, time_interleaved, write_json
from ewaste_vision.explain.gradcam import all_class_gradcam, upsample_and_normalise
from ewaste_vision.hardware import configure_threads
from ewaste_vision.models.classifier import ImageClassifier, build_classifier
from ewaste_vision.models.registry import get_backbone_spec

BACKBONE = "resnet50"
TARGET_OVERHEAD = 1.3
"""fast_all_classes may take at most 1.3x the time of plain inference."""
TARGET_SPEEDUP = 20.0
"""pgc_per_class must take at least 20x the time of fast_all_classes."""


def plain_inference(model: ImageClassifier, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.no_grad():
            return model(images)  # [B, N]

    return run


def fast_all_classes(model: ImageClassifier, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        return upsample_and_normalise(all_class_gradcam(model, images), images.shape[-1])  # [B, N, S, S]

    return run


def pgc_per_class(model: ImageClassifier, images: torch.Tensor, num_classes: int) -> Callable[[], np.ndarray]:
    layer = model.backbone.get_submodule(get_backbone_spec(BACKBONE).cam_layer)

    def run() -> np.ndarray:
        with GradCAM(model, target_layers=[layer]) as cam:
            maps = [cam(images, [ClassifierOutputTarget(k)] * images.shape[0]) for k in range(num_classes)]
        return np.stack(maps, axis=1)  # [B, N, S, S]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per batch")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=16, help="classes of the head (all are explained)")
    parser.add_argument("--iterations", type=int, default=3, help="timed calls per path")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 2, 4 classes, 1 call")
    parser.add_argument(
        "--json", type=Path, default=RESULTS_DIR / "gradcam.json", help="where to write the results"
    )
    args = parser.parse_args()
    if args.quick:
        args.batch, args.classes, args.iterations = 2, 4, 1

    configure_threads()  # what every toolkit command does first
    facts = machine_facts()
    torch.manual_seed(0)
    model, _ = build_classifier(BACKBONE, args.classes, pretrained=False)
    model.eval()
    images = torch.randn(args.batch, 3, args.size, args.size)  # [B, 3, S, S], already "normalised"
    paths = {
        "plain_inference": plain_inference(model, images),
        "fast_all_classes": fast_all_classes(model, images),
        "pgc_per_class": pgc_per_class(model, images, args.classes),
    }
    difference = float(np.abs(paths["fast_all_classes"]().numpy() - paths["pgc_per_class"]()).max())
    seconds = time_interleaved(paths, args.iterations, warmup=0)  # the line above warmed them up
    facts["load_average_1min_after"] = machine_facts()["load_average_1min"]

    def ratio(numerator: str, denominator: str) -> float:
        pairs = zip(seconds[numerator], seconds[denominator], strict=True)
        return round(median([a / b for a, b in pairs]), 2)

    overhead = ratio("fast_all_classes", "plain_inference")
    speedup = ratio("pgc_per_class", "fast_all_classes")
    rows = [
        {
            "path": name,
            "seconds_per_batch": round(median(times), 4),
            "all_seconds": [round(t, 4) for t in times],
        }
        for name, times in seconds.items()
    ]
    print(
        f"\nGrad-CAM, {BACKBONE} untrained, {args.classes} classes, batch {args.batch} "
        f"at {args.size} px, fp32 eager"
    )
    print(describe(facts) + f" (after: {facts['load_average_1min_after']})")
    print_table(
        ["path", "s per batch", "images/s"],
        [[r["path"], r["seconds_per_batch"], round(args.batch / r["seconds_per_batch"], 2)] for r in rows],
    )
    print_table(
        ["ratio", "measured", "target", "verdict"],
        [
            [
                "fast_all_classes / plain_inference",
                overhead,
                f"<= {TARGET_OVERHEAD}",
                "met" if overhead <= TARGET_OVERHEAD else "MISSED",
            ],
            [
                "pgc_per_class / fast_all_classes",
                speedup,
                f">= {TARGET_SPEEDUP}",
                "met" if speedup >= TARGET_SPEEDUP else "MISSED",
            ],
        ],
    )
    print(f"max |fast - pytorch-grad-cam| on normalised maps: {difference:.2e}")
    write_json(
        args.json,
        {
            "bench": "gradcam",
            "machine": facts,
            "backbone": BACKBONE,
            "batch": args.batch,
            "size": args.size,
            "classes": args.classes,
            "iterations": args.iterations,
            "precision": "fp32",
            "rows": rows,
            "overhead_vs_plain": overhead,
            "speedup_vs_pgc_per_class": speedup,
            "max_abs_difference": difference,
            "targets": {"overhead_max": TARGET_OVERHEAD, "speedup_min": TARGET_SPEEDUP},
        },
    )


if __name__ == "__main__":
    main()
