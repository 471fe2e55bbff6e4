"""003's two steps on data we have: the source run, then the transfer study on a small target.

Source: the hybrid from scratch on ewaste-devices (train it first, command in BENCHMARKS.md).
Target: 4 classes of component-crops, at most 60 images each, split by `part_group` so that no
part is photographed in two splits (003's screwdriver set: 4 classes, 240 images). The target is a
tree of links to the shared files under `--work` (never inside the repository), then
`run_transfer_study` trains every row on it.

    python bench/bench_transfer.py --source RUN --work /tmp/transfer-bench
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from _common import describe, machine_facts, pooled_accuracy, print_table, write_json

TARGET_CLASSES = ("IC", "LED", "SOT", "Tantalum capacitor")
"""Four component-crops classes with 51-152 images in 11-27 part groups: enough groups per class
for a grouped split with a test set in every class."""


def build_grouped_target(
    manifest: Path,
    out: Path,
    classes: tuple[str, ...] = TARGET_CLASSES,
    per_class: int = 60,
    fractions: tuple[float, float, float] = (0.5, 0.2, 0.3),
    seed: int = 0,
) -> dict[str, dict[str, int]]:
    """Write `out/{train,val,test}/CLASS/` links to at most `per_class` images of each class of a
    `class,file,part_group` manifest, whole part groups per split.

    Groups are shuffled with `seed` and taken until a class holds `per_class` images; each class's
    groups are then dealt to the splits so the image counts come close to `fractions`.

    Returns:
        Images per split per class.
    """
    rows = list(csv.DictReader(manifest.open(newline="", encoding="utf-8")))
    images = manifest.resolve().parent / "images"  # links are resolved from their own folder
    rng = random.Random(seed)
    counts: dict[str, dict[str, int]] = {}
    for name in classes:
        groups: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            if row["class"] == name:
                groups[row["part_group"]].append(row["file"])
        order = sorted(groups)
        rng.shuffle(order)
        chosen: list[tuple[str, list[str]]] = []
        total = 0
        for group in order:
            if total >= per_class:
                break
            files = sorted(groups[group])[: per_class - total]
            chosen.append((group, files))
            total += len(files)
        splits = _deal_groups([len(files) for _, files in chosen], fractions)
        counts[name] = {"train": 0, "val": 0, "test": 0}
        for (_, files), split in zip(chosen, splits, strict=True):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for file in files:
                link = folder / file
                if not link.exists():
                    link.symlink_to(images / file)
            counts[name][split] += len(files)
    return counts


def _deal_groups(sizes: list[int], fractions: tuple[float, float, float]) -> list[str]:
    """A split for each group: largest groups first, each to the split furthest below its share."""
    total = sum(sizes)
    wanted = {split: share * total for split, share in zip(("train", "val", "test"), fractions, strict=True)}
    filled = dict.fromkeys(wanted, 0)
    splits = [""] * len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        split = max(wanted, key=lambda name: wanted[name] - filled[name])
        filled[split] += sizes[index]
        splits[index] = split
    return splits


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, help="source run (the hybrid on ewaste-devices)")
    parser.add_argument("--work", type=Path, help="folder for the target links and the study")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/component-crops"))
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--head-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="the target split's and every row's seed")
    parser.add_argument("--imagenet", nargs="*", default=["efficientnet_lite0", "resnet18", "inception_v3"])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "transfer.json")
    parser.add_argument(
        "--pool", type=Path, nargs="+", help="results files of several seeds: one pooled table"
    )
    args = parser.parse_args()
    if args.pool:
        return pool(args.pool)
    if args.source is None or args.work is None:
        parser.error("--source and --work are required")

    from ewaste_vision.transfer.study import StudySettings, default_rows, row_title, run_transfer_study

    target = args.work / "target"
    counts = build_grouped_target(
        args.data / "manifest.csv", target, per_class=args.per_class, seed=args.seed
    )
    print("target:", counts)
    facts = machine_facts()
    settings = StudySettings(
        max_epochs=args.max_epochs, head_epochs=args.head_epochs, patience=args.patience, seed=args.seed
    )
    results, report = run_transfer_study(
        args.source, target, args.work / "study", default_rows(tuple(args.imagenet)), settings
    )
    facts_after = machine_facts()
    for result in results:
        title = row_title(result.row, result.backbone)
        print(f"{title}: {result.accuracy} {result.accuracy_ci95} {result.skipped}")
    print(f"report: {report}")
    print(describe(facts), "| at the end: load", facts_after["load_average_1min"])
    write_json(
        args.json,
        {
            "machine": facts,
            "load_at_end": facts_after["load_average_1min"],
            "target_counts": counts,
            "report": str(report),
            "rows": [
                {"row": row_title(r.row, r.backbone), **{k: v for k, v in vars(r).items() if k != "row"}}
                for r in results
            ],
        },
    )
    return 0


def pool(files: list[Path]) -> int:
    """One table over several seeds' results (each its own target split and training)."""
    results = [json.loads(f.read_text()) for f in files]
    table = []
    for index, row in enumerate(results[0]["rows"]):
        trained = [r["rows"][index] for r in results if r["rows"][index]["accuracy"] is not None]
        if len(trained) == len(results):
            table.append([row["row"], *pooled_accuracy([(r["accuracy"], r["n_test"]) for r in trained])])
    baselines = " ".join(f"{r['rows'][0]['baseline_accuracy']:.3f}" for r in results)
    print(f"{len(results)} results files; majority baseline per file: {baselines}")
    print_table(["row", "n test", "accuracy", "95% CI (Wilson)", "per file"], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
