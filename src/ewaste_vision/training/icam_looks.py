"""Training an iCAM head on cached looks: the frozen-backbone stage of `--head icam`.

With the backbone frozen, an iCAM network's only trainable parts are its aggregator and its
classifier, yet every epoch on images costs N backbone passes per image. The looks' features
change only where the crops do, and the crops follow the classifier's CAMs, so training
alternates: cache every look's features under the current classifier (the crops it chooses),
train aggregator and classifier on them for as many epochs as a linear probe gets, then cache
again under the new classifier. `LOOK_ROUNDS` rounds; the score of a round is the true iCAM
network's validation loss, on the looks its own, final classifier chooses.

Why: trained on images for the few epochs a CPU affords, the head kept the whole image's
features it was probed on and lost 19-27 points to the plain classifier (BENCHMARKS.md, iCAM);
on cached looks it gets the probe's hundreds of epochs for N feature passes per image and round.
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ewaste_vision.config import TrainConfig
from ewaste_vision.data.records import LabelledImages
from ewaste_vision.models.icam import IcamClassifier
from ewaste_vision.runs import ModelMeta
from ewaste_vision.tasks import LabelTask
from ewaste_vision.training.features import cached_features, extract_pooled_features

LOOK_ROUNDS = 2
"""Cache-and-train rounds. The first round's crops are the whole-image probe's; the second's are
those of a classifier trained on aggregated looks, which is the network that is kept."""


class LooksHead(nn.Module):
    """The trainable part of an iCAM network on cached looks: [B, N, F] -> logits [B, classes].

    It holds the model's own aggregator, dropout and classifier (shared, not copied), so training
    it trains the model, and its checkpoints stay small.
    """

    def __init__(self, model: IcamClassifier) -> None:
        super().__init__()
        self.aggregator = model.aggregator
        self.dropout = model.dropout
        self.head = model.head

    def forward(self, looks: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.aggregator(looks.transpose(0, 1))))


def head_digest(model: IcamClassifier) -> str:
    """A hash of what chooses the crops (classifier weights), for the feature cache's key."""
    digest = hashlib.sha256()
    for tensor in (model.head.weight, model.head.bias):
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_looks(
    model: IcamClassifier,
    dataset: LabelledImages,
    split: str,
    views: int,
    config: TrainConfig,
    meta: ModelMeta,
    run_dir: Path,
    bf16: bool,
    progress: bool,
) -> torch.Tensor:
    """Every look's features of a split's images under the current classifier [views, B, N, F]."""
    paths = [r.path for r in dataset.in_split(split)]
    key = {
        "backbone": config.backbone,
        "weights": config.weights,
        "pretrained": config.pretrained,
        "init": config.init,
        "size": meta.image_size,
        "views": views,
        "split": split,
        "looks": model.iterations,
        "crop_fraction": model.crop_fraction,
        "head": head_digest(model),
    }
    compute = partial(
        extract_pooled_features,
        model,
        paths,
        meta.image_size,
        meta.mean,
        meta.std,
        views=views,
        bf16=bf16,
        progress=progress,
        looks=True,
    )
    return cached_features(run_dir / "cache", key, paths, compute)


def looks_set(
    model: IcamClassifier,
    task: LabelTask,
    dataset: LabelledImages,
    split: str,
    config: TrainConfig,
    meta: ModelMeta,
    run_dir: Path,
    bf16: bool,
    progress: bool,
) -> TensorDataset:
    """Cached looks [B, N, F] of a split under the current classifier, with their targets (the
    training split with `config.feature_views` views of each image, mirrored ones included)."""
    views = config.feature_views if split == "train" else 1
    looks = cached_looks(model, dataset, split, views, config, meta, run_dir, bf16, progress)
    targets = task.targets(dataset.in_split(split), len(dataset.class_names))
    count = looks.shape[1]
    return TensorDataset(looks.reshape(views * count, *looks.shape[2:]), torch.cat([targets] * views))


@torch.no_grad()
def looks_val_loss(
    model: IcamClassifier,
    task: LabelTask,
    dataset: LabelledImages,
    config: TrainConfig,
    meta: ModelMeta,
    run_dir: Path,
    bf16: bool,
    progress: bool,
) -> float:
    """The iCAM network's validation loss as it stands: looks chosen by its current classifier.

    The next round's validation features are these same ones (same classifier, same cache key),
    so this costs a pass over the validation images only after the last round.
    """
    looks, targets = looks_set(model, task, dataset, "val", config, meta, run_dir, bf16, progress).tensors
    head = LooksHead(model).eval()
    loss: Any = task.make_loss(config.loss)(head(looks), targets)
    return float(loss)
