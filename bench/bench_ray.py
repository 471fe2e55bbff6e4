"""Images per second of `ewaste predict` on the local engine against Ray with 1 and 2 workers.

    python bench/bench_ray.py --images 2000 [--run RUN] [--out bench/results/ray.json]

Without `--run`, a classify run is trained first (EfficientNet-Lite0, `linear`, on synthetic
component crops) so the model is the product's default one. Every engine scores the same images in
one process, one after another; Ray's start-up (or connection) is timed apart from the scoring,
and the rows of every engine are checked to be the local engine's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--run", type=Path, help="a finished run (default: train one)")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to time (default 1,2)")
    parser.add_argument("--address", help="a Ray cluster (default: start one on this machine)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ray.json"))
    args = parser.parse_args()

    from ewaste_vision.data.images import expand_image_paths
    from ewaste_vision.data.synth import write_component_crops
    from ewaste_vision.engines import EngineSettings
    from ewaste_vision.engines.ray_engine import start_ray
    from ewaste_vision.io.atomic import write_json
    from ewaste_vision.predict import predict_paths

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as scratch:
        root = Path(scratch)
        per_class = -(-args.images // 8)
        crops = write_component_crops(root / "crops", n_per_class=per_class, seed=0, size=96)
        paths = expand_image_paths([crops])[: args.images]
        run = args.run or _train(crops, root / "run")
        results: dict[str, object] = {
            "machine": f"{_cpu_name()}, {os.cpu_count()} cores",
            "load_before": os.getloadavg(),
            "images": len(paths),
        }

        began = time.perf_counter()
        local_rows, _ = predict_paths(run, paths)
        local_s = time.perf_counter() - began
        results["local"] = {"seconds": local_s, "images_per_s": len(paths) / local_s}

        began = time.perf_counter()
        start_ray(args.address)
        results["ray_start_s"] = time.perf_counter() - began
        for workers in (int(w) for w in args.workers.split(",")):
            began = time.perf_counter()
            rows, _ = predict_paths(run, paths, engine=EngineSettings("ray", args.address, workers))
            seconds = time.perf_counter() - began
            results[f"ray_{workers}_workers"] = {
                "seconds": seconds,
                "images_per_s": len(paths) / seconds,
                "same_rows_as_local": rows == local_rows,
            }
        results["load_after"] = os.getloadavg()
    write_json(args.out, results)
    print(json.dumps(results, indent=2))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _train(crops: Path, run: Path) -> Path:
    from ewaste_vision.cli import main as cli

    assert cli(["train", str(crops), "--out", str(run), "--head-epochs", "20"]) == 0
    return run


if __name__ == "__main__":
    main()
