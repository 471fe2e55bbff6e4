"""`train(config)`: from a dataset folder to a finished run directory."""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from ewaste_vision.config import TrainConfig
from ewaste_vision.data.datasets import ImageFileDataset
from ewaste_vision.data.records import LabelledImages
from ewaste_vision.data.split import DuplicateSummary, assign_splits
from ewaste_vision.data.split_file import write_split_file
from ewaste_vision.data.transforms import eval_transform
from ewaste_vision.errors import DataError, UserError, require_path
from ewaste_vision.hardware import configure_threads, quiet_lightning, training_device, use_bf16
from ewaste_vision.io.atomic import write_text, write_yaml
from ewaste_vision.models.classifier import (
    ImageClassifier,
    build_classifier,
    frozen_batchnorm_modules,
    set_trainable,
)
from ewaste_vision.models.icam import IcamClassifier
from ewaste_vision.models.registry import get_backbone_spec
from ewaste_vision.runs import MODEL_FILE, ModelMeta, save_model
from ewaste_vision.tasks import LabelTask, Task, get_task
from ewaste_vision.training.features import cached_features, extract_pooled_features
from ewaste_vision.training.icam_looks import LOOK_ROUNDS, LooksHead, looks_set, looks_val_loss
from ewaste_vision.training.init_from_run import load_source_backbone, read_source_backbone
from ewaste_vision.training.modules import SupervisedModule
from ewaste_vision.training.resumable import EpochShuffle, bind_epochs

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where the run is and what it scored."""

    run_dir: Path
    metrics: dict[str, Any]
    report: Path
    seconds: float


def train(config: TrainConfig, progress: bool = True) -> TrainResult | None:
    """Train a model as `config` says and evaluate it on the test split.

    Settings left at `auto` take the task's defaults. Returns None in DDP worker processes other
    than rank 0 (only rank 0 writes the results).
    """
    task = get_task(config.task)  # unknown names fail before anything is written
    if config.init:
        read_source_backbone(config.init, config.backbone)  # so does a bad --init run
    result: TrainResult | None = task.train_run(config.with_task_defaults(task.defaults), progress)
    return result


def train_labels(task: LabelTask, config: TrainConfig, progress: bool = True) -> TrainResult | None:
    """`train` for image-label tasks (classify, multilabel)."""
    started = time.perf_counter()
    configure_threads()
    quiet_lightning()
    run_dir = Path(config.out)
    spec = get_backbone_spec(config.backbone)
    config = prepare_run_dir(config, run_dir)
    dataset, duplicates = split_dataset(task, config, run_dir)
    image_size = config.image_size or spec.input_size
    L.seed_everything(config.seed, workers=True, verbose=False)
    model, weights_source = build_classifier(
        config.backbone,
        len(dataset.class_names),
        config.dropout,
        config.pretrained and not config.init,
        config.weights,
        head=config.head_settings(),
    )
    if config.init:
        source = read_source_backbone(config.init, config.backbone)
        weights_source = load_source_backbone(model.backbone, source)
    meta = ModelMeta(
        config.task, dataset.class_names, config.backbone, image_size, spec.mean, spec.std, config.dropout
    )
    icam = config.head == "icam"
    if icam:
        meta.extra["head"] = config.head_settings().to_dict()  # rebuilt from here by load_classifier
    device = training_device(config.accelerator)
    bf16 = use_bf16(config.precision, device)

    # (strategy, folder, inputs): "features" are cached pooled features of the whole image,
    # "looks" every iCAM look's cached features (`training.icam_looks`), "images" the images.
    # An iCAM head is probed on the whole image's features, then trained on its cached looks;
    # the probe's validation loss is the plain head's, not the iCAM network's, so it is no
    # candidate for the kept weights.
    stages: list[tuple[str, Path, str]] = []
    if config.strategy == "linear" or (config.head_warmup and weights_source != "untrained"):
        alone = config.strategy == "linear" and not icam
        stages.append(("linear", run_dir if alone else run_dir / "probe", "features"))
        if icam:
            stages += [("linear", run_dir / f"looks-{n}", "looks") for n in range(1, LOOK_ROUNDS + 1)]
    if config.strategy != "linear":
        stages.append((config.strategy, run_dir, "images"))
    best_loss, best_state, kept_stage = float("inf"), None, ""
    for strategy, stage_dir, inputs in stages:
        # Fine-tuning starts from a head already fitted on frozen features (linear probe, then
        # fine-tune): the backbone is not pushed around by a random head in the first epochs.
        set_trainable(model, config.backbone, strategy, freeze_early=weights_source != "untrained")
        if inputs == "features":
            module, train_loader, val_loader = _linear_setup(
                model, task, dataset, config, meta, run_dir, bf16, progress
            )
        elif inputs == "looks":
            module, train_loader, val_loader = _looks_setup(
                model, task, dataset, config, meta, run_dir, bf16, progress
            )
        else:
            module, train_loader, val_loader = _image_setup(model, task, dataset, config, meta)
        epochs = config.max_epochs if inputs == "images" else config.head_epochs
        trainer, score = fit_with_checkpoints(
            module, train_loader, val_loader, stage_dir, epochs, config, device, bf16, progress
        )
        if trainer.global_rank != 0:
            return None
        if inputs == "features" and icam:
            continue
        if inputs == "looks" and isinstance(model, IcamClassifier):
            # Scored on the looks its trained classifier chooses, not on the cached ones.
            score = looks_val_loss(model, task, dataset, config, meta, run_dir, bf16, progress)
        stage_loss = score if score is not None else float("inf")
        # Model selection on the validation split spans the stages too: a fine-tune that never
        # beats the linear probe's validation loss does not replace it.
        if stage_loss < best_loss:
            best_loss = stage_loss
            kept_stage = strategy if inputs != "looks" else f"{strategy} (iCAM looks, {stage_dir.name})"
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    meta.extra.update(config.extra)  # task settings travel with the run (e.g. `road_images`)
    meta.extra.update(_decision_settings(task, model, meta, dataset))
    if config.init:
        meta.extra["init_from"] = weights_source  # the run says where its weights came from
    save_model(run_dir, model.state_dict(), meta)
    training_seconds = time.perf_counter() - started

    from ewaste_vision.evaluate import evaluate_run

    context = {
        "dataset": str(Path(config.data).resolve()),
        "backbone": f"{config.backbone} ({weights_source})",
        "strategy": config.strategy
        + (
            f" (kept the {kept_stage} stage: best validation loss {best_loss:.4f})" if len(stages) > 1 else ""
        ),
        "image_size": image_size,
        "head": _describe_head(config),
        "precision": "bf16 autocast" if bf16 else "fp32",
        "seed": config.seed,
        "epochs": trainer.current_epoch,
        "processes": trainer.world_size,
        "training_s": round(training_seconds, 1),
        "skipped": [f"{path}: {reason}" for path, reason in dataset.skipped],
        "duplicates": describe_duplicates(duplicates, dataset.has_split),
    }
    metrics, report = evaluate_run(run_dir, context=context, progress=progress)
    return TrainResult(run_dir, metrics, report, time.perf_counter() - started)


def _describe_head(config: TrainConfig) -> str:
    """The head, for the report (with iCAM's settings)."""
    if config.head != "icam":
        return config.head
    return (
        f"icam ({config.icam_iterations} iterations, {config.aggregate} aggregate, "
        f"crops of {config.icam_crop_fraction:g} of each view)"
    )


def _decision_settings(
    task: LabelTask, model: ImageClassifier, meta: ModelMeta, dataset: LabelledImages
) -> dict[str, Any]:
    """Let the task fit its decision settings (multi-label thresholds) on the validation split."""
    if type(task).decision_settings is LabelTask.decision_settings:
        return {}  # nothing to fit: skip the extra pass over the validation images
    from ewaste_vision.inference import Predictor

    records = dataset.in_split("val")
    probs, kept, _ = Predictor(model, meta).predict_files([r.path for r in records])
    by_path = {r.path: r for r in records}
    targets = task.targets([by_path[p] for p in kept], len(meta.class_names))
    model.to(memory_format=torch.contiguous_format)
    return task.decision_settings(probs, targets)


def fit_with_checkpoints(
    module: L.LightningModule,
    train_loader: DataLoader[Any],
    val_loader: DataLoader[Any],
    stage_dir: Path,
    max_epochs: int,
    config: TrainConfig,
    device: str,
    bf16: bool,
    progress: bool,
    monitor: str = "val_loss",
    mode: str = "min",
    ddp_strategy: str = "ddp",
) -> tuple[L.Trainer, float | None]:
    """Train `module` with early stopping on `monitor`; load its best weights back into it.

    Checkpoints go to `stage_dir/checkpoints` (`best.ckpt`, `last.ckpt`) and the CSV log to
    `stage_dir/logs`. With `config.resume`, training continues from `last.ckpt` when there is one.

    Args:
        module: the Lightning module to train.
        train_loader: training batches.
        val_loader: validation batches, which log `monitor`.
        stage_dir: folder of the checkpoints and the log.
        max_epochs: most epochs to train.
        config: the run's settings (devices, patience, resume).
        device: `cuda` or `cpu`.
        bf16: train with bf16 mixed precision.
        progress: show Lightning's progress bar.
        monitor: logged metric that picks the best checkpoint and stops early.
        mode: `min` or `max`: which way `monitor` improves.
        ddp_strategy: Lightning strategy when more than one process trains (devices x nodes).

    Returns:
        The trainer and the best value of `monitor` (None where it is unknown, as on ranks > 0,
        where the best weights are not loaded either).
    """
    checkpoints = ModelCheckpoint(
        dirpath=stage_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_last=True
    )
    trainer = L.Trainer(
        default_root_dir=stage_dir,
        max_epochs=max_epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=ddp_strategy if config.devices * config.num_nodes > 1 else "auto",
        precision="bf16-mixed" if bf16 else "32-true",
        callbacks=[EarlyStopping(monitor=monitor, mode=mode, patience=config.patience), checkpoints],
        logger=CSVLogger(stage_dir, name="logs", version=""),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    bind_epochs(train_loader, lambda: trainer.current_epoch)
    last = stage_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if config.resume and last.is_file() else None
    fit_keeping_log(
        trainer,
        stage_dir,
        lambda: trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from, weights_only=True),
    )
    if trainer.global_rank != 0:
        return trainer, None
    best = checkpoints.best_model_path or str(last)
    module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    score = checkpoints.best_model_score
    return trainer, float(score) if score is not None else None


def prepare_run_dir(config: TrainConfig, run_dir: Path) -> TrainConfig:
    """Create the run directory, or check there is something to resume in it."""
    saved = run_dir / "config.yaml"
    require_path(config.data, "dataset folder")
    if config.resume:
        if not saved.is_file():
            raise UserError(
                f"{run_dir}: nothing to resume (no config.yaml); start a new run without --resume"
            )
    elif (run_dir / MODEL_FILE).exists() or (run_dir / "checkpoints" / "last.ckpt").exists():
        raise UserError(
            f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(saved, config.to_dict())
    return config


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The settings a run was started with, for `--resume` (flags given again override them)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir}: nothing to resume (no config.yaml); start a new run without --resume")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    values["split"] = tuple(values.get("split", (0.7, 0.15, 0.15)))
    return dict(values)


def fit_keeping_log(trainer: L.Trainer, run_dir: Path, fit: Any) -> None:
    """Run `fit()`; on resume, keep the epochs logged before the interruption.

    Lightning's CSV logger deletes an existing metrics.csv when it starts, so the earlier rows are
    read first and written back in front of the new ones. The resumed run logs again from the
    step its checkpoint was saved at (a kill between a validation row and the checkpoint that
    follows it left that row logged twice), so earlier rows from its first logged step on give
    way to the new ones.
    """
    log_file = run_dir / "logs" / "metrics.csv"
    earlier = _read_csv_rows(log_file)
    fit()
    if not earlier or trainer.global_rank != 0:
        return
    later = _read_csv_rows(log_file)
    steps = [step for step in map(_step, later) if step is not None]
    if steps:
        earlier = [row for row in earlier if (_step(row) or 0) < min(steps)]
    columns = list(dict.fromkeys([k for row in earlier + later for k in row]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(earlier + later)
    write_text(log_file, buffer.getvalue())


def _step(row: dict[str, str]) -> int | None:
    try:
        return int(row.get("step") or "")
    except ValueError:
        return None


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def split_dataset(task: Task, config: TrainConfig, run_dir: Path) -> tuple[LabelledImages, DuplicateSummary]:
    dataset = task.read_dataset(Path(config.data))
    dataset, duplicates = assign_splits(
        dataset,
        seed=config.seed,
        cache_file=run_dir / "cache" / "fingerprints.json",
        fractions=config.split,
        max_distance=config.duplicate_distance,
        invariant=task.invariant_duplicates,
    )
    write_split_file(run_dir / "split.csv", dataset.records, dataset.class_names)
    for split in ("train", "val", "test"):
        if not dataset.in_split(split):
            raise DataError(f"{config.data}: the {split} split is empty; add images (at least ~10 per class)")
    train_classes = {
        c for r in dataset.in_split("train") for c in ((r.label,) if r.label >= 0 else r.present)
    }
    if len(train_classes) < 2:
        raise DataError(f"{config.data}: the train split holds fewer than two classes; add images")
    if dataset.skipped:
        log.warning(
            "skipped %d unusable files (listed in the report), e.g. %s: %s",
            len(dataset.skipped),
            *dataset.skipped[0],
        )
    return dataset, duplicates


def describe_duplicates(duplicates: DuplicateSummary, split_given: bool) -> list[str]:
    if not duplicates.groups:
        return []
    lines = [f"{duplicates.groups} groups of exact or near-duplicate images ({duplicates.images} images)"]
    if split_given:
        lines.append(f"{len(duplicates.cross_split)} of them cross the dataset's own split (leakage)")
    else:
        lines.append("each group was kept within one split, so no copy leaks into the test set")
    return lines


def _schedule(config: TrainConfig) -> dict[str, Any]:
    """The learning-rate schedule settings of `SupervisedModule`."""
    return {
        "lr_schedule": config.lr_schedule,
        "lr_step_epochs": config.lr_step_epochs,
        "lr_step_gamma": config.lr_step_gamma,
    }


def _loader(dataset: Any, batch_size: int, shuffle: bool, seed: int) -> DataLoader[Any]:
    # The order (and the augmentations drawn with it) is a function of (seed, epoch), so a run
    # resumed with --resume trains on the same batches as one that never stopped.
    sampler = EpochShuffle(len(dataset), seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0)


def _linear_setup(
    model: ImageClassifier,
    task: LabelTask,
    dataset: LabelledImages,
    config: TrainConfig,
    meta: ModelMeta,
    run_dir: Path,
    bf16: bool,
    progress: bool,
) -> tuple[SupervisedModule, DataLoader[Any], DataLoader[Any]]:
    """Frozen backbone: features once (cached in the run), then a head trained on them."""
    features = {}
    for split, views in (("train", config.feature_views), ("val", 1)):
        records = dataset.in_split(split)
        paths = [r.path for r in records]
        key = {
            "backbone": config.backbone,
            "weights": config.weights,
            "pretrained": config.pretrained,
            "init": config.init,
            "size": meta.image_size,
            "views": views,
            "split": split,
        }
        features[split] = cached_features(
            run_dir / "cache",
            key,
            paths,
            partial(
                extract_pooled_features,
                model,
                paths,
                meta.image_size,
                meta.mean,
                meta.std,
                views=views,
                bf16=bf16,
                progress=progress,
            ),
        )
    num_classes = len(dataset.class_names)
    train_targets = task.targets(dataset.in_split("train"), num_classes)
    views, count, width = features["train"].shape
    train_set = TensorDataset(
        features["train"].reshape(views * count, width), torch.cat([train_targets] * views)
    )
    val_set = TensorDataset(features["val"][0], task.targets(dataset.in_split("val"), num_classes))
    head = torch.nn.Sequential(model.dropout, model.head)  # shares modules with `model`
    module = SupervisedModule(
        head, task, config.lr, config.weight_decay, loss_name=config.loss, **_schedule(config)
    )
    return (
        module,
        _loader(train_set, config.batch_size, True, config.seed),
        _loader(val_set, 256, False, config.seed),
    )


def _looks_setup(
    model: ImageClassifier,
    task: LabelTask,
    dataset: LabelledImages,
    config: TrainConfig,
    meta: ModelMeta,
    run_dir: Path,
    bf16: bool,
    progress: bool,
) -> tuple[SupervisedModule, DataLoader[Any], DataLoader[Any]]:
    """Frozen backbone, iCAM head: every look's features cached under the current classifier,
    then aggregator and classifier trained on them."""
    assert isinstance(model, IcamClassifier)
    train_set = looks_set(model, task, dataset, "train", config, meta, run_dir, bf16, progress)
    val_set = looks_set(model, task, dataset, "val", config, meta, run_dir, bf16, progress)
    module = SupervisedModule(
        LooksHead(model), task, config.lr, config.weight_decay, loss_name=config.loss, **_schedule(config)
    )
    return (
        module,
        _loader(train_set, config.batch_size, True, config.seed),
        _loader(val_set, 256, False, config.seed),
    )


def _image_setup(
    model: ImageClassifier, task: LabelTask, dataset: LabelledImages, config: TrainConfig, meta: ModelMeta
) -> tuple[SupervisedModule, DataLoader[Any], DataLoader[Any]]:
    """Backbone partly or fully trainable: images through the whole network every step."""
    num_classes = len(dataset.class_names)
    make = task.train_transform if config.augment else eval_transform
    train_records, val_records = dataset.in_split("train"), dataset.in_split("val")
    train_set = ImageFileDataset(
        [r.path for r in train_records],
        task.targets(train_records, num_classes),
        make(meta.image_size, meta.mean, meta.std),
        meta.image_size,
        crops=config.augment and task.train_transform_crops,
    )
    val_set = ImageFileDataset(
        [r.path for r in val_records],
        task.targets(val_records, num_classes),
        eval_transform(meta.image_size, meta.mean, meta.std),
        meta.image_size,
    )
    module = SupervisedModule(
        model,
        task,
        config.lr,
        config.weight_decay,
        slow_prefixes=("backbone.",),
        frozen_batchnorm=frozen_batchnorm_modules(model),
        channels_last=True,
        loss_name=config.loss,
        **_schedule(config),
    )
    return (
        module,
        _loader(train_set, config.batch_size, True, config.seed),
        _loader(val_set, config.batch_size, False, config.seed),
    )
