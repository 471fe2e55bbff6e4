"""`evaluate_fusion`: score a fusion run on its own test pairs or on another paired dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ewaste_vision.data.records import ImageRecord
from ewaste_vision.errors import DataError, UserError
from ewaste_vision.fusion.calibrate import fusion_layer_logits
from ewaste_vision.fusion.data import MODALITIES, PairedImages, read_pair_splits, read_paired_folders
from ewaste_vision.fusion.pairing import missing_partners, plan_pairs
from ewaste_vision.fusion.predictor import FusionPredictor
from ewaste_vision.io.atomic import write_json
from ewaste_vision.report.stats import wilson_interval

EVAL_SPLITS = ("train", "val", "test", "all")


def evaluate_fusion(
    run_dir: Path | str,
    data: Path | str | None = None,
    split: str = "test",
    context: dict[str, Any] | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], Path]:
    """Score the fusion model in `run_dir`; write metrics.json, report.md and plots.

    Without `data` the run's own split files are used (results in `run_dir`); with `data`, a
    paired dataset (results in `run_dir/eval/<folder>-<split>/`). Test pairs are drawn once from
    the run's seed: true pairs (same stem) as they are, every other image with a random partner
    of its class and a random X-ray orientation (002, Sec. IV-C).
    """
    from ewaste_vision.report.classification import classification_metrics

    if split not in EVAL_SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(EVAL_SPLITS)}")
    run_dir = Path(run_dir)
    predictor = FusionPredictor.from_run(run_dir)
    class_names = predictor.meta.class_names
    seed = int(predictor.meta.extra.get("seed", 0))
    own = read_pair_splits(run_dir, class_names)
    if data is None:
        # The run's own pairs of that split, drawn as training drew them for validation and test.
        use = split if split in ("val", "test") else "eval"
        paired, out_dir, source = own, run_dir, "the run's own split"
    else:
        paired = _relabelled(read_paired_folders(data), class_names)
        out_dir = run_dir / "eval" / f"{Path(data).resolve().name}-{split}"
        source, use = str(Path(data).resolve()), "eval"
    chosen = {m: _in_split(paired.side(m), split) for m in MODALITIES}
    if not chosen["rgb"] or not chosen["xray"]:
        raise DataError(f"{data or run_dir}: no RGB or no X-ray images in the {split} split; try --split all")
    for label in missing_partners(chosen["rgb"], chosen["xray"]):
        side = "xray" if any(r.label == label for r in chosen["rgb"]) else "rgb"
        raise DataError(
            f"{paired.root / side}: class {class_names[label]!r} has no {side} images in the {split} "
            f"split to pair with; add some, or evaluate with --split all"
        )
    pairs = plan_pairs(chosen["rgb"], chosen["xray"], seed, use)
    probs, per_stream, scored, skipped = predictor.predict_pairs(
        chosen["rgb"], chosen["xray"], pairs, stream_logits=True
    )
    if not scored:
        raise DataError(f"{data or run_dir}: no pair in the {split} split has two readable images")
    targets = torch.tensor([pairs[n].label for n in scored])
    train_pairs = (
        plan_pairs(_in_split(own.rgb, "train"), _in_split(own.xray, "train"), seed, "train")
        if _in_split(own.rgb, "train")
        else []
    )
    train_labels = [p.label for p in train_pairs] or None
    metrics = classification_metrics(targets, probs, class_names, train_labels=train_labels)
    metrics.update(
        {
            "task": "fuse",
            "fusion": predictor.meta.extra.get("fusion"),
            "split": split,
            "evaluated_on": source,
            "unit": "pair",
            "true_pairs": sum(pairs[n].true_pair for n in scored),
            "random_pairs": sum(not pairs[n].true_pair for n in scored),
            "test_images": {m: len(chosen[m]) for m in MODALITIES},
            "skipped_files": len(skipped),
            "stream_heads_on_pairs": {m: _accuracy(per_stream[m], targets) for m in MODALITIES},
            **_stage2_on_pairs(predictor.meta.extra.get("calibration"), per_stream, targets),
            "streams_alone": predictor.meta.extra.get("stream_scores", {}),
            "training_seconds": predictor.meta.extra.get("training_seconds", {}),
        }
    )
    write_json(out_dir / "metrics.json", metrics)
    report = _write_report(out_dir, run_dir, metrics, context or {}, skipped, source, split)
    return metrics, report


def _stage2_on_pairs(
    calibration: dict[str, Any] | None, logits: dict[str, torch.Tensor], targets: torch.Tensor
) -> dict[str, Any]:
    """The stage-2 fusion layer (before stage 3 refitted it on validation pairs) on the same pairs,
    and stage 3's figures; nothing for runs made before stage 3 existed."""
    if not calibration or "stage2_fusion" not in calibration:
        return {}
    stage2 = {k: torch.tensor(v) for k, v in calibration["stage2_fusion"].items()}  # weight, bias
    fused = fusion_layer_logits(stage2["weight"], stage2["bias"], logits["rgb"], logits["xray"])
    summary = {k: v for k, v in calibration.items() if k != "stage2_fusion"}
    return {"stage2_fusion_on_pairs": _accuracy(fused, targets), "calibration": summary}


def _accuracy(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    correct = int((probs.argmax(dim=1) == targets).sum())
    return {"accuracy": correct / len(targets), "accuracy_ci95": list(wilson_interval(correct, len(targets)))}


def _in_split(records: list[ImageRecord], split: str) -> list[ImageRecord]:
    return list(records) if split == "all" else [r for r in records if r.split in (split, None)]


def _relabelled(data: PairedImages, class_names: list[str]) -> PairedImages:
    """Another paired dataset, relabelled into the model's class indices."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(data.class_names) - set(index))
    if unknown:
        raise DataError(
            f"{data.root}: class {unknown[0]!r} is not one the model knows ({', '.join(class_names)})"
        )

    def relabel(records: list[ImageRecord]) -> list[ImageRecord]:
        return [dataclasses.replace(r, label=index[data.class_names[r.label]]) for r in records]

    return dataclasses.replace(data, class_names=class_names, rgb=relabel(data.rgb), xray=relabel(data.xray))


def _write_report(
    out_dir: Path,
    run_dir: Path,
    metrics: dict[str, Any],
    context: dict[str, Any],
    skipped: list[tuple[str, str]],
    source: str,
    split: str,
) -> Path:
    from ewaste_vision.report.markdown import write_classification_report
    from ewaste_vision.report.plots import plot_confusion_matrix, plot_learning_curves

    plots = {
        "confusion matrix (fused)": plot_confusion_matrix(
            metrics["confusion_matrix"], metrics["class_names"], out_dir / "plots" / "confusion_matrix.png"
        )
    }
    log_file = run_dir / "logs" / "metrics.csv"
    if log_file.is_file():
        plots["learning curves (stage 2)"] = plot_learning_curves(
            log_file, out_dir / "plots" / "learning_curves.png"
        )
    notes = [
        f"The unit is a pair: {metrics['true_pairs']} true pairs (same file stem) and "
        f"{metrics['random_pairs']} random pairs (a partner of the same class, X-ray randomly re-oriented).",
    ]
    for modality, label in (("rgb", "RGB"), ("xray", "X-ray")):
        alone = metrics["streams_alone"].get(modality, {})
        if "accuracy" in alone:
            low, high = alone["accuracy_ci95"]
            notes.append(
                f"{label} stream alone (its own run, {alone['run']}): accuracy {alone['accuracy']:.1%} "
                f"(95% CI {low:.1%}-{high:.1%}) on {alone['n_test']} test images; baseline "
                f"{alone.get('baseline_accuracy', float('nan')):.1%}."
            )
        head = metrics["stream_heads_on_pairs"][modality]
        notes.append(f"{label} classification layer after fusion, on the same pairs: {head['accuracy']:.1%}.")
    if "stage2_fusion_on_pairs" in metrics:
        trust = metrics["calibration"]["stream_weight"]
        notes.append(
            f"Fusion layer as stage 2 fitted it on training pairs, on the same pairs: "
            f"{metrics['stage2_fusion_on_pairs']['accuracy']:.1%}; the scored layer was refitted on "
            f"{metrics['calibration']['val_pairs']} validation pairs (stream weights RGB "
            f"{trust['rgb']:.2f}, X-ray {trust['xray']:.2f})."
        )
    report_context = {
        **{k: v for k, v in context.items() if k != "skipped"},
        "title": f"RGB-X fusion report: {run_dir.name}",
        "evaluated_on": f"{source}, split {split}",
        "skipped": [*context.get("skipped", []), *(f"{p}: {why}" for p, why in skipped)],
        "notes": notes,
    }
    return write_classification_report(out_dir, metrics, plots, report_context)
