"""Training speed: the toolkit's Lightning training step against a plain PyTorch fp32 loop.

One training step is forward + cross-entropy + backward + Adam, at 224 px, batch 16, on ResNet-50
and EfficientNet-Lite0 for two strategies each: `full` (everything trains) and `finetune` (the last
stages train, the rest is frozen with its batch norm in eval mode, as the toolkit does it).

    plain_fp32  a hand-written loop: fp32, contiguous tensors, eager
    product     the toolkit's `SupervisedModule` under a Lightning `Trainer` with the precision the
                toolkit picks (`bf16-mixed` where the CPU has native bf16) and channels-last

The two sides alternate step by step (a plain step runs in a callback after each Lightning step),
so a busy machine slows both alike; Lightning's per-step work counts against the product, its
one-off set-up does not.

Run from the repository root:
    python bench/bench_training.py            # full run, about 1.5 minutes on 2 cores
    python bench/bench_training.py --models efficientnet_lite0 --strategies full
    python bench/bench_training.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from _common import RESULTS_DIR, describe, machine_facts, median, print_table, time_call, verdict, write_json
from ewaste_vision.hardware import configure_threads, quiet_lightning, use_bf16
from ewaste_vision.models.classifier import (
    ImageClassifier,
    build_classifier,
    frozen_batchnorm_modules,
    set_trainable,
)
from ewaste_vision.tasks import get_task
from ewaste_vision.training.modules import SupervisedModule

MODELS = ("resnet50", "efficientnet_lite0")
STRATEGIES = ("full", "finetune")
NUM_CLASSES = 8
TARGET_RATIO = 2.0
"""Product target: training at least 2x the plain fp32 loop."""

Batch = tuple[torch.Tensor, torch.Tensor]


def plain_step_fn(model: ImageClassifier, batch: Batch) -> Callable[[], None]:
    """One step of the baseline loop: fp32, contiguous tensors, eager, plain Adam."""
    images, targets = batch
    model.train()
    for module in frozen_batchnorm_modules(model):  # same semantics as the product's `finetune`
        module.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-3, weight_decay=1e-4)

    def step() -> None:
        # Runs inside Lightning's loop (see `Interleave`); make sure none of its precision leaks in.
        with torch.autocast("cpu", enabled=False):
            loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


class Interleave(L.Callback):
    """Times the product's Lightning steps and runs one plain step after each of them.

    A product step is timed from the moment the plain step before it returned to the end of its own
    batch, so Lightning's per-step work (fetching, hooks, logging) counts against it; its one-off
    set-up does not. Alternating single steps makes a busy machine slow both sides alike.
    """

    def __init__(self, plain_step: Callable[[], None]) -> None:
        self.plain_step = plain_step
        self.seconds: dict[str, list[float]] = {"plain_fp32": [], "product": []}
        self.resumed = 0.0

    def on_train_batch_start(self, *args: object, **kwargs: object) -> None:
        if not self.seconds["product"] and not self.resumed:
            self.resumed = time.perf_counter()  # the first step has no plain step before it

    def on_train_batch_end(self, *args: object, **kwargs: object) -> None:
        self.seconds["product"].append(time.perf_counter() - self.resumed)
        self.seconds["plain_fp32"].append(time_call(self.plain_step))
        self.resumed = time.perf_counter()


def bench_strategy(
    backbone: str, strategy: str, batch_size: int, size: int, steps: int, warmup: int
) -> list[dict[str, object]]:
    """Run `warmup + steps` product steps, each followed by a plain one; one result row per side."""
    torch.manual_seed(0)
    model, _ = build_classifier(backbone, NUM_CLASSES, pretrained=False)  # weights do not change speed
    set_trainable(model, backbone, strategy)
    batch = (torch.randn(batch_size, 3, size, size), torch.randint(0, NUM_CLASSES, (batch_size,)))
    precision: Literal["bf16-mixed", "32-true"] = "bf16-mixed" if use_bf16("auto") else "32-true"

    product_model = copy.deepcopy(model)  # the plain loop keeps `model`: fp32, contiguous
    module = SupervisedModule(  # set up as `train()` sets it up for the image strategies
        product_model,
        get_task("classify"),
        lr=1e-3,
        weight_decay=1e-4,
        slow_prefixes=("backbone.",),
        frozen_batchnorm=frozen_batchnorm_modules(product_model),
        channels_last=True,
    )
    clock = Interleave(plain_step_fn(model, batch))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=warmup + steps,
        callbacks=[clock],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    # batch_size=None hands over the ready batch as is: data loading is not what is measured.
    batches = [batch] * (warmup + steps)  # a list is a map-style dataset; the stubs want `Dataset`
    trainer.fit(module, DataLoader(batches, batch_size=None))  # type: ignore[arg-type]

    seconds = {name: times[warmup:] for name, times in clock.seconds.items()}
    ratios = [plain / t for plain, t in zip(seconds["plain_fp32"], seconds["product"], strict=True)]
    return [
        {
            "model": backbone,
            "strategy": strategy,
            "path": name,
            "precision": precision if name == "product" else "32-true",
            "images_per_s": round(batch_size / median(times), 2),
            # Median of the ratios of neighbouring steps, which cancels slow drifts in machine load.
            "ratio_vs_plain": round(median(ratios), 2) if name == "product" else 1.0,
            "seconds_per_step": [round(t, 3) for t in times],
        }
        for name, times in seconds.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="backbone names to time")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 2 at 96 px, 2 steps")
    parser.add_argument(
        "--json", type=Path, default=RESULTS_DIR / "training.json", help="where to write the results"
    )
    args = parser.parse_args()
    if args.quick:
        args.batch, args.size, args.steps, args.warmup = 2, 96, 2, 1

    configure_threads()
    quiet_lightning()
    # Validation is switched off on purpose: only training steps are timed.
    warnings.filterwarnings("ignore", message=r".*no `val_dataloader`.*")
    facts = machine_facts()
    rows = []
    for backbone in args.models:
        for strategy in args.strategies:
            rows.extend(bench_strategy(backbone, strategy, args.batch, args.size, args.steps, args.warmup))
    facts["load_average_1min_after"] = machine_facts()["load_average_1min"]

    print(f"\ntraining steps, batch {args.batch} at {args.size} px")
    print(describe(facts) + f" (after: {facts['load_average_1min_after']})")
    print_table(
        ["model", "strategy", "path", "precision", "images/s", "x plain", f"target x{TARGET_RATIO}"],
        [
            [
                r["model"],
                r["strategy"],
                r["path"],
                r["precision"],
                r["images_per_s"],
                r["ratio_vs_plain"],
                verdict(r, TARGET_RATIO),
            ]
            for r in rows
        ],
    )
    write_json(
        args.json,
        {
            "bench": "training",
            "machine": facts,
            "batch": args.batch,
            "size": args.size,
            "steps": args.steps,
            "warmup": args.warmup,
            "target_ratio": TARGET_RATIO,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
