"""Precision and recall of `ewaste data clean` on a folder of real photos with planted problems.

A crawl-like folder is built in a temporary directory (never in the repository) from
`../shared/data`: four device classes of `ewaste-devices` (within-dataset duplicates and photos
under 64 px removed first, so that the base photos are a clean ground truth), and into each class:

- `off_topic`: component crops (`component-crops`), circuit-board photos (`pcb-components`),
  synthetic screenshots drawn with PIL, and photos of devices of the four other classes;
- `duplicate`: byte copies of base photos;
- `near_duplicate`: base photos shrunk to 75% and re-encoded as JPEG at quality 70;
- `tiny`: other photos of the class shrunk to a 40 px short side;
- `not_image`: an HTML page and a JPEG cut to a third of its bytes, both named `.jpg`.

The cleaner runs with its defaults (EfficientNet-Lite0 ImageNet features, `--min-size 64`,
`--outlier-mads 1.75`), and each flag is scored against what was planted. For a planted copy the
pair counts: whichever of copy and original is flagged as the copy is a hit. Every source (photos,
crops, boards, other devices) is cut into a `dev` and a `test` half: the off-topic rule and its
threshold were chosen on `dev` (`--explore`: each rule at each cut, on the whole dev half and on
200 dev folders re-drawn from it, and the choice by `MIN_PRECISION`'s criterion), and `test` is
the figure to quote.

    python bench/bench_clean.py              # ~2 min CPU; both halves
    python bench/bench_clean.py --explore    # also the off-topic rules compared on dev
    python bench/bench_clean.py --explore --features-cache /tmp/clean_features.npz  # embed once
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from _common import RESULTS_DIR, describe, machine_facts, print_table, write_json
from ewaste_vision.collect.clean import BackboneFeatures, CleanReport, CleanSettings, clean_folder
from ewaste_vision.collect.outliers import local_similarity
from ewaste_vision.data.dedup import group_duplicates, image_fingerprints
from ewaste_vision.data.images import expand_image_paths
from ewaste_vision.hardware import configure_threads
from ewaste_vision.report.stats import wilson_interval

CLASSES = ("Mobile", "laptop", "smartwatch", "TV")
OTHER_DEVICES = ("Keyboards", "Mouses", "microwave", "camera")
KINDS = ("not_image", "duplicate", "tiny", "near_duplicate", "off_topic")
PLANTS = {
    "crop": 3,
    "board": 3,
    "screenshot": 2,
    "other_device": 2,
    "duplicate": 3,
    "near_duplicate": 3,
    "tiny": 3,
    "not_image": 2,
}
SWEEP_MADS = (1.5, 1.75, 2.0, 2.5, 3.0)


MAD_TO_SD = 1.4826
"""MAD x this estimates the standard deviation of normally distributed values (the rules compared)."""


def clean_pools(pools: dict[str, list[Path]], min_side: int) -> dict[str, list[Path]]:
    """Each class's photos less copies (one photo per group of exact or near copies, across all
    classes) and less photos under `min_side` px: what is left is a clean ground truth."""
    tagged = [(name, path) for name, paths in pools.items() for path in paths]
    groups = group_duplicates(image_fingerprints([path for _, path in tagged]))
    kept: dict[str, list[Path]] = {name: [] for name in pools}
    seen: set[int] = set()
    for (name, path), group in zip(tagged, groups, strict=True):
        if group < 0 or group in seen:
            continue
        seen.add(group)
        with Image.open(path) as image:
            if min(image.size) >= min_side:
                kept[name].append(path)
    return kept


def screenshot(rng: random.Random) -> Image.Image:
    """A phone or desktop screen: a coloured bar, text lines and buttons."""
    width, height = rng.choice([(390, 844), (1280, 720), (1080, 1920)])
    image = Image.new("RGB", (width, height), rng.choice([(255, 255, 255), (245, 245, 250), (24, 24, 28)]))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, height // 12), fill=tuple(rng.randrange(256) for _ in range(3)))
    ink = (20, 20, 20) if image.getpixel((5, height - 5))[0] > 128 else (230, 230, 230)
    words = [
        "order",
        "your",
        "phone",
        "today",
        "free",
        "shipping",
        "battery",
        "charger",
        "case",
        "screen",
        "price",
        "cart",
    ]
    for y in range(height // 10, height - 40, max(18, height // 40)):
        draw.text((20, y), " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))), fill=ink)
    for _ in range(3):
        x, y = rng.randrange(width - 120), rng.randrange(height // 8, height - 60)
        draw.rounded_rectangle((x, y, x + 110, y + 36), radius=8, fill=(30, 120, 230))
    return image


def half_of(paths: Sequence[Path], half: str) -> list[Path]:
    """The `dev` or the `test` half of `paths` (a fixed shuffle, the same for every run)."""
    shuffled = sorted(paths)
    random.Random(0).shuffle(shuffled)
    middle = len(shuffled) // 2
    return shuffled[:middle] if half == "dev" else shuffled[middle:]


def build_folder(data: Path, root: Path, per_class: int, half: str) -> dict[str, dict[str, str]]:
    """Fill `root/CLASS/NNNNNN.jpg` from the `dev` or `test` half of every source; returns
    file -> {kind, source, original} (kind "clean" for base photos)."""
    rng = random.Random(f"plants-{half}")
    devices = data / "ewaste-devices" / "images"
    crops = half_of(list((data / "component-crops" / "images").iterdir()), half)
    boards = half_of(list((data / "pcb-components" / "train" / "images").iterdir()), half)
    others = half_of([p for name in OTHER_DEVICES for p in expand_image_paths([devices / name])], half)
    truth: dict[str, dict[str, str]] = {}
    pools = clean_pools({name: half_of(expand_image_paths([devices / name]), half) for name in CLASSES}, 64)
    for name in CLASSES:
        pool = pools[name]
        rng.shuffle(pool)
        if len(pool) < per_class + PLANTS["tiny"] + 1:
            raise SystemExit(
                f"{name}: {len(pool)} clean photos in the {half} half; use --per-class under that"
            )
        base, spare = pool[:per_class], pool[per_class:]
        items: list[tuple[str, str, object]] = [("clean", "", path) for path in base]
        items += [("off_topic", "crop", p) for p in rng.sample(crops, PLANTS["crop"])]
        items += [("off_topic", "board", p) for p in rng.sample(boards, PLANTS["board"])]
        items += [("off_topic", "screenshot", screenshot(rng)) for _ in range(PLANTS["screenshot"])]
        items += [("off_topic", "other_device", p) for p in rng.sample(others, PLANTS["other_device"])]
        items += [("duplicate", "copy", p) for p in rng.sample(base, PLANTS["duplicate"])]
        items += [("near_duplicate", "shrunk", p) for p in rng.sample(base, PLANTS["near_duplicate"])]
        items += [("tiny", "shrunk", p) for p in spare[: PLANTS["tiny"]]]
        items += [("not_image", "html", b"<html><body><h1>403 Forbidden</h1></body></html>")]
        items += [("not_image", "truncated", spare[PLANTS["tiny"]])]
        numbers = list(range(1, len(items) + 1))
        rng.shuffle(numbers)  # file numbers say nothing about what was planted
        folder = root / name
        folder.mkdir(parents=True)
        written: dict[Path, str] = {}
        # Base photos first, so that a planted copy can name the file of its original.
        for position in sorted(range(len(items)), key=lambda i: items[i][0] != "clean"):
            kind, source, item = items[position]
            target = folder / f"{numbers[position]:06d}.jpg"
            original = ""
            if kind == "clean":
                shutil.copyfile(item, target)  # type: ignore[arg-type]
                written[item] = target.relative_to(root).as_posix()  # type: ignore[index]
            elif kind == "duplicate":
                shutil.copyfile(item, target)  # type: ignore[arg-type]
                original = written[item]  # type: ignore[index]
            elif kind == "near_duplicate":
                image = Image.open(item).convert("RGB")  # type: ignore[arg-type]
                image.resize((round(image.width * 0.75), round(image.height * 0.75))).save(
                    target, "JPEG", quality=70
                )
                original = written[item]  # type: ignore[index]
            elif kind == "tiny":
                image = Image.open(item).convert("RGB")  # type: ignore[arg-type]
                image.thumbnail((40 * max(image.size) // min(image.size),) * 2)
                image.save(target, "JPEG", quality=90)
            elif source == "html":
                target.write_bytes(item)  # type: ignore[arg-type]
            elif source == "truncated":
                data_bytes = Path(item).read_bytes()  # type: ignore[arg-type]
                target.write_bytes(data_bytes[: len(data_bytes) // 3])
            elif isinstance(item, Image.Image):
                item.save(target, "JPEG", quality=90)
            else:
                shutil.copyfile(item, target)  # type: ignore[arg-type]
            truth[target.relative_to(root).as_posix()] = {
                "kind": kind,
                "source": source,
                "original": original,
            }
    return truth


def score(report: CleanReport, truth: dict[str, dict[str, str]]) -> dict[str, dict[str, float | int]]:
    """Per flag kind: planted, flagged, hits, precision, recall (with Wilson 95% intervals)."""
    verdicts = {v.file: v for v in report.files}
    hits: Counter[str] = Counter()
    credited: set[str] = set()
    for file, planted in truth.items():
        kind = planted["kind"]
        if kind == "clean":
            continue
        verdict = verdicts[file]
        if verdict.reason == kind:
            hits[kind] += 1
            credited.add(file)
        elif kind in ("duplicate", "near_duplicate") and verdicts[planted["original"]].reason == kind:
            hits[kind] += 1  # the original was flagged as the copy's copy: the pair is caught
            credited.add(planted["original"])
    results: dict[str, dict[str, float | int]] = {}
    for kind in (*KINDS, "any"):
        planted = sum(
            1 for t in truth.values() if (t["kind"] == kind or (kind == "any" and t["kind"] != "clean"))
        )
        flagged = sum(1 for v in report.files if (v.reason == kind or (kind == "any" and v.reason)))
        hit = sum(hits.values()) if kind == "any" else hits[kind]
        precision_low, precision_high = wilson_interval(hit, flagged) if flagged else (0.0, 1.0)
        recall_low, recall_high = wilson_interval(hit, planted) if planted else (0.0, 1.0)
        results[kind] = {
            "planted": planted,
            "flagged": flagged,
            "hits": hit,
            "precision": hit / flagged if flagged else float("nan"),
            "precision_ci": [precision_low, precision_high],
            "recall": hit / planted if planted else float("nan"),
            "recall_ci": [recall_low, recall_high],
        }
    return results


def off_topic_by_source(report: CleanReport, truth: dict[str, dict[str, str]]) -> dict[str, str]:
    """Recall of off-topic flags per kind of planted image, as 'hits/planted'."""
    verdicts = {v.file: v for v in report.files}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for file, planted in truth.items():
        if planted["kind"] == "off_topic":
            counts[planted["source"]][1] += 1
            counts[planted["source"]][0] += verdicts[file].reason == "off_topic"
    return {source: f"{hit}/{total}" for source, (hit, total) in sorted(counts.items())}


def confusion(report: CleanReport, truth: dict[str, dict[str, str]]) -> dict[str, dict[str, int]]:
    """Planted kind (off-topic by source) -> the cleaner's verdicts on those files, counted."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for verdict in report.files:
        planted = truth[verdict.file]
        row = f"off_topic:{planted['source']}" if planted["kind"] == "off_topic" else planted["kind"]
        table[row][verdict.reason or "accepted"] += 1
    return {row: dict(sorted(counts.items())) for row, counts in sorted(table.items())}


def off_topic_auc(report: CleanReport, truth: dict[str, dict[str, str]]) -> dict[str, float | int]:
    """How well the off-topic score ranks, whatever the threshold: the chance that a planted
    off-topic image scores above an on-topic one (ROC AUC), over the images that were scored."""
    scored = [(v.score, truth[v.file]["kind"] == "off_topic") for v in report.files if v.score is not None]
    positives = [score for score, planted in scored if planted]
    negatives = [score for score, planted in scored if not planted]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return {
        "auc": wins / max(1, len(positives) * len(negatives)),
        "off_topic": len(positives),
        "on_topic": len(negatives),
    }


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _centre_similarity(unit: np.ndarray) -> np.ndarray:
    """Cosine similarity to a robust centre: the mean of the closest half, three rounds."""
    centre = unit.mean(0) / np.linalg.norm(unit.mean(0))
    for _ in range(3):
        closest = unit[np.argsort(-(unit @ centre))[: max(1, len(unit) // 2)]]
        centre = closest.mean(0) / np.linalg.norm(closest.mean(0))
    return unit @ centre


def _two_sided(similarity: np.ndarray) -> np.ndarray:
    median = np.median(similarity)
    return (median - similarity) / (MAD_TO_SD * max(float(np.median(np.abs(similarity - median))), 0.01))


def _one_sided(similarity: np.ndarray) -> np.ndarray:
    median = np.median(similarity)
    upper = float(np.median(similarity[similarity >= median] - median))
    return (median - similarity) / (MAD_TO_SD * max(upper, 0.005))


def _upper_deviations(similarity: np.ndarray) -> np.ndarray:
    return similarity[similarity >= np.median(similarity)] - np.median(similarity)


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _per_class(rule: Callable[[np.ndarray, Any], np.ndarray]) -> Rule:
    """A rule that scores each class on its own."""
    return lambda units, mean: [rule(unit, mean) for unit in units]


def _pooled(spread: Callable[[np.ndarray], float], shrink: int = 0) -> Rule:
    """7 nearest; each class's median; the spread of the deviations above the medians pooled over
    the folder (`shrink` > 0: each class's own spread, drawn towards the pooled one as if from
    `shrink` more values)."""

    def rule(units: list[np.ndarray], _: Any) -> list[np.ndarray]:
        similarities = [local_similarity(unit, 7) for unit in units]
        pooled = spread(np.concatenate([_upper_deviations(s) for s in similarities]))
        scores = []
        for s in similarities:
            upper = _upper_deviations(s)
            own = (len(upper) * spread(upper) + shrink * pooled) / (len(upper) + shrink) if shrink else pooled
            scores.append((np.median(s) - s) / max(own, 0.0075))
        return scores

    return rule


def _distance_ratio(units: list[np.ndarray], _: Any) -> list[np.ndarray]:
    """Cosine distance to the 7 nearest over the class's median distance (no spread at all)."""
    distances = [1 - local_similarity(unit, 7) for unit in units]
    return [d / np.median(d) for d in distances]


def _other_class(units: list[np.ndarray], _: Any) -> list[np.ndarray]:
    """Similarity to the 7 nearest of the closest other class minus that to the 7 nearest of its
    own: above 0, an image is as close to another class as to its own."""
    scores = []
    for index, unit in enumerate(units):
        others = [
            np.sort(unit @ other.T, axis=1)[:, -7:].mean(1) for j, other in enumerate(units) if j != index
        ]
        scores.append(np.max(others, axis=0) - local_similarity(unit, 7))
    return scores


Rule = Callable[[list[np.ndarray], Any], list[np.ndarray]]
"""Unit feature rows per class, the folder's mean row -> off-topic scores per class (high: off-topic)."""

RULES: dict[str, tuple[Rule, Sequence[float] | np.ndarray]] = {
    "centre, two-sided MAD": (_per_class(lambda unit, _: _two_sided(_centre_similarity(unit))), (2, 3)),
    "centre, one-sided": (_per_class(lambda unit, _: _one_sided(_centre_similarity(unit))), (2, 3)),
    "5 nearest, two-sided MAD": (_per_class(lambda unit, _: _two_sided(local_similarity(unit, 5))), (2, 3)),
    "5 nearest, one-sided": (_per_class(lambda unit, _: _one_sided(local_similarity(unit, 5))), (2, 3)),
    "7 nearest, one-sided, centred on the folder mean": (
        _per_class(lambda unit, mean: _one_sided(local_similarity(unit - mean, 7))),
        (2, 3),
    ),
    "7 nearest, one-sided per class (the product until issue 21's fix)": (
        _per_class(lambda unit, _: _one_sided(local_similarity(unit, 7))),
        np.arange(1.0, 2.51, 0.125),
    ),
    "7 nearest, per-class RMS of the upper half": (
        _per_class(lambda unit, _: _one_sided_rms(local_similarity(unit, 7))),
        np.arange(1.0, 2.51, 0.125),
    ),
    "7 nearest, per-class spread shrunk towards the pooled (25 values)": (
        _pooled(lambda d: MAD_TO_SD * float(np.median(d)), shrink=25),
        np.arange(1.0, 2.51, 0.125),
    ),
    "7 nearest, pooled one-sided MAD": (
        _pooled(lambda d: MAD_TO_SD * float(np.median(d))),
        np.arange(1.0, 2.51, 0.125),
    ),
    "7 nearest, pooled RMS of the upper halves (the product)": (_pooled(_rms), np.arange(1.0, 2.51, 0.125)),
    "distance to the 7 nearest / class median distance": (_distance_ratio, np.arange(1.1, 1.61, 0.05)),
    "closest other class minus own class": (_other_class, np.round(np.arange(-0.1, 0.051, 0.01), 3) + 0.0),
}
"""Off-topic rules compared on the dev half (`--explore`), each with the cuts it is tried at."""

RESAMPLES = 200
"""Dev folders re-drawn for the cut's stability: 3/4 of each class's on- and off-topic candidates."""
MIN_PRECISION = 0.80
"""The choice (dev only): among rules and cuts whose median precision over the resamples is at
least this, the highest 10th-percentile recall over the resamples, then the higher precision."""


def _one_sided_rms(similarity: np.ndarray) -> np.ndarray:
    return (np.median(similarity) - similarity) / max(_rms(_upper_deviations(similarity)), 0.0075)


def _flags(scores: np.ndarray, off_topic: np.ndarray, cut: float) -> tuple[int, float, float]:
    flagged = scores > cut
    hits = int((flagged & off_topic).sum())
    return int(flagged.sum()), hits / max(1, int(flagged.sum())), hits / max(1, int(off_topic.sum()))


def explore_rules(
    report: CleanReport, features: MemoFeatures, truth: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """Each rule of `RULES` on the same candidates and embeddings: AUC, and at each cut the flags on
    the whole dev half and their spread over `RESAMPLES` re-drawn dev folders; then the choice."""
    candidates: dict[str, list[str]] = defaultdict(list)
    for verdict in report.files:
        if verdict.similarity is not None:
            candidates[verdict.class_name].append(verdict.file)
    vectors = {p.relative_to(report.root).as_posix(): v for p, v in features.cache.items()}
    units = [_unit_rows(np.stack([vectors[f] for f in files])) for files in candidates.values()]
    folder_mean = np.concatenate(units).mean(0)
    labels = [np.array([truth[f]["kind"] == "off_topic" for f in files]) for files in candidates.values()]
    planted = sum(t["kind"] == "off_topic" for t in truth.values())
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(RESAMPLES):
        keeps = []
        for label in labels:
            keep = np.zeros(len(label), dtype=bool)
            for side in (True, False):
                where = np.flatnonzero(label == side)
                keep[rng.choice(where, size=round(0.75 * len(where)), replace=False)] = True
            keeps.append(keep)
        draws.append(keeps)
    results: dict[str, Any] = {}
    for name, (rule, cuts) in RULES.items():
        scores = np.concatenate(rule(units, folder_mean))
        off_topic = np.concatenate(labels)
        positives, negatives = scores[off_topic], scores[~off_topic]
        wins = (positives[:, None] > negatives[None]).sum() + 0.5 * (
            positives[:, None] == negatives[None]
        ).sum()
        redrawn = [
            (
                np.concatenate(rule([u[k] for u, k in zip(units, keeps, strict=True)], folder_mean)),
                np.concatenate([lab[k] for lab, k in zip(labels, keeps, strict=True)]),
            )
            for keeps in draws
        ]
        row: dict[str, Any] = {"auc": float(wins / (len(positives) * len(negatives))), "cuts": {}}
        for cut in cuts:
            flagged, precision, _ = _flags(scores, off_topic, cut)
            again = np.array([_flags(s, y, cut)[1:] for s, y in redrawn])  # [RESAMPLES, 2]
            row["cuts"][f"{cut:g}"] = {
                "flagged": flagged,
                "precision": precision,
                "recall": int((scores > cut)[off_topic].sum()) / planted,
                "resampled_precision_median": float(np.median(again[:, 0])),
                "resampled_recall_p10": float(np.percentile(again[:, 1], 10)),
                "resampled_recall_median": float(np.median(again[:, 1])),
            }
        results[name] = row
    eligible = [
        (r["resampled_recall_p10"], r["resampled_precision_median"], name, cut)
        for name, row in results.items()
        for cut, r in row["cuts"].items()
        if r["resampled_precision_median"] >= MIN_PRECISION
    ]
    best = max(eligible)
    return {"rules": results, "chosen": {"rule": best[2], "cut": best[3], "criterion": MIN_PRECISION}}


class MemoFeatures:
    """The backbone's features, computed once per file across the sweep.

    With `store` (an `.npz` file), features are also kept across runs, keyed by the backbone and
    the sha256 of the file's bytes (the built folders are the same bytes every run), so that a
    rerun of the bench reads them instead of embedding again; `save()` writes the file atomically.
    """

    def __init__(self, settings: CleanSettings, store: Path | None = None) -> None:
        self.compute = BackboneFeatures(settings)
        self.backbone = settings.backbone
        self.cache: dict[Path, np.ndarray] = {}
        self.store = store
        self.stored: dict[str, np.ndarray] = {}
        self.computed = 0
        if store is not None and store.is_file():
            with np.load(store) as saved:
                self.stored = dict(zip(saved["keys"].tolist(), saved["features"], strict=True))

    def _key(self, path: Path) -> str:
        return self.backbone + ":" + hashlib.sha256(path.read_bytes()).hexdigest()

    def __call__(self, paths: Sequence[Path]) -> np.ndarray:
        for path in paths:
            if path not in self.cache and self.store is not None:
                found = self.stored.get(self._key(path))
                if found is not None:
                    self.cache[path] = found
        missing = [p for p in paths if p not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.compute(missing), strict=True))
            self.computed += len(missing)
            if self.store is not None:
                self.stored.update((self._key(p), self.cache[p]) for p in missing)
        return np.stack([self.cache[p] for p in paths])

    def save(self) -> None:
        if self.store is None or not self.computed:
            return
        self.store.parent.mkdir(parents=True, exist_ok=True)
        partial = self.store.with_name(self.store.name + ".partial.npz")
        keys = sorted(self.stored)
        np.savez(partial, keys=np.array(keys), features=np.stack([self.stored[k] for k in keys]))
        os.replace(partial, self.store)


def measure(
    data: Path, per_class: int, half: str, explore: bool = False, store: Path | None = None
) -> dict[str, Any]:
    """Build the `half` folder in a temporary directory, clean it with the defaults, sweep the threshold."""
    work = Path(tempfile.mkdtemp(prefix=f"bench_clean_{half}_"))
    try:
        truth = build_folder(data, work / "crawl", per_class, half)
        settings = CleanSettings()
        features = MemoFeatures(settings, store)
        started = time.perf_counter()
        report = clean_folder(work / "crawl", settings, features=features)
        seconds = time.perf_counter() - started
        features.save()
        sweep = {}
        for mads in SWEEP_MADS:
            swept = clean_folder(work / "crawl", CleanSettings(outlier_mads=mads), features=features)
            sweep[str(mads)] = score(swept, truth)["off_topic"] | {
                "by_source": off_topic_by_source(swept, truth)
            }
        rules = explore_rules(report, features, truth) if explore else {}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    planted = sum(t["kind"] != "clean" for t in truth.values())
    off_topic = sum(t["kind"] == "off_topic" for t in truth.values())
    return {
        "files": len(truth),
        "planted": planted,
        "seconds": seconds,
        "embedded": features.computed,
        "results": score(report, truth),
        "off_topic_by_source": off_topic_by_source(report, truth),
        "off_topic_prevalence": off_topic / len(truth),
        "off_topic_ranking": off_topic_auc(report, truth),
        "confusion": confusion(report, truth),
        "sweep_outlier_mads": sweep,
        **({"rules": rules} if rules else {}),
    }


def print_half(half: str, measured: dict[str, Any]) -> None:
    print(
        f"\n{half}: {measured['files']} files, {measured['planted']} planted; defaults took "
        f"{measured['seconds']:.0f} s ({measured['embedded']} images embedded, the rest cached)"
    )
    rows = [
        [
            kind,
            r["planted"],
            r["flagged"],
            r["hits"],
            f"{r['precision']:.3f}",
            f"{r['precision_ci'][0]:.2f}-{r['precision_ci'][1]:.2f}",
            f"{r['recall']:.3f}",
            f"{r['recall_ci'][0]:.2f}-{r['recall_ci'][1]:.2f}",
        ]
        for kind, r in measured["results"].items()
    ]
    print_table(["flag", "planted", "flagged", "hits", "precision", "95% CI", "recall", "95% CI"], rows)
    print(f"off-topic recall by planted source: {measured['off_topic_by_source']}")
    print("verdicts by what was planted:")
    for row, counts in measured["confusion"].items():
        print(f"  {row}: {counts}")
    ranking = measured["off_topic_ranking"]
    print(
        f"off-topic ranking, any threshold: ROC AUC {ranking['auc']:.3f} over {ranking['off_topic']} "
        f"off-topic and {ranking['on_topic']} on-topic scored images"
    )
    print(
        "off-topic baseline (flag at random): precision = prevalence = "
        f"{measured['off_topic_prevalence']:.3f}"
    )
    print_table(
        ["outlier_mads", "flagged", "hits", "precision", "recall", "by source"],
        [
            [m, r["flagged"], r["hits"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", r["by_source"]]
            for m, r in measured["sweep_outlier_mads"].items()
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument(
        "--per-class", type=int, default=40, help="base photos per class and half (default 40)"
    )
    parser.add_argument("--halves", nargs="+", default=["dev", "test"], choices=["dev", "test"])
    parser.add_argument("--explore", action="store_true", help="also compare off-topic rules (dev half)")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "clean.json")
    parser.add_argument(
        "--features-cache",
        type=Path,
        help="an .npz of backbone features by file hash: read, and written with what was embedded",
    )
    args = parser.parse_args()
    if not (args.data / "ewaste-devices").is_dir():
        raise SystemExit(f"{args.data}: ewaste-devices not found; pass --data ../shared/data")
    configure_threads()
    measured = {
        half: measure(args.data, args.per_class, half, args.explore and half == "dev", args.features_cache)
        for half in args.halves
    }
    facts = machine_facts()
    print(describe(facts))
    for half, figures in measured.items():
        print_half(half, figures)
        explored = figures.get("rules")
        if explored:
            print("\noff-topic rules on the dev half (recall over planted; resampled: 3/4 of each class):")
            for name, row in explored["rules"].items():
                print(f"  {name}: AUC {row['auc']:.3f}")
                for cut, r in row["cuts"].items():
                    p_med, r_med = r["resampled_precision_median"], r["resampled_recall_median"]
                    print(
                        f"    cut {cut}: {r['flagged']} flagged, P {r['precision']:.2f}, "
                        f"R {r['recall']:.2f}; resampled: P median {p_med:.2f}, R median {r_med:.2f}, "
                        f"R 10th percentile {r['resampled_recall_p10']:.2f}"
                    )
            chosen = explored["chosen"]
            print(
                f"chosen (highest resampled 10th-percentile recall at median precision >= "
                f"{chosen['criterion']}): {chosen['rule']}, cut {chosen['cut']}"
            )
    write_json(
        args.json,
        {
            "machine": facts,
            "per_class": args.per_class,
            "classes": CLASSES,
            "plants_per_class": PLANTS,
            "settings": CleanSettings().__dict__,
            **measured,
        },
    )


if __name__ == "__main__":
    main()
