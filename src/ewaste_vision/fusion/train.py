"""`train_fusion`: stage 1 (two streams), stage 2 (fast or slow fusion) and stage 3 (each stream's
trust, fitted on the validation pairs: `fusion.calibrate`) into one run directory.

The run directory holds what every run holds (config.yaml, model.pt, checkpoints/ and logs/ of
stage 2, metrics.json, report.md, plots/), plus `split_rgb.csv` and `split_xray.csv` and, when
the streams were trained here, `streams/rgb` and `streams/xray` (complete classify runs). An
interrupted run continues with `--resume`: finished streams are kept, stage 2 resumes from its
last checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from ewaste_vision.config import TrainConfig
from ewaste_vision.data.datasets import ImageFileDataset
from ewaste_vision.errors import DataError
from ewaste_vision.fusion.calibrate import calibrate_fusion
from ewaste_vision.fusion.data import (
    MODALITIES,
    PairedImages,
    check_both_sides,
    read_paired_folders,
    records_from_stream_run,
    write_pair_splits,
)
from ewaste_vision.fusion.datasets import FeaturePairs, ImagePairs, RepairingDataset
from ewaste_vision.fusion.features import feature_table, readable_images, sparse_features
from ewaste_vision.fusion.model import FeatureFusion, TwoStreamFusion, frozen_batchnorm, set_fusion_trainable
from ewaste_vision.fusion.module import FusionModule
from ewaste_vision.fusion.pairing import ORIENTATIONS, missing_partners, plan_pairs
from ewaste_vision.fusion.streams import load_stream, model_digest, stream_runs, stream_summary
from ewaste_vision.hardware import configure_threads, quiet_lightning, training_device, use_bf16
from ewaste_vision.model_meta import ModelMeta
from ewaste_vision.runs import save_model
from ewaste_vision.training.features import cached_features
from ewaste_vision.training.trainer import TrainResult, fit_with_checkpoints, prepare_run_dir

log = logging.getLogger(__name__)


def train_fusion(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train both streams (unless given) and the fusion as `config` says; evaluate on test.

    Raises:
        DataError: the dataset is not a paired one, a class lacks one side, or a split of a class
            holds images of one side only.
        RunError: a given stream run is not a classify run of the dataset's classes.
    """
    started = time.perf_counter()
    configure_threads()
    quiet_lightning()
    run_dir = Path(config.out)
    config = prepare_run_dir(dataclasses.replace(config, devices=1), run_dir)
    data = read_paired_folders(config.data)
    runs = stream_runs(config, data, run_dir, progress)
    stage1_seconds = time.perf_counter() - started

    split, skipped = _split_from_streams(data, runs)
    write_pair_splits(run_dir, split)
    streams = {m: load_stream(runs[m], data.class_names, m) for m in MODALITIES}
    model = TwoStreamFusion(streams["rgb"][0], streams["xray"][0], len(data.class_names))
    set_fusion_trainable(model, config.fusion, (streams["rgb"][1].backbone, streams["xray"][1].backbone))
    device = training_device(config.accelerator)
    bf16 = use_bf16(config.precision, device)
    L.seed_everything(config.seed, workers=True, verbose=False)

    stage2_started = time.perf_counter()
    loaders, unreadable = _loaders(model, streams, split, runs, config, run_dir, bf16)
    skipped += unreadable
    module = FusionModule(
        FeatureFusion(model) if config.fusion == "fast" else model,
        loaders["train"].dataset,  # type: ignore[arg-type]
        config.lr,
        config.weight_decay,
        frozen_batchnorm=frozen_batchnorm(model),
    )
    # Fast fusion trains heads on cached features (seconds an epoch, like `--strategy linear`);
    # slow fusion runs both backbones every step, so it gets the backbone epoch budget.
    epochs = config.head_epochs if config.fusion == "fast" else config.max_epochs
    trainer, best_loss = fit_with_checkpoints(
        module, loaders["train"], loaders["val"], run_dir, epochs, config, device, bf16, progress
    )
    # Stage 3: how far to trust each stream, measured on the validation pairs (held-out devices).
    calibration = calibrate_fusion(model, loaders["val"], features=config.fusion == "fast")
    stage2_seconds = time.perf_counter() - stage2_started
    rgb_meta, xray_meta = streams["rgb"][1], streams["xray"][1]
    meta = ModelMeta(
        "fuse",
        data.class_names,
        rgb_meta.backbone,
        rgb_meta.image_size,
        rgb_meta.mean,
        rgb_meta.std,
        rgb_meta.dropout,
        {
            "fusion": config.fusion,
            "seed": config.seed,
            "streams": {"rgb": rgb_meta.to_dict(), "xray": xray_meta.to_dict()},
            "stream_scores": {m: stream_summary(runs[m]) for m in MODALITIES},
            "calibration": calibration,
            # Stage 1 is 0 when both streams were given (`--rgb-run`, `--xray-run`).
            "training_seconds": {"streams": round(stage1_seconds, 1), "fusion": round(stage2_seconds, 1)},
        },
    )
    save_model(run_dir, model.state_dict(), meta)

    from ewaste_vision.fusion.evaluate import evaluate_fusion

    context = {
        "dataset": str(Path(config.data).resolve()),
        "fusion": f"{config.fusion} (002, Table VI)",
        "photo_stream": _describe(rgb_meta, runs["rgb"]),
        "x-ray_stream": _describe(xray_meta, runs["xray"]),
        "seed": config.seed,
        "fusion_epochs": trainer.current_epoch,
        "fusion_best_validation_loss": None if best_loss is None else round(best_loss, 4),
        "stream_trust_on_validation": calibration["stream_weight"],
        "validation_loss_stage2_vs_calibrated": (
            f"{calibration['val']['stage2_fusion']['loss']} -> {calibration['val']['calibrated']['loss']}"
        ),
        "precision": "bf16 autocast" if bf16 else "fp32",
        "stage_1_streams_s": round(stage1_seconds, 1),
        "stage_2_fusion_s": round(stage2_seconds, 1),
        "training_s": round(time.perf_counter() - started, 1),
        "skipped": [f"{path}: {reason}" for path, reason in data.skipped + skipped],
    }
    metrics, report = evaluate_fusion(run_dir, context=context, progress=progress)
    return TrainResult(run_dir, metrics, report, time.perf_counter() - started)


def _describe(meta: ModelMeta, run_dir: Path) -> str:
    head = meta.extra.get("head", {}).get("kind", "linear")
    return f"{run_dir} ({meta.backbone}, {meta.image_size} px, {head} head)"


def _split_from_streams(
    data: PairedImages, runs: dict[str, Path]
) -> tuple[PairedImages, list[tuple[Path, str]]]:
    """Each side's records with the split its stream run gave them, so no stream's training image
    is scored in the fusion's test."""
    sides, skipped = {}, []
    for modality in MODALITIES:
        sides[modality], dropped = records_from_stream_run(
            data.side(modality), runs[modality], modality, data.class_names
        )
        skipped += dropped
    split = dataclasses.replace(data, rgb=sides["rgb"], xray=sides["xray"])
    check_both_sides(split)
    return split, skipped


def _loaders(
    model: TwoStreamFusion,
    streams: dict[str, tuple[Any, ModelMeta]],
    split: PairedImages,
    runs: dict[str, Path],
    config: TrainConfig,
    run_dir: Path,
    bf16: bool,
) -> tuple[dict[str, DataLoader[Any]], list[tuple[Path, str]]]:
    """Train and validation loaders of pairs: cached features (fast) or images (slow)."""
    loaders: dict[str, DataLoader[Any]] = {}
    skipped: list[tuple[Path, str]] = []
    for use in ("train", "val"):
        kept: dict[str, list[Any]] = {}
        images: dict[str, ImageFileDataset] = {}
        for modality in MODALITIES:
            records = [r for r in split.side(modality) if r.split == use]
            kept[modality], images[modality], bad = readable_images(records, streams[modality][1])
            skipped += [(Path(p), why) for p, why in bad]
        for label in missing_partners(kept["rgb"], kept["xray"]):
            raise DataError(
                f"{split.root}: in the {use} split, class {split.class_names[label]!r} has readable "
                "images on one side only (see the skipped files); add readable images of it"
            )
        if any(not kept[m] for m in MODALITIES):
            raise DataError(f"{split.root}: no readable pairs in the {use} split; add images")
        inputs: dict[str, Any] = dict(images)
        if config.fusion == "fast":
            inputs = {
                m: _cached_features(
                    m, streams[m][0], images[m], kept, runs[m], use, config.seed, run_dir, bf16
                )
                for m in MODALITIES
            }
        dataset: RepairingDataset
        if config.fusion == "slow":
            dataset = ImagePairs(kept["rgb"], kept["xray"], inputs["rgb"], inputs["xray"], config.seed, use)
        else:
            dataset = FeaturePairs(
                kept["rgb"], kept["xray"], inputs["rgb"][0], inputs["xray"], config.seed, use
            )
        generator = torch.Generator().manual_seed(config.seed)
        loaders[use] = DataLoader(
            dataset, batch_size=config.batch_size, shuffle=use == "train", generator=generator, num_workers=0
        )
    return loaders, skipped


def _cached_features(
    modality: str,
    stream: Any,
    images: ImageFileDataset,
    kept: dict[str, list[Any]],
    run_dir_of_stream: Path,
    use: str,
    seed: int,
    run_dir: Path,
    bf16: bool,
) -> torch.Tensor:
    """Stream features of a split, cached in the run: RGB [1, N, F]; X-ray [ORIENTATIONS, N, F].

    Training pairs change every epoch, so the X-rays of the train split get all 8 orientations;
    validation pairs are fixed, so only the orientation each X-ray is paired in is computed (the
    rest of the table stays zero and is never read).
    """
    paths = [r.path for r in kept[modality]]
    key: dict[str, Any] = {"stream": model_digest(run_dir_of_stream), "split": use}
    if modality == "rgb":
        return cached_features(
            run_dir / "cache",
            {**key, "orientations": [0]},
            paths,
            partial(feature_table, stream, images, (0,), bf16),
        )
    if use == "train":
        every = tuple(range(ORIENTATIONS))
        return cached_features(
            run_dir / "cache",
            {**key, "orientations": every},
            paths,
            partial(feature_table, stream, images, every, bf16),
        )
    wanted = sorted({(p.xray, p.orientation) for p in plan_pairs(kept["rgb"], kept["xray"], seed, use)})

    def compute() -> torch.Tensor:
        found = sparse_features(stream, images, wanted, bf16)
        table = torch.zeros(ORIENTATIONS, len(paths), stream.num_features)
        for (index, orientation), row in found.items():
            table[orientation, index] = row
        return table

    return cached_features(run_dir / "cache", {**key, "pairs": wanted}, paths, compute)
