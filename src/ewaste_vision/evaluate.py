"""`evaluate_run`: score a run's model on its own test split or on another dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ewaste_vision.data.records import ImageRecord
from ewaste_vision.data.split_file import read_split_file
from ewaste_vision.engines import EngineSettings
from ewaste_vision.errors import DataError, UserError
from ewaste_vision.inference import Predictor
from ewaste_vision.io.atomic import write_json

EVAL_SPLITS = ("train", "val", "test", "all")


def evaluate_run(
    run_dir: Path | str,
    data: Path | str | None = None,
    split: str = "test",
    context: dict[str, Any] | None = None,
    progress: bool = False,
    engine: str | EngineSettings = "local",
) -> tuple[dict[str, Any], Path]:
    """Score the model in `run_dir` and write metrics, plots and a report.

    `engine="ray"` computes the probabilities on Ray (see `predict.predict_paths`); the scores are
    computed here from them, as with the local engine.

    Without `data`, the run's own `split.csv` is used and results go to `run_dir/metrics.json` and
    `run_dir/report.md`. With `data`, results go to `run_dir/eval/<folder>-<split>/`.

    Returns:
        The metrics and the report's path.
    """
    from ewaste_vision.engines import as_engine

    settings = as_engine(engine)
    if split not in EVAL_SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(EVAL_SPLITS)}")
    run_dir = Path(run_dir)
    predictor = Predictor.from_run(run_dir)
    task, class_names = predictor.task, predictor.meta.class_names
    own_records = read_split_file(run_dir / "split.csv") if (run_dir / "split.csv").is_file() else []
    if data is None:
        if not own_records:
            raise UserError(f"{run_dir}: no split.csv; pass --data DIR to say what to evaluate on")
        records, out_dir = own_records, run_dir
        source = "the run's own split"
    else:
        records = _records_from_data(Path(data), task, class_names)
        out_dir = run_dir / "eval" / f"{Path(data).resolve().name}-{split}"
        source = str(Path(data).resolve())
    chosen = records if split == "all" else [r for r in records if r.split == split or r.split is None]
    if not chosen:
        raise DataError(f"{data or run_dir}: no images in the {split} split; try --split all")

    if settings.name == "ray":
        from ewaste_vision.engines.ray_engine import RayEngine

        runner = RayEngine.from_settings(settings, run_dir, out_dir / ".ray-parts", progress)
        probs_array, kept, skipped = runner.label_probabilities(
            [r.path for r in chosen], len(class_names)
        )
        kept = [Path(p) for p in kept]
        probs = torch.from_numpy(probs_array)
    else:
        probs, kept, skipped = predictor.predict_files([r.path for r in chosen], progress=progress)
    by_path = {r.path: r for r in chosen}
    targets = task.targets([by_path[p] for p in kept], len(class_names))
    train_records = [r for r in own_records if r.split == "train"]
    train_targets = task.targets(train_records, len(class_names)) if train_records else targets
    metrics = task.score(targets, probs, class_names, train_targets, predictor.meta.extra)
    metrics.update({"split": split, "evaluated_on": source, "skipped_files": len(skipped)})
    extra_metrics, extra_sections = task.extra_scores(predictor, [by_path[p] for p in kept])
    metrics.update(extra_metrics)
    write_json(out_dir / "metrics.json", metrics)
    report_context = {
        **(context or {}),
        "class_names": class_names,
        "run_dir": str(run_dir),
        "evaluated_on": f"{source}, split {split}",
        "split_sizes": _split_sizes(own_records),
        "skipped": [*(context or {}).get("skipped", []), *(f"{p}: {why}" for p, why in skipped)],
        "extra_sections": extra_sections,
    }
    report = task.write_report(out_dir, metrics, report_context)
    return metrics, report


def _records_from_data(data: Path, task: Any, class_names: list[str]) -> list[ImageRecord]:
    """Records of another dataset, relabelled into the model's class indices."""
    dataset = task.read_dataset(data)
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(dataset.class_names) - set(index))
    if unknown:
        raise DataError(f"{data}: class {unknown[0]!r} is not one the model knows ({', '.join(class_names)})")
    remap = {i: index[name] for i, name in enumerate(dataset.class_names)}
    return [
        ImageRecord(
            r.path,
            remap.get(r.label, -1),
            r.split,
            r.group,
            tuple(sorted(remap[i] for i in r.present)),
            tuple(dataclasses.replace(b, class_id=remap[b.class_id]) for b in r.boxes),
        )
        for r in dataset.records
    ]


def _split_sizes(records: list[ImageRecord]) -> str:
    counts = {s: sum(1 for r in records if r.split == s) for s in ("train", "val", "test")}
    return ", ".join(f"{s} {n}" for s, n in counts.items()) if records else "n/a"
