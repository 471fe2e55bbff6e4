"""`train_detector`: YOLO data -> grouped split -> FCOS trained by Lightning -> test metrics.

With `repeats` > 1 the same training runs with seeds seed, seed+1, ... (001 averages 10 runs); the
run directory keeps the first seed's model, the others go to `repeats/seed-N/`, and the report
gives mean and standard deviation over all of them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from ewaste_vision.config import TrainConfig
from ewaste_vision.data.records import LabelledImages
from ewaste_vision.detect.data import DetectionDataset, collate_detection, dataset_modality, typical_side
from ewaste_vision.detect.model import build_detector
from ewaste_vision.detect.module import DetectionModule
from ewaste_vision.hardware import configure_threads, quiet_lightning, training_device, use_bf16
from ewaste_vision.models.classifier import set_backbone_trainable
from ewaste_vision.models.registry import get_backbone_spec
from ewaste_vision.runs import ModelMeta, save_model
from ewaste_vision.tasks.registry import Task
from ewaste_vision.training.init_from_run import load_source_backbone, read_source_backbone
from ewaste_vision.training.trainer import (
    TrainResult,
    describe_duplicates,
    fit_with_checkpoints,
    prepare_run_dir,
    split_dataset,
)

log = logging.getLogger(__name__)


def train_detector(task: Task, config: TrainConfig, progress: bool = True) -> TrainResult | None:
    """Train (and evaluate) a detector as `config` says; see the module docstring for repeats."""
    from ewaste_vision.detect.evaluate import evaluate_detector, summarise_repeat_runs

    started = time.perf_counter()
    configure_threads()
    quiet_lightning()
    run_dir = Path(config.out)
    config = prepare_run_dir(config, run_dir)
    dataset, duplicates = split_dataset(task, config, run_dir)
    spec = get_backbone_spec(config.backbone)
    image_size = config.image_size or spec.input_size
    device = training_device(config.accelerator)
    bf16 = use_bf16(config.precision, device)
    context: dict[str, Any] = {
        "dataset": str(Path(config.data).resolve()),
        "image_size": image_size,
        "detector_size": config.detector_size,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "skipped": [f"{path}: {reason}" for path, reason in dataset.skipped],
        "duplicates": describe_duplicates(duplicates, dataset.has_split),
    }
    all_metrics: list[dict[str, Any]] = []
    report = run_dir / "report.md"
    for repeat in range(config.repeats):
        seed = config.seed + repeat
        seed_dir = run_dir if repeat == 0 else run_dir / "repeats" / f"seed-{seed}"
        seed_dir.mkdir(parents=True, exist_ok=True)
        seed_started = time.perf_counter()
        # On --resume every seed continues from its last checkpoint; a finished one ends at once.
        trained = _train_one(dataset, config, seed, seed_dir, image_size, device, bf16, progress)
        if trained is None:
            return None
        context.update(trained)
        context.update({"seed": seed, "training_s": round(time.perf_counter() - seed_started, 1)})
        metrics, report = evaluate_detector(seed_dir, context=context, progress=progress)
        all_metrics.append(metrics)
    if config.repeats > 1:
        metrics, report = summarise_repeat_runs(run_dir, all_metrics, context)
    else:
        metrics = all_metrics[0]
    return TrainResult(run_dir, metrics, report, time.perf_counter() - started)


def _train_one(
    dataset: LabelledImages,
    config: TrainConfig,
    seed: int,
    seed_dir: Path,
    image_size: int,
    device: str,
    bf16: bool,
    progress: bool,
) -> dict[str, Any] | None:
    """Train one seed's detector and save it in `seed_dir`; None on DDP ranks other than 0."""
    L.seed_everything(seed, workers=True, verbose=False)
    detector, weights_source = build_detector(
        config.backbone,
        len(dataset.class_names),
        config.detector_size,
        image_size,
        config.pretrained and not config.init,
        config.weights,
    )
    if config.init:
        source = read_source_backbone(config.init, config.backbone)
        weights_source = load_source_backbone(detector.backbone.body, source)
    # An untrained backbone trains whole: random early filters are not worth keeping.
    set_backbone_trainable(
        detector.backbone.body, config.backbone, config.strategy, freeze_early=weights_source != "untrained"
    )
    modality = dataset_modality(Path(config.data))
    train_set = DetectionDataset(dataset.in_split("train"), image_size, config.augment, modality)
    val_set = DetectionDataset(dataset.in_split("val"), image_size, modality=modality)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        train_set, config.batch_size, shuffle=True, generator=generator, collate_fn=collate_detection
    )
    val_loader = DataLoader(val_set, config.batch_size, collate_fn=collate_detection)
    module = DetectionModule(detector, config.lr, config.weight_decay, config.max_epochs)
    trainer, score = fit_with_checkpoints(
        module,
        train_loader,
        val_loader,
        seed_dir,
        config.max_epochs,
        config,
        device,
        bf16,
        progress,
        monitor="val_map50",
        mode="max",
        ddp_strategy="ddp_find_unused_parameters_true",
    )
    if trainer.global_rank != 0:
        return None
    spec = get_backbone_spec(config.backbone)
    meta = ModelMeta(
        "detect",
        dataset.class_names,
        config.backbone,
        image_size,
        spec.mean,
        spec.std,
        extra={
            "detector_size": config.detector_size,
            "modality": modality,
            "source_size": typical_side(train_set),
        },
    )
    from ewaste_vision.detect.evaluate import choose_detect_sizes

    # Chosen before saving: the run's metadata says at which sizes it detects. A box classifier
    # looks again at every box at the photo's own resolution, which is what a native-size pass was
    # for, at a fraction of its time; so with one the run detects at its training size alone
    # (BENCHMARKS.md, "A second look at each box").
    sizes, size_scores = (
        ([image_size], {})
        if config.box_classifier
        else choose_detect_sizes(detector.cpu(), meta, dataset.in_split("val"))
    )
    meta.extra["detect_sizes"] = sizes
    state = detector.state_dict()
    box_facts: dict[str, Any] = {}
    if config.box_classifier:
        from ewaste_vision.detect.box_classifier_train import add_box_classifier

        splits = {split: dataset.in_split(split) for split in ("train", "val")}
        state, box_facts = add_box_classifier(
            detector, state, meta, splits, config, seed_dir / "box_classifier", device, bf16, progress
        )
    save_model(seed_dir, state, meta)
    return {
        "detect_sizes": "+".join(map(str, sizes)),
        "validation_map50_by_sizes": size_scores or None,  # empty when no choice was made
        **box_facts,
        "backbone": f"{config.backbone} ({weights_source})",
        "input": "dual-energy X-ray (high, low, mean log attenuation)"
        if modality == "xray"
        else "RGB photos",
        "strategy": config.strategy,
        "epochs": trainer.current_epoch,
        "best_val_map50": round(score, 4) if score is not None else None,
    }
