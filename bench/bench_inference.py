"""Inference speed: the toolkit's `Predictor`, compiled and eager, against a plain PyTorch fp32 loop.

All paths run on the same synthetic batch in one process, called in turn, so their ratios are fair
on a busy machine. The toolkit's paths call `Predictor.probabilities` itself, so the bench measures
the product rather than a copy of it:

    plain_fp32     the baseline: fp32, contiguous tensors, `torch.no_grad`, eager
    product        `Predictor(compile="always", batch_size=B)`: Inductor with weight freezing,
                   bf16 autocast, channels-last; what `ewaste predict`/`evaluate` run for jobs of
                   `COMPILE_MIN_IMAGES` or more. Its first (compiling) call is timed on its own and
                   left out of the throughput.
    product_eager  `Predictor(compile="never")`: eager, bf16 autocast, channels-last; what small
                   jobs run

With `--explore` two further paths are timed for comparison only; the product does not use them:
    bf16_weights   eager and channels-last, the model converted to bf16 once instead of autocast
    jit_freeze     torch.jit.trace + torch.jit.freeze under bf16 autocast (deprecated TorchScript)

Compilation starts from an empty Inductor cache (a temporary folder) unless `--warm-cache` is
given, so the compile seconds are what a user's first large job pays.

Run from the repository root:
    python bench/bench_inference.py            # full run, about 2 minutes on 2 cores
    python bench/bench_inference.py --quick    # smoke run (still compiles: about a minute)
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
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
from ewaste_vision.hardware import COMPILE_MIN_IMAGES, configure_threads, use_bf16
from ewaste_vision.inference import Predictor
from ewaste_vision.models.classifier import ImageClassifier, build_classifier
from ewaste_vision.models.registry import get_backbone_spec
from ewaste_vision.runs import ModelMeta

MODELS = ("resnet50", "efficientnet_lite0")
NUM_CLASSES = 8
TARGET_RATIO = 3.5
"""Product target: the toolkit's (compiled) inference at least 3.5x the plain fp32 loop."""


def plain_loop(model: ImageClassifier, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The baseline: fp32, contiguous tensors, `torch.no_grad`, eager."""

    def run() -> torch.Tensor:
        with torch.no_grad():
            return model(images).softmax(dim=-1)  # [B, C]

    return run


def predictor_for(
    model: ImageClassifier, backbone: str, size: int, compile: str, batch_size: int
) -> Predictor:
    """A `Predictor` built as `Predictor.from_run` builds it (precision `auto`)."""
    spec = get_backbone_spec(backbone)
    meta = ModelMeta(
        "classify", [f"class{i}" for i in range(NUM_CLASSES)], backbone, size, spec.mean, spec.std
    )
    return Predictor(model, meta, compile=compile, batch_size=batch_size)


def product_path(
    model: ImageClassifier, backbone: str, images: torch.Tensor
) -> tuple[Callable[[], torch.Tensor], float]:
    """The compiled product path; returns the call and the seconds its first (compiling) call took."""
    predictor = predictor_for(model, backbone, images.shape[-1], "always", images.shape[0])

    def run() -> torch.Tensor:
        return predictor.probabilities(images)

    compile_seconds = time_call(run)
    # `CompiledForward` falls back to eager (with a logged warning) when compiling fails; a figure
    # measured on that fallback would be reported under the wrong name.
    compiled = predictor._compiled
    if compiled is None or compiled.failed:
        raise RuntimeError(f"{backbone}: the product did not compile; its figures would be the eager path's")
    return run, compile_seconds


def product_eager_path(
    model: ImageClassifier, backbone: str, images: torch.Tensor
) -> Callable[[], torch.Tensor]:
    """The product's path for small jobs: eager, bf16 autocast, channels-last."""
    predictor = predictor_for(model, backbone, images.shape[-1], "never", images.shape[0])
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
    model = model.to(memory_format=torch.channels_last).requires_grad_(False)
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


def bench_model(
    backbone: str, batch: int, size: int, iterations: int, explore: bool
) -> list[dict[str, object]]:
    """Time every path for one backbone; returns one result row per path."""
    torch.manual_seed(0)
    model, _ = build_classifier(backbone, NUM_CLASSES, pretrained=False)  # weights do not change speed
    model.eval()
    images = torch.randn(batch, 3, size, size)  # [B, 3, S, S], already "normalised"
    # Each path gets its own copy: the Predictor converts its model to channels-last in place.
    product, compile_seconds = product_path(copy.deepcopy(model), backbone, images)
    paths: dict[str, Callable[[], torch.Tensor]] = {
        "plain_fp32": plain_loop(copy.deepcopy(model), images),
        "product": product,
        "product_eager": product_eager_path(copy.deepcopy(model), backbone, images),
    }
    if explore:
        paths["bf16_weights"] = bf16_weights_path(copy.deepcopy(model), images)
        paths["jit_freeze"] = jit_freeze_path(copy.deepcopy(model), images)
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
        if name == "product":
            row["compile_seconds"] = round(compile_seconds, 1)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="backbone names to time")
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--iterations", type=int, default=6, help="timed calls per path")
    parser.add_argument(
        "--explore",
        action="store_true",
        help="also time bf16_weights and jit_freeze, for comparison only (default: off)",
    )
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="compile with the user's Inductor cache instead of an empty one",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small batch, 2 calls")
    parser.add_argument(
        "--json", type=Path, default=RESULTS_DIR / "inference.json", help="where to write the results"
    )
    args = parser.parse_args()
    if args.quick:
        args.batch, args.iterations = 2, 2

    configure_threads()  # what every toolkit command does first
    facts = machine_facts()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-inductor-") as cache:
        if not args.warm_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read by Inductor whenever it compiles
        for backbone in args.models:
            rows.extend(bench_model(backbone, args.batch, args.size, args.iterations, args.explore))
    facts["load_average_1min_after"] = machine_facts()["load_average_1min"]

    print(
        f"\ninference, batch {args.batch} at {args.size} px, product bf16: {use_bf16('auto')}, "
        f"Inductor cache: {'warm' if args.warm_cache else 'empty'}"
    )
    print(describe(facts) + f" (after: {facts['load_average_1min_after']})")
    print_table(
        ["model", "path", "images/s", "x plain", "compile s", f"target x{TARGET_RATIO}"],
        [
            [
                r["model"],
                r["path"],
                r["images_per_s"],
                r["ratio_vs_plain"],
                r.get("compile_seconds", ""),
                verdict(r, TARGET_RATIO),
            ]
            for r in rows
        ],
    )
    write_json(
        args.json,
        {
            "bench": "inference",
            "machine": facts,
            "batch": args.batch,
            "size": args.size,
            "iterations": args.iterations,
            "target_ratio": TARGET_RATIO,
            "compile_min_images": COMPILE_MIN_IMAGES,
            "warm_cache": args.warm_cache,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
