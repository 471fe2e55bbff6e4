"""RGB alone, X-ray alone and RGB-X fusion (fast and slow) on synthetic devices: 002's Tables V, VI.

Data: `ewaste data synth-ct` (CT volumes and RGB photos of each device's outside; two classes of a
family share an outside, so photos alone cannot tell them apart) and `ewaste data synth-xray`
(domain-randomised radiographs of the volumes, default settings). The fuse task splits by device,
so every test image shows a device no stream and no fusion layer was trained on.

Steps, all in one process on one machine so the timings compare:
1. `ewaste train DATA --task fuse --fusion fast` trains the RGB and the X-ray stream (classify
   runs inside the fusion run), then fast fusion;
2. `ewaste train DATA --task fuse --fusion slow --rgb-run ... --xray-run ...` reuses those two
   streams and trains slow fusion;
3. inference time: each stream's `Predictor` on its test images and the fusion predictor on the
   test pairs, interleaved, per image or pair, image decoding included.

Run from the repository root:
    python bench/bench_fusion.py --json bench/results/fusion.json
    python bench/bench_fusion.py --classes 4 --devices 6 --quick      # a smaller try
    python bench/bench_fusion.py --pool bench/results/fusion_default_seed*.json   # seeds pooled
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    describe,
    machine_facts,
    median,
    pooled_accuracy,
    print_table,
    time_interleaved,
    write_json,
)
from ewaste_vision.cli import main as ewaste
from ewaste_vision.config import TrainConfig
from ewaste_vision.training.trainer import train


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=4, help="device classes (two families of two)")
    parser.add_argument("--devices", type=int, default=8, help="devices per class")
    parser.add_argument("--photos", type=int, default=6, help="RGB photos per device")
    parser.add_argument("--renders", type=int, default=8, help="X-ray renders per device")
    parser.add_argument("--size", type=int, default=96, help="CT voxels along a device's length")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--head", default="icam", help="stream head: icam (002) or linear")
    parser.add_argument("--icam-iterations", type=int, default=2)
    parser.add_argument("--stream-epochs", type=int, default=4, help="epochs of each iCAM stream on images")
    parser.add_argument("--slow-epochs", type=int, default=4, help="epochs of slow fusion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="folder for data and runs (default: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="fewer timing repeats")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--pool", type=Path, nargs="+", help="results files of several seeds: one pooled table"
    )
    return parser.parse_args()


def make_data(root: Path, args: argparse.Namespace) -> tuple[Path, dict[str, float]]:
    """ROOT/rgb and ROOT/volumes from synth-ct, ROOT/xray from synth-xray; their wall times."""
    seconds = {}
    started = time.perf_counter()
    code = ewaste(
        ["data", "synth-ct", "--out", str(root), "--classes", str(args.classes), "--devices-per-class",
         str(args.devices), "--photos-per-device", str(args.photos), "--size", str(args.size),
         "--seed", str(args.seed)]
    )  # fmt: skip
    assert code == 0, "synth-ct failed"
    seconds["synth_ct_s"] = time.perf_counter() - started
    started = time.perf_counter()
    code = ewaste(
        ["data", "synth-xray", str(root / "volumes"), "--out", str(root / "xray"), "-n", str(args.renders),
         "--seed", str(args.seed)]
    )  # fmt: skip
    assert code == 0, "synth-xray failed"
    seconds["synth_xray_s"] = time.perf_counter() - started
    return root, seconds


def fusion_config(data: Path, out: Path, args: argparse.Namespace, **changes: Any) -> TrainConfig:
    config = TrainConfig(
        data=str(data),
        out=str(out),
        task="fuse",
        backbone=args.backbone,
        image_size=args.image_size,
        head=args.head,
        icam_iterations=args.icam_iterations,
        strategy="linear",
        # Devices are few, so a quarter of them go to test (at least two per class at 8 devices).
        split=(0.5, 0.25, 0.25),
        seed=args.seed,
    )
    return dataclasses.replace(config, **changes)


def inference_ms(fast_run: Path, repeats: int) -> dict[str, float]:
    """Median ms per test image (each stream) and per test pair (fusion), interleaved."""
    from ewaste_vision.fusion.data import read_pair_splits
    from ewaste_vision.fusion.pairing import plan_pairs
    from ewaste_vision.fusion.predictor import FusionPredictor
    from ewaste_vision.inference import Predictor

    fusion = FusionPredictor.from_run(fast_run)
    split = read_pair_splits(fast_run, fusion.meta.class_names)
    test = {m: [r for r in split.side(m) if r.split == "test"] for m in ("rgb", "xray")}
    pairs = plan_pairs(test["rgb"], test["xray"], int(fusion.meta.extra["seed"]), "test")
    streams = {m: Predictor.from_run(fast_run / "streams" / m, compile="never") for m in ("rgb", "xray")}
    candidates = {
        "rgb": lambda: streams["rgb"].predict_files([r.path for r in test["rgb"]]),
        "xray": lambda: streams["xray"].predict_files([r.path for r in test["xray"]]),
        "rgbx": lambda: fusion.predict_pairs(test["rgb"], test["xray"], pairs),
    }
    seconds = time_interleaved(candidates, repeats)
    counts = {"rgb": len(test["rgb"]), "xray": len(test["xray"]), "rgbx": len(pairs)}
    return {name: 1000 * median(times) / counts[name] for name, times in seconds.items()}


def row(name: str, metrics: dict[str, Any], ms: float, train_s: float | None, unit: str) -> list[str]:
    low, high = metrics["accuracy_ci95"]
    return [
        name,
        f"{metrics['n_test']} {unit}",
        f"{metrics['accuracy']:.3f}",
        f"{low:.3f}-{high:.3f}",
        f"{metrics['baseline_accuracy']:.3f}",
        f"{ms:.1f}",
        "" if train_s is None else f"{train_s:.0f}",
    ]


POOLED_ROWS = {
    "RGB alone": ("rgb_alone", None),
    "X-ray alone": ("xray_alone", None),
    "RGB-X fast fusion": ("fast", None),
    "  fast: its stage-2 layer (before stage 3), same pairs": ("fast", "stage2_fusion_on_pairs"),
    "  fast: X-ray classification layer, same pairs": ("fast", "xray_head"),
    "RGB-X slow fusion": ("slow", None),
}
"""Pooled table rows: (results key, a figure inside it measured on the same pairs, or the run's own)."""


def pool(files: list[Path]) -> None:
    """Correct answers summed over several seeds' results files (each its own data and split)."""
    results = [json.loads(f.read_text()) for f in files]
    table = []
    for name, (key, inner) in POOLED_ROWS.items():
        per_file = []
        for result in results:
            metrics = result[key]
            if inner == "xray_head":
                figure = metrics["stream_heads_on_pairs"]["xray"]
            else:
                figure = metrics.get(inner) if inner is not None else metrics
            if figure is None:
                break
            per_file.append((figure["accuracy"], metrics["n_test"]))
        else:
            table.append([name, *pooled_accuracy(per_file)])
    baselines = " ".join(f"{r['fast']['baseline_accuracy']:.3f}" for r in results)
    print(f"{len(results)} results files; majority baseline per file: {baselines}")
    print_table(["mode", "n test", "accuracy", "95% CI (Wilson)", "per file"], table)


def main() -> None:
    args = parse_args()
    if args.pool:
        pool(args.pool)
        return
    os.environ.setdefault("EWASTE_NO_DOWNLOAD", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-fusion-"))
    facts = machine_facts()
    data, data_seconds = make_data(work / "data", args)

    started = time.perf_counter()
    fast = train(
        fusion_config(data, work / "fast", args, fusion="fast", max_epochs=args.stream_epochs), progress=False
    )
    fast_s = time.perf_counter() - started
    assert fast is not None
    streams = {m: work / "fast" / "streams" / m for m in ("rgb", "xray")}
    started = time.perf_counter()
    slow = train(
        fusion_config(
            data, work / "slow", args, fusion="slow", max_epochs=args.slow_epochs,
            rgb_run=str(streams["rgb"]), xray_run=str(streams["xray"]),
        ),
        progress=False,
    )  # fmt: skip
    slow_s = time.perf_counter() - started
    assert slow is not None
    ms = inference_ms(work / "fast", 2 if args.quick else 5)

    stream_metrics = {m: json.loads((streams[m] / "metrics.json").read_text()) for m in streams}
    header = ["mode", "n test", "accuracy", "95% CI", "majority baseline", "ms / sample", "train s"]
    rows = [
        row("RGB alone", stream_metrics["rgb"], ms["rgb"], None, "photos"),
        row("X-ray alone", stream_metrics["xray"], ms["xray"], None, "renders"),
        row("RGB-X fast fusion", fast.metrics, ms["rgbx"], fast_s, "pairs"),
        row("RGB-X slow fusion", slow.metrics, ms["rgbx"], slow_s, "pairs"),
    ]
    print(describe(facts))
    print_table(header, rows)
    if args.json is None:
        return
    write_json(
        args.json,
        {
            "machine": facts,
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "data_seconds": data_seconds,
            "train_seconds": {
                "fast_with_streams": fast_s,
                "slow_reusing_streams": slow_s,
                "fast_stages": fast.metrics["training_seconds"],
                "slow_stages": slow.metrics["training_seconds"],
            },
            "inference_ms": ms,
            "rgb_alone": stream_metrics["rgb"],
            "xray_alone": stream_metrics["xray"],
            "fast": fast.metrics,
            "slow": slow.metrics,
        },
    )


if __name__ == "__main__":
    main()
