"""How separable the classes of `ewaste data synth-ct` are inside and outside, and how long it takes.

Seed 002's premise is that phone generations look alike outside and differ inside. The synthetic
CT is built that way (families of two classes share an exterior; every class has its own inside),
and this bench measures whether it worked, with the simplest classifier there is: nearest class
centroid, each device classified by the centroids of the *other* devices of every class
(leave-one-device-out), on

- the whole volume summed through its thickness (roughly what an X-ray sees), pooled to a coarse
  12 x 8 grid of cells (14 mm): finer grids are dominated by the millimetre jitter of each
  device's parts, which a nearest centroid cannot absorb but a CNN can,
- only the back of the shell and the camera bump (the slices below the back's inner face),
- the RGB photos (grey, 16 x 16, standardised per photo), each photo classified by centroids of
  the other devices' photos.

A CNN does far better on the photos than raw pixels do; the figures say how much information each
view carries for a trivial model, not what the fusion model will reach.

Run from the repository root:
    python bench/bench_synth_ct.py                  # 10 classes (seed 002's count), 3 devices
    python bench/bench_synth_ct.py --cells 24     # finer pooling: jitter starts to dominate
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import describe, machine_facts, print_table, write_json
from ewaste_vision.ct.synth_ct import FAMILY_SIZE, PHONE_Z0, device_photo, device_volume, write_synthetic_ct
from ewaste_vision.report.stats import wilson_interval


def pooled(voxels: np.ndarray, factor: int) -> np.ndarray:
    d, h, w = voxels.shape
    trimmed = voxels[:, : h // factor * factor, : w // factor * factor]
    return trimmed.reshape(d, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def held_out_device(
    features: dict[tuple[int, int, int], np.ndarray], classes: int, devices: int
) -> tuple[int, int, int]:
    """(correct, correct family, total) of leave-one-device-out nearest centroid."""
    correct = family = 0
    for (label, device, _), feature in features.items():
        centroids = {
            c: np.mean([f for (cc, dd, _), f in features.items() if cc == c and dd != device], axis=0)
            for c in range(classes)
        }
        predicted = min(centroids, key=lambda c: float(np.linalg.norm(feature - centroids[c])))
        correct += predicted == label
        family += predicted // FAMILY_SIZE == label // FAMILY_SIZE
    return correct, family, len(features)


def photo_feature(photo: np.ndarray) -> np.ndarray:
    grey = photo.astype(np.float64).mean(axis=2)
    size = grey.shape[0] // 16
    small = grey[: size * 16, : size * 16].reshape(16, size, 16, size).mean(axis=(1, 3)).ravel()
    return (small - small.mean()) / (small.std() + 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cells", type=int, default=12, help="pooled cells along a volume's length")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    facts = machine_facts()
    facts["load_before"] = os.getloadavg()

    classes, devices = args.classes, args.devices
    volumes = {
        (c, d, 0): device_volume(c, d, size=args.size, seed=args.seed)
        for c in range(classes)
        for d in range(devices)
    }

    factor = max(1, args.size // args.cells)

    def back(volume: Any) -> np.ndarray:
        z = (np.arange(volume.shape[0]) + 0.5) * volume.spacing[0]
        return pooled(volume.voxels, factor)[z < PHONE_Z0 + 0.8].sum(axis=0).ravel()

    views = {
        "whole volume (X-ray-like)": {
            k: pooled(v.voxels, factor).sum(axis=0).ravel() for k, v in volumes.items()
        },
        "back shell + camera bump only": {k: back(v) for k, v in volumes.items()},
        "RGB photos, raw pixels": {
            (c, d, p): photo_feature(device_photo(c, d, p, seed=args.seed))
            for c in range(classes)
            for d in range(devices)
            for p in range(args.photos)
        },
    }
    rows = []
    results: dict[str, Any] = {"facts": facts, "args": vars(args) | {"json": str(args.json)}, "views": {}}
    for name, features in views.items():
        correct, family, total = held_out_device(features, classes, devices)
        low, high = wilson_interval(correct, total)
        rows.append(
            [name, total, f"{correct / total:.3f}", f"[{low:.3f}, {high:.3f}]", f"{family / total:.3f}"]
        )
        results["views"][name] = {
            "correct": correct,
            "family_correct": family,
            "total": total,
            "ci95": [low, high],
        }
    majority = 1 / classes  # balanced classes: the majority class is any one of them
    rows.append(["majority class (baseline)", "", f"{majority:.3f}", "", f"{FAMILY_SIZE / classes:.3f}"])

    with tempfile.TemporaryDirectory() as tmp:
        started, cpu = time.perf_counter(), time.process_time()
        write_synthetic_ct(Path(tmp) / "v", 4, 3, args.size, photos_per_device=0, seed=args.seed)
        volumes_wall, volumes_cpu = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        write_synthetic_ct(Path(tmp) / "all", 4, 3, args.size, photos_per_device=8, seed=args.seed)
        all_wall, all_cpu = time.perf_counter() - started, time.process_time() - cpu
    facts["load_after"] = os.getloadavg()
    results["timing_4x3"] = {
        "volumes_only": {"wall_s": volumes_wall, "cpu_s": volumes_cpu},
        "volumes_and_8_photos": {"wall_s": all_wall, "cpu_s": all_cpu},
    }

    print(describe(facts), f"load {facts['load_before']} -> {facts['load_after']}")
    print(f"{classes} classes x {devices} devices, size {args.size}, seed {args.seed}; leave-one-device-out")
    print_table(["view", "n", "accuracy", "95% CI (Wilson)", "family accuracy"], rows)
    print(
        f"\nsynth-ct --classes 4 (3 devices): volumes only {volumes_wall:.2f} s wall / "
        f"{volumes_cpu:.2f} s CPU; "
        f"with 8 photos per device {all_wall:.2f} s wall / {all_cpu:.2f} s CPU"
    )
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
