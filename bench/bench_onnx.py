"""ONNX Runtime against PyTorch on the CPU: the exported classifier and detector, side by side.

All paths run on the same synthetic inputs in one process, called in turn, so their ratios are
fair on a busy machine. Weights are untrained (speed does not depend on them); each model is
saved as a run, exported with `export_onnx` and reloaded, as `ewaste export` and `ewaste predict
model.onnx` do:

    pytorch_fp32   the baseline: fp32, contiguous tensors, `torch.no_grad`, eager
    product        the toolkit's PyTorch path: `Predictor(compile="never")` / `Detector()`, bf16
                   autocast where the CPU has it, channels-last (classifier)
    onnxruntime    `OnnxClassifier.probabilities` / `OnnxDetector.detect_batch`, as many intra-op
                   threads as torch uses; the detector's time includes its numpy pre/postprocess

Run from the repository root:
    python bench/bench_onnx.py            # EfficientNet-Lite0 at 256 px, detector n at 640 px
    python bench/bench_onnx.py --quick    # smoke run: small inputs, 2 calls
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from _common import RESULTS_DIR, describe, machine_facts, median, print_table, time_interleaved, write_json
from ewaste_vision.detect.model import build_detector
from ewaste_vision.detect.predictor import Detector
from ewaste_vision.export import OnnxClassifier, OnnxDetector, export_onnx
from ewaste_vision.hardware import configure_threads, use_bf16
from ewaste_vision.inference import Predictor
from ewaste_vision.models.classifier import build_classifier
from ewaste_vision.models.registry import get_backbone_spec
from ewaste_vision.runs import ModelMeta, save_model

BACKBONE = "efficientnet_lite0"
NUM_CLASSES = 8


def _meta(task: str, size: int, extra: dict[str, object] | None = None) -> ModelMeta:
    spec = get_backbone_spec(BACKBONE)
    names = [f"class{i}" for i in range(NUM_CLASSES)]
    return ModelMeta(task, names, BACKBONE, size, spec.mean, spec.std, extra=dict(extra or {}))


def classifier_paths(folder: Path, batch: int, size: int) -> dict[str, Callable[[], object]]:
    """The three paths for the classifier on one batch [B, 3, S, S]."""
    model, _ = build_classifier(BACKBONE, NUM_CLASSES, pretrained=False)
    model.eval()
    meta = _meta("classify", size)
    save_model(folder, model.state_dict(), meta)
    exported = OnnxClassifier.from_file(export_onnx(folder)[0], threads=torch.get_num_threads())
    images = torch.rand(batch, 3, size, size)  # [B, 3, S, S] in [0, 1]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (meta.mean, meta.std))
    normalised = (images - mean) / std
    plain = copy.deepcopy(model)
    product = Predictor(copy.deepcopy(model), meta, compile="never", batch_size=batch)
    pixels = images.numpy()

    def pytorch_fp32() -> object:
        with torch.no_grad():
            return plain(normalised).softmax(dim=-1)

    return {
        "pytorch_fp32": pytorch_fp32,
        "product": lambda: product.probabilities(normalised),
        "onnxruntime": lambda: exported.probabilities(pixels),
    }


def detector_paths(folder: Path, batch: int, size: int) -> dict[str, Callable[[], object]]:
    """The three paths for the detector (size n) on `batch` whole images of `size` px."""
    model, _ = build_detector(BACKBONE, NUM_CLASSES, "n", size, pretrained=False)
    model.eval()
    meta = _meta("detect", size, {"detector_size": "n", "modality": "rgb"})
    save_model(folder, model.state_dict(), meta)
    exported = OnnxDetector.from_file(export_onnx(folder)[0], tile="never", threads=torch.get_num_threads())
    images = [torch.rand(3, size, size) for _ in range(batch)]  # [3, S, S] each, in [0, 1]
    plain = copy.deepcopy(model)
    product = Detector(copy.deepcopy(model), meta, tile="never")
    pixels = [image.numpy() for image in images]

    def pytorch_fp32() -> object:
        with torch.no_grad():
            return plain(images)

    return {
        "pytorch_fp32": pytorch_fp32,
        "product": lambda: product.detect_batch(images),
        "onnxruntime": lambda: exported.detect_batch(pixels),
    }


def bench(name: str, paths: dict[str, Callable[[], object]], batch: int, iterations: int) -> list[dict]:
    """Time the paths in turn; one row per path with images/s and the ratio to pytorch_fp32."""
    seconds = time_interleaved(paths, iterations)
    rows = []
    for path, times in seconds.items():
        # Ratios per iteration (neighbouring calls), then the median, to cancel drift.
        ratios = [plain / t for plain, t in zip(seconds["pytorch_fp32"], times, strict=True)]
        rows.append(
            {
                "model": name,
                "path": path,
                "images_per_s": round(batch / median(times), 2),
                "ratio_vs_fp32": round(median(ratios), 2),
                "seconds_per_batch": [round(t, 4) for t in times],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="classifier images per batch")
    parser.add_argument("--size", type=int, default=256, help="classifier image side in pixels")
    parser.add_argument("--detect-batch", type=int, default=2, help="detector images per batch")
    parser.add_argument("--detect-size", type=int, default=640, help="detector image side in pixels")
    parser.add_argument("--iterations", type=int, default=6, help="timed calls per path")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 small images, 2 calls")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "onnx.json", help="where to write results")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.size, args.detect_batch, args.detect_size, args.iterations = 2, 128, 1, 256, 2

    configure_threads()  # what every toolkit command does first
    torch.manual_seed(0)
    facts = machine_facts()
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as folder:
        rows = bench(
            f"{BACKBONE} classifier {args.size}px",
            classifier_paths(Path(folder) / "classify", args.batch, args.size),
            args.batch,
            args.iterations,
        )
        rows += bench(
            f"detector n {args.detect_size}px",
            detector_paths(Path(folder) / "detect", args.detect_batch, args.detect_size),
            args.detect_batch,
            args.iterations,
        )
    facts["load_average_1min_after"] = machine_facts()["load_average_1min"]

    print(f"\nONNX Runtime vs PyTorch on the CPU, product bf16: {use_bf16('auto')}")
    print(describe(facts) + f" (after: {facts['load_average_1min_after']})")
    print_table(
        ["model", "path", "images/s", "x fp32"],
        [[r["model"], r["path"], r["images_per_s"], r["ratio_vs_fp32"]] for r in rows],
    )
    write_json(
        args.json,
        {
            "bench": "onnx",
            "machine": facts,
            "classifier": {"backbone": BACKBONE, "batch": args.batch, "size": args.size},
            "detector": {"size": "n", "batch": args.detect_batch, "image_size": args.detect_size},
            "iterations": args.iterations,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
