"""Inference speed: the toolkit's `Predictor` against a plain PyTorch fp32 eager loop.

Both run on the same synthetic batch in one process, called in turn, so their ratio is fair on a
busy machine. The toolkit's side calls `Predictor.probabilities` itself (channels-last, bf16
autocast where the CPU has native bf16, inference mode), so the bench measures the product rather
than a copy of it.

With `--explore` (the default outside `--quick`) three further paths are timed for comparison only;
the product does not use them (yet):
    bf16_weights    eager and channels-last like the product, but the model converted to bf16 once
    jit_freeze      torch.jit.trace + torch.jit.freeze under bf16 autocast (oneDNN fusion, prepacked weights)
    compile_freeze  torch.compile (Inductor, `freezing=True`) under bf16 autocast

Run from the repository root:
    python bench/bench_inference.py            # full run, about 4 minutes on 2 cores
    python bench/bench_inference.py --quick    # smoke run, seconds
"""

from __future__ import annotations

import argparse
import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from _common import (
    RESULTS_DIR,
    describe,
    machine_facts,
    median,
    print_table,
    time_call,
    time_interleaved,
    verdict,
    write_json,
)
from ewaste_vision.hardware import configure_threads, use_bf16
from ewaste_vision.inference import Predictor
from ewaste_vision.models.classifier import ImageClassifier, build_classifier
from ewaste_vision.models.registry import get_backbone_spec
from ewaste_vision.runs import ModelMeta

MODELS = ("resnet50", "efficientnet_lite0")
NUM_CLASSES = 8
TARGET_RATIO = 3.5
"""Product target: the toolkit's inference at least 3.5x the plain fp32 loop."""


def plain_loop(model: ImageClassifier, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The baseline: fp32, contiguous tensors, `torch.no_grad`, eager."""

    def run() -> torch.Tensor:
        with torch.no_grad():
            return model(images).softmax(dim=-1)  # [B, C]

    return run


def product_path(model: ImageClassifier, backbone: str, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The toolkit's own inference call, through a `Predictor` built as `Predictor.from_run` builds it."""
    spec = get_backbone_spec(backbone)
    meta = ModelMeta("classify", [f"class{i}" for i in range(NUM_CLASSES)], backbone, images.shape[-1],
                     spec.mean, spec.std)
    predictor = Predictor(model, meta)
    return lambda: predictor.probabilities(images)


def bf16_weights_path(model: ImageClassifier, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Eager and channels-last like the product, but with the weights converted to bf16 once
    instead of autocast casting them on every call."""
    model = model.to(memory_format=torch.channels_last, dtype=torch.bfloat16)  # type: ignore[call-overload]
    inputs = images.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(inputs).float().softmax(dim=-1)

    return run


def jit_freeze_path(model: ImageClassifier, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """TorchScript trace + freeze under bf16 autocast: folds batch norm into convolutions and
    prepacks the weights for oneDNN once, instead of converting them on every call."""
    model = model.to(memory_format=torch.channels_last).requires_grad_(False)  # type: ignore[call-overload]
    inputs = images.contiguous(memory_format=torch.channels_last)
    # The autocast weight cache cannot be baked into a trace, hence cache_enabled=False.
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
    with torch.no_grad(), autocast, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; here for comparison only
        traced = torch.jit.freeze(torch.jit.trace(model, inputs, check_trace=False))
        for _ in range(2):  # the first calls run the fusion passes
            traced(inputs)

    def run() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            return traced(inputs).float().softmax(dim=-1)

    return run


def compile_freeze_path(
    model: ImageClassifier, images: torch.Tensor
) -> tuple[Callable[[], torch.Tensor], float]:
    """torch.compile with Inductor's weight freezing under bf16 autocast; returns the call and the
    seconds the first (compiling) call took."""
    import torch._inductor.config as inductor_config

    # Freezing treats parameters as constants, so Inductor can fold batch norm and prepack
    # weights for oneDNN/AMX; it is only valid for inference, which is all this path does.
    inductor_config.freezing = True
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    compiled = torch.compile(model)
    inputs = images.contiguous(memory_format=torch.channels_last)

    def run() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return compiled(inputs).float().softmax(dim=-1)

    return run, time_call(run)


def bench_model(
    backbone: str, batch: int, size: int, iterations: int, explore: bool
) -> list[dict[str, object]]:
    """Time every path for one backbone; returns one result row per path."""
    torch.manual_seed(0)
    model, _ = build_classifier(backbone, NUM_CLASSES, pretrained=False)  # weights do not change speed
    model.eval()
    images = torch.randn(batch, 3, size, size)  # [B, 3, S, S], already "normalised"
    # Each path gets its own copy: the Predictor converts its model to channels-last in place.
    paths: dict[str, Callable[[], torch.Tensor]] = {
        "plain_fp32": plain_loop(copy.deepcopy(model), images),
        "product": product_path(copy.deepcopy(model), backbone, images),
    }
    compile_seconds = None
    if explore:
        paths["bf16_weights"] = bf16_weights_path(copy.deepcopy(model), images)
        paths["jit_freeze"] = jit_freeze_path(copy.deepcopy(model), images)
        paths["compile_freeze"], compile_seconds = compile_freeze_path(copy.deepcopy(model), images)
    seconds = time_interleaved(paths, iterations)
    rows = []
    for name, times in seconds.items():
        # Ratios are taken per iteration (neighbouring calls), then the median, to cancel drift.
        ratios = [plain / t for plain, t in zip(seconds["plain_fp32"], times, strict=True)]
        row: dict[str, object] = {
            "model": backbone,
            "path": name,
            "images_per_s": round(batch / median(times), 2),
            "ratio_vs_plain": round(median(ratios), 2),
            "seconds_per_batch": [round(t, 4) for t in times],
        }
        if name == "compile_freeze":
            row["compile_seconds"] = round(compile_seconds or 0.0, 1)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="backbone names to time")
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--iterations", type=int, default=6, help="timed calls per path")
    parser.add_argument("--explore", action=argparse.BooleanOptionalAction, default=None,
                        help="also time jit_freeze and compile_freeze (default: on, off with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small batch, 2 calls, no exploring")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "inference.json",
                        help="where to write the results")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.iterations = 2, 2
    explore = (not args.quick) if args.explore is None else args.explore

    configure_threads()  # what every toolkit command does first
    facts = machine_facts()
    rows = []
    for backbone in args.models:
        rows.extend(bench_model(backbone, args.batch, args.size, args.iterations, explore))

    print(f"\ninference, batch {args.batch} at {args.size} px, product bf16: {use_bf16('auto')}")
    print(describe(facts))
    print_table(
        ["model", "path", "images/s", "x plain", f"target x{TARGET_RATIO}"],
        [[r["model"], r["path"], r["images_per_s"], r["ratio_vs_plain"], verdict(r, TARGET_RATIO)]
         for r in rows],
    )
    write_json(args.json, {"bench": "inference", "machine": facts, "batch": args.batch, "size": args.size,
                           "iterations": args.iterations, "target_ratio": TARGET_RATIO, "rows": rows})


if __name__ == "__main__":
    main()
