"""Plain classifier against the iCAM head (002, Tables II and IV): accuracy, training time and
inference ms per image, all runs on one split, trained one after another in one process.

Two data sources:
- `--component-crops DIR`: the real fine-grained photos of `../shared/data/component-crops`.
  The classes with at least `--min-images` images are kept; every `part_group` (one part shot
  several times) goes whole into one split (70/15/15 of each class's images, seeded), so no part
  is both trained on and tested; each split is then capped per class (`--train-per-class`,
  `--eval-per-class`) to fit 2 shared CPU cores. The split is written as symlinks (never copies)
  under `--work`.
- `--data DIR`: class folders split by the toolkit itself or, when DIR has train/val/test, that
  split, capped per class as above (symlinks again).

A run already trained in `--work` (by an earlier call with other `--iterations`) is evaluated
again, not retrained; its training time and load are read from the `bench_timing.json` that call
left beside it, so `train s` of such rows was measured at another time (the JSON says when),
and its test metrics from its `metrics.json`.

Inference is timed on the test images, already decoded and resized, batch `--batch`, eager
(`compile="never"`), with the product's precision (bf16 autocast where the CPU has it); the runs
are called in turn, round after round, so a busy machine slows them alike. Accuracy comes with the
Wilson 95% interval, the majority-class baseline and, against the plain run, a paired bootstrap
95% interval of the difference (same test images).

    python bench/bench_icam.py --component-crops ../shared/data/component-crops --iterations 3
    python bench/bench_icam.py --data XRAY_FOLDERS --iterations 2 3 5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, describe, machine_facts, median, print_table, write_json
from ewaste_vision.config import TrainConfig
from ewaste_vision.inference import Predictor
from ewaste_vision.report.stats import bootstrap_interval, wilson_interval
from ewaste_vision.training.trainer import train

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def split_component_crops(
    source: Path, target: Path, min_images: int, train_cap: int, eval_cap: int, seed: int
) -> dict[str, dict[str, int]]:
    """Symlink class folders train/val/test under `target`, each part_group in one split.

    Returns images per split per class.
    """
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    with (source / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            groups[row["class"]][row["part_group"]].append(row["file"])
    rng = random.Random(seed)
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLIT_FRACTIONS}
    for class_name in sorted(groups):
        by_group = groups[class_name]
        total = sum(len(files) for files in by_group.values())
        if total < min_images or len(by_group) < 3:
            continue
        names = sorted(by_group)
        rng.shuffle(names)
        chosen: dict[str, list[str]] = {split: [] for split in SPLIT_FRACTIONS}
        # Smallest splits first, each taking whole groups until it holds its share; the rest train.
        queue = list(names)
        for split in ("test", "val"):
            while queue and len(chosen[split]) < SPLIT_FRACTIONS[split] * total:
                chosen[split] += by_group[queue.pop()]
        for name in queue:
            chosen["train"] += by_group[name]
        for split, files in chosen.items():
            cap = train_cap if split == "train" else eval_cap
            files = sorted(files)
            rng.shuffle(files)
            kept = files[:cap]
            folder = target / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for file in kept:
                link = folder / file
                if not link.exists():
                    link.symlink_to((source / "images" / file).resolve())
            counts[split][class_name] = len(kept)
    return counts


def cap_split_folders(
    source: Path, target: Path, train_cap: int, eval_cap: int, seed: int
) -> dict[str, dict[str, int]]:
    """Symlink at most `train_cap` (train) or `eval_cap` (val, test) images per class of a
    train/val/test folder, chosen at random (seeded) inside each split, so its split is kept."""
    rng = random.Random(seed)
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLIT_FRACTIONS}
    for split in SPLIT_FRACTIONS:
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            files = sorted(p for p in class_dir.iterdir() if p.is_file())
            rng.shuffle(files)
            kept = files[: train_cap if split == "train" else eval_cap]
            folder = target / split / class_dir.name
            folder.mkdir(parents=True, exist_ok=True)
            for file in kept:
                link = folder / file.name
                if not link.exists():
                    link.symlink_to(file.resolve())
            counts[split][class_dir.name] = len(kept)
    return counts


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def train_one(
    name: str, data: Path, work: Path, args: argparse.Namespace, head: dict[str, Any]
) -> dict[str, Any]:
    out = work / "runs" / name
    config = TrainConfig(
        data=str(data),
        out=str(out),
        task="classify",
        backbone=args.backbone,
        strategy=args.strategy,
        image_size=args.image_size,
        batch_size=args.train_batch,
        max_epochs=args.max_epochs,
        seed=args.seed,
        resume=(out / "config.yaml").is_file() and not (out / "model.pt").is_file(),
        **head,
    )
    timing_file = out / "bench_timing.json"
    if (out / "model.pt").is_file() and timing_file.is_file():
        # Trained by an earlier call on this --work folder: its test metrics and timing stand.
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        timing = json.loads(timing_file.read_text(encoding="utf-8"))
    else:
        before = load_average()
        started = time.perf_counter()
        result = train(config, progress=False)
        assert result is not None
        metrics = result.metrics
        timing = {
            "train_seconds": time.perf_counter() - started,
            "load_before": before,
            "load_after": load_average(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        }
        timing_file.write_text(json.dumps(timing) + "\n", encoding="utf-8")
    return {
        "name": name,
        "run": str(out),
        "head": head,
        **timing,
        "accuracy": metrics["accuracy"],
        "accuracy_ci95": metrics["accuracy_ci95"],
        "baseline_accuracy": metrics["baseline_accuracy"],
        "macro_f1": metrics["macro_f1"],
        "n_test": metrics["n_test"],
    }


def test_paths(run: Path) -> tuple[list[Path], list[int], list[str]]:
    """The run's test images, their labels and the class names (from split.csv)."""
    from ewaste_vision.runs import read_model_file

    _, meta = read_model_file(run / "model.pt")
    paths, labels = [], []
    with (run / "split.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["split"] == "test":
                paths.append(Path(row["path"]))
                labels.append(int(row["label"]))
    return paths, labels, meta.class_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--pool",
        type=Path,
        nargs="+",
        help="results files of several seeds: one table over all their test images",
    )
    source.add_argument("--component-crops", type=Path, help="the component-crops folder (manifest.csv)")
    source.add_argument("--data", type=Path, help="class folders")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_icam"), help="split and runs go here")
    parser.add_argument("--iterations", type=int, nargs="+", default=[3], help="iCAM N values to train")
    parser.add_argument("--aggregate", default="weighted")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--strategy", default="finetune")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--max-epochs", type=int, default=4)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--min-images", type=int, default=30)
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--eval-per-class", type=int, default=25)
    parser.add_argument("--batch", type=int, default=16, help="inference batch")
    parser.add_argument("--rounds", type=int, default=5, help="timed inference rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "icam.json")
    args = parser.parse_args(argv)
    if args.pool:
        return pool(args.pool)
    torch.manual_seed(args.seed)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    facts = machine_facts()
    print(f"machine: {describe(facts)}\nuptime: {uptime}")

    if args.component_crops is not None:
        data = args.work / "split"
        counts = split_component_crops(
            args.component_crops, data, args.min_images, args.train_per_class, args.eval_per_class, args.seed
        )
        print("images per split:", {split: sum(c.values()) for split, c in counts.items()})
    elif all((args.data / split).is_dir() for split in SPLIT_FRACTIONS):
        data = args.work / "split"
        counts = cap_split_folders(args.data, data, args.train_per_class, args.eval_per_class, args.seed)
        print("images per split:", {split: sum(c.values()) for split, c in counts.items()})
    else:
        data, counts = args.data, {}

    heads: dict[str, dict[str, Any]] = {"plain": {"head": "linear"}}
    for n in args.iterations:
        heads[f"icam_n{n}"] = {"head": "icam", "icam_iterations": n, "aggregate": args.aggregate}
    rows = [train_one(name, data, args.work, args, head) for name, head in heads.items()]

    # Inference, every run on the same decoded test batch, in turn.
    paths, labels, _ = test_paths(Path(rows[0]["run"]))
    predictors = {row["name"]: Predictor.from_run(row["run"], compile="never") for row in rows}
    first = next(iter(predictors.values()))
    batch = torch.stack([first.transform(_load(p)) for p in paths[: args.batch]])  # [B, 3, S, S]
    seconds: dict[str, list[float]] = {name: [] for name in predictors}
    for predictor in predictors.values():
        predictor.probabilities(batch)  # warm-up
    for _ in range(args.rounds):
        for name, predictor in predictors.items():
            started = time.perf_counter()
            predictor.probabilities(batch)
            seconds[name].append(time.perf_counter() - started)
    correct: dict[str, np.ndarray] = {}
    for name, predictor in predictors.items():
        probs, kept, _ = predictor.predict_files(paths)
        assert len(kept) == len(paths)
        correct[name] = (probs.argmax(dim=1).numpy() == np.array(labels)).astype(float)
    plain_ms = median(seconds["plain"]) / len(batch) * 1000
    table = []
    for row in rows:
        name = row["name"]
        row["infer_ms_per_image"] = median(seconds[name]) / len(batch) * 1000
        row["infer_ratio_vs_plain"] = row["infer_ms_per_image"] / plain_ms
        row["infer_seconds"] = seconds[name]
        hits = int(correct[name].sum())
        assert hits == round(row["accuracy"] * row["n_test"]), "predict_files disagrees with evaluate"
        low, high = wilson_interval(hits, len(paths))
        row["wilson_ci95"] = [low, high]
        row["correct"] = correct[name].astype(int).tolist()  # per test image, for `--pool`
        if name != "plain":
            difference = np.stack([correct[name], correct["plain"]], axis=1)  # [n, 2] paired
            row["difference_vs_plain"] = float(correct[name].mean() - correct["plain"].mean())
            row["difference_ci95"] = list(
                bootstrap_interval(
                    difference, lambda d: float(d[:, 0].mean() - d[:, 1].mean()), seed=args.seed
                )
            )
        table.append(
            [
                name,
                f"{row['accuracy']:.1%} ({low:.1%}-{high:.1%})",
                f"{row['baseline_accuracy']:.1%}",
                f"{row.get('difference_vs_plain', 0.0):+.1%}"
                + (" ({:+.1%} to {:+.1%})".format(*row["difference_ci95"]) if name != "plain" else ""),
                f"{row['train_seconds']:.0f}",
                f"{row['infer_ms_per_image']:.1f} ({row['infer_ratio_vs_plain']:.2f}x)",
                f"{row['load_before']}/{row['load_after']}",
            ]
        )
    print_table(
        [
            "run",
            "test accuracy (Wilson 95%)",
            "majority",
            "vs plain (paired 95%)",
            "train s",
            "infer ms/img",
            "load",
        ],
        table,
    )
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    write_json(
        args.json,
        {
            "machine": facts,
            "uptime_before": uptime,
            "uptime_after": uptime_after,
            "args": {k: str(v) for k, v in vars(args).items()},
            "images_per_split": counts,
            "n_test": len(paths),
            "rows": rows,
        },
    )
    return 0


def pool(files: list[Path]) -> int:
    """Pool runs of several seeds (each its own split and training): accuracy over all their test
    images, and the difference from the plain run with a paired bootstrap over those images."""
    results = [json.loads(f.read_text()) for f in files]
    names = [row["name"] for row in results[0]["rows"]]
    correct = {
        name: np.concatenate([_row(r, name)["correct"] for r in results]).astype(float) for name in names
    }
    table = []
    for name in names:
        hits, n = int(correct[name].sum()), len(correct[name])
        low, high = wilson_interval(hits, n)
        per_seed = " ".join(f"{_row(r, name)['accuracy']:.3f}" for r in results)
        cells = [name, f"{hits / n:.1%} ({low:.1%}-{high:.1%})", str(n), per_seed]
        if name == "plain":
            cells.append("")
        else:
            paired = np.stack([correct[name], correct["plain"]], axis=1)
            d_low, d_high = bootstrap_interval(
                paired, lambda d: float(d[:, 0].mean() - d[:, 1].mean()), seed=0
            )
            cells.append(
                f"{correct[name].mean() - correct['plain'].mean():+.1%} ({d_low:+.1%} to {d_high:+.1%})"
            )
        table.append(cells)
    baselines = " ".join(f"{_row(r, 'plain')['baseline_accuracy']:.3f}" for r in results)
    print(f"{len(results)} results files; majority baseline per file: {baselines}")
    print_table(["run", "test accuracy (Wilson 95%)", "n", "per file", "vs plain (paired 95%)"], table)
    return 0


def _row(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(row for row in result["rows"] if row["name"] == name)


def _load(path: Path) -> Any:
    from ewaste_vision.data.images import load_rgb

    return load_rgb(path)


if __name__ == "__main__":
    raise SystemExit(main())
