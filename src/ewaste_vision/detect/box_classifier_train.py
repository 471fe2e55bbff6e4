"""Training the box classifier (`detect.box_classifier`) after the detector, in the same run.

It learns from crops of the training split's labelled boxes, moved and resized a little as a
detector's boxes are, and from crops of background (boxes that overlap no labelled part), then
the confidence exponents (overall and per class) are fitted on the validation split's detections.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.models.detection import FCOS
from torchvision.ops import box_iou
from torchvision.transforms import v2

from ewaste_vision.config import TrainConfig
from ewaste_vision.data.images import load_rgb
from ewaste_vision.data.records import ImageRecord
from ewaste_vision.detect.box_classifier import (
    STATE_PREFIX,
    BoxClassifier,
    BoxProbabilities,
    box_crops,
    build_box_network,
    fit_gammas,
)
from ewaste_vision.detect.box_scores import BoxClassifierSettings
from ewaste_vision.detect.data import boxes_to_pixels, input_tensor
from ewaste_vision.models.classifier import ImageClassifier, frozen_batchnorm_modules, set_trainable
from ewaste_vision.runs import ModelMeta

BOX_EPOCHS = 4
"""Most epochs of box-classifier training (early stopping on validation loss may end sooner)."""
BOX_BATCH = 64
BACKGROUND_SHARE = 0.5
"""Background crops per labelled box."""
BOX_JITTER = 0.1
"""Each side of a training box moves by up to this share of the box's size."""
CACHE_SIDE = 1600
"""Training images are cached with their long side at most this (a 4080 px photo would cost
37 MB); parts are cropped from the cached copy."""


class BoxCropDataset(Dataset[tuple[torch.Tensor, int]]):
    """(crop [3, S, S] normalised, class index) pairs; background is class `len(class_names)`.

    Items are every labelled box, then `BACKGROUND_SHARE` as many background crops. Training
    crops jitter their box and are flipped, turned and (photos only) recoloured; validation
    crops are fixed by `seed`.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        num_classes: int,
        settings: BoxClassifierSettings,
        mean: Sequence[float],
        std: Sequence[float],
        modality: str = "rgb",
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.records = list(records)
        self.num_classes = num_classes
        self.settings = settings
        self.normalise = v2.Normalize([float(v) for v in mean], [float(v) for v in std])
        self.modality = modality
        self.augment = augment
        self.seed = seed
        self.boxes = [(r, b) for r, record in enumerate(self.records) for b in range(len(record.boxes))]
        self.background = [r % len(self.records) for r in range(int(BACKGROUND_SHARE * len(self.boxes)))]
        self.colour = v2.ColorJitter(0.2, 0.2, 0.2) if augment and modality == "rgb" else None
        self._cache: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return len(self.boxes) + len(self.background)

    def image(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Record `index`'s image ([3, H, W], uint8 photos or float X-ray) and its pixel boxes."""
        if index not in self._cache:
            record = self.records[index]
            image = (
                input_tensor(record.path, self.modality)
                if self.modality == "xray"
                else v2.functional.pil_to_tensor(load_rgb(record.path))
            )
            scale = CACHE_SIDE / max(image.shape[-2:])
            if scale < 1:
                size = [round(image.shape[-2] * scale), round(image.shape[-1] * scale)]
                image = v2.functional.resize(image, size, antialias=True)
            truth = boxes_to_pixels(record.boxes, image.shape[-1], image.shape[-2])
            self._cache[index] = (image, truth)
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        generator = None if self.augment else torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        if index < len(self.boxes):
            record, box = self.boxes[index]
            image, truth = self.image(record)
            chosen, label = truth["boxes"][box], int(truth["labels"][box])
            if self.augment:
                chosen = _jitter(chosen, generator)
        else:
            record = self.background[index - len(self.boxes)]
            image, truth = self.image(record)
            chosen = _background_box(image.shape[-1], image.shape[-2], truth["boxes"], generator)
            label = self.num_classes
        crop = _crop(image, chosen, self.settings)
        if self.augment:
            crop = _turn_and_flip(crop)
            if self.colour is not None:
                crop = self.colour(crop)
        return self.normalise(crop), label


def _jitter(box: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    size = (box[2:] - box[:2]).repeat(2)
    return box + (torch.rand(4, generator=generator) * 2 - 1) * BOX_JITTER * size


def _background_box(
    width: int, height: int, truth: torch.Tensor, generator: torch.Generator | None, tries: int = 20
) -> torch.Tensor:
    """A box shaped like the image's parts (0.5-2x a random one's sides) overlapping none of them
    by IoU 0.3 or more; the last try is kept on a board too crowded for any."""
    box = torch.tensor([0.0, 0.0, width / 8, height / 8])
    for _ in range(tries):
        if len(truth):
            pick = int(torch.randint(len(truth), (1,), generator=generator))
            sides = (truth[pick, 2:] - truth[pick, :2]) * (0.5 + 1.5 * torch.rand(2, generator=generator))
        else:
            sides = torch.tensor([width, height]) * (0.05 + 0.2 * torch.rand(2, generator=generator))
        sides = torch.minimum(sides.clamp(min=4.0), torch.tensor([width - 1.0, height - 1.0]))
        corner = torch.rand(2, generator=generator) * (torch.tensor([width, height]) - sides)
        box = torch.cat([corner, corner + sides])
        if not len(truth) or float(box_iou(box[None], truth).max()) < 0.3:
            break
    return box


def _crop(image: torch.Tensor, box: torch.Tensor, settings: BoxClassifierSettings) -> torch.Tensor:
    """`box_crops` of one box, converting only the pixels around it to float."""
    reach = (box[2:] - box[:2]).clamp(min=0) * settings.padding + 4  # the margin box_crops adds, and some
    x0, y0 = (int(max(0, math.floor(v))) for v in (box[:2] - reach).tolist())
    x1 = int(min(image.shape[-1], math.ceil(float(box[2] + reach[0])) + 1))
    y1 = int(min(image.shape[-2], math.ceil(float(box[3] + reach[1])) + 1))
    window = image[:, y0:y1, x0:x1]
    window = window.float() / 255 if window.dtype == torch.uint8 else window.float()
    shifted = box - torch.tensor([x0, y0, x0, y0], dtype=box.dtype)
    return box_crops(window, shifted[None], settings.crop_size, settings.padding)[0]


def _turn_and_flip(crop: torch.Tensor) -> torch.Tensor:
    if torch.rand(1) < 0.5:
        crop = crop.flip(-1)
    return torch.rot90(crop, int(torch.randint(4, (1,))), (1, 2))


def train_box_classifier(
    records: Mapping[str, Sequence[ImageRecord]],
    meta: ModelMeta,
    config: TrainConfig,
    stage_dir: Path,
    device: str,
    bf16: bool,
    progress: bool,
    settings: BoxClassifierSettings | None = None,
) -> ImageClassifier | None:
    """Train the box classifier on `records["train"]` crops (validation loss on `records["val"]`
    picks the epoch); checkpoints in `stage_dir`. None on DDP ranks other than 0."""
    from ewaste_vision.tasks.registry import LabelTask, get_task
    from ewaste_vision.training.modules import SupervisedModule
    from ewaste_vision.training.trainer import fit_with_checkpoints

    settings = settings or BoxClassifierSettings()
    num_classes = len(meta.class_names)
    network = build_box_network(meta.backbone, num_classes, config.pretrained, config.weights)
    set_trainable(network, meta.backbone, "full", freeze_early=config.pretrained or bool(config.weights))
    modality = str(meta.extra.get("modality", "rgb"))

    def crops(split: str, augment: bool) -> BoxCropDataset:
        return BoxCropDataset(
            records[split], num_classes, settings, meta.mean, meta.std, modality, augment, config.seed
        )

    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(crops("train", True), BOX_BATCH, shuffle=True, generator=generator)
    val_loader = DataLoader(crops("val", False), BOX_BATCH)
    task = get_task("classify")
    assert isinstance(task, LabelTask)
    module = SupervisedModule(
        network,
        task,
        lr=1e-3,
        weight_decay=config.weight_decay,
        slow_prefixes=("backbone.",),
        frozen_batchnorm=frozen_batchnorm_modules(network),
        channels_last=True,
    )
    trainer, _ = fit_with_checkpoints(
        module, train_loader, val_loader, stage_dir, BOX_EPOCHS, config, device, bf16, progress
    )
    return network if trainer.global_rank == 0 else None


def fit_box_confidence(
    detector: FCOS,
    network: ImageClassifier,
    meta: ModelMeta,
    val_records: Sequence[ImageRecord],
    settings: BoxClassifierSettings | None = None,
) -> tuple[BoxClassifierSettings, dict[str, Any]]:
    """Settings with the exponents fitted on the validation split's detections, and what was
    measured."""
    from ewaste_vision.detect.evaluate import predict_records
    from ewaste_vision.detect.predictor import Detector

    # At gamma 1 the detector's confidences are the products that gamma is fitted on.
    settings = replace(settings or BoxClassifierSettings(), gamma=1.0, class_gammas=())
    plain = Detector(detector, meta)
    plain.box_classifier = BoxClassifier(BoxProbabilities(network, settings, meta.mean, meta.std), plain.bf16)
    products, truths, _, _ = predict_records(plain, val_records)
    gamma, class_gammas, f1 = fit_gammas(products, truths, len(meta.class_names))
    fitted = replace(settings, gamma=gamma, class_gammas=class_gammas)
    return fitted, {"gamma": gamma, "class_gammas": class_gammas, "validation_f1": round(f1, 4)}


def add_box_classifier(
    detector: FCOS,
    state: dict[str, torch.Tensor],
    meta: ModelMeta,
    records: Mapping[str, Sequence[ImageRecord]],
    config: TrainConfig,
    stage_dir: Path,
    device: str,
    bf16: bool,
    progress: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the box classifier for a trained `detector`, fit its exponents on validation, and return
    the run's state with its weights (`meta.extra` gains its settings) and facts for the report."""
    started = time.perf_counter()
    if not all(any(record.boxes for record in records[split]) for split in ("train", "val")):
        # Nothing to learn from, or no validation loss to choose an epoch by.
        return state, {"box_classifier": "not trained: the train or val split has no labelled boxes"}
    # One process: under DDP only rank 0 gets here, after the detector's training.
    single = replace(config, devices=1, num_nodes=1)
    network = train_box_classifier(records, meta, single, stage_dir, device, bf16, progress)
    assert network is not None
    settings, fitted = fit_box_confidence(detector, network.cpu(), meta, records["val"])
    meta.extra["box_classifier"] = settings.to_dict()
    return with_box_classifier(state, network), {
        "box_classifier": f"{settings.crop_size} px crops of boxes scored {settings.min_score} or more; "
        f"confidence (score x probability) ^ gamma, gamma {settings.gamma} overall and per class "
        f"{_class_exponents(settings, meta.class_names)} (validation F1 at 0.5: {fitted['validation_f1']})",
        "box_classifier_training_s": round(time.perf_counter() - started, 1),
    }


def with_box_classifier(
    detector_state: dict[str, torch.Tensor], network: ImageClassifier
) -> dict[str, torch.Tensor]:
    """One state for `model.pt`: the detector's weights and the box classifier's, prefixed."""
    return {**detector_state, **{STATE_PREFIX + key: value for key, value in network.state_dict().items()}}


def _class_exponents(settings: BoxClassifierSettings, class_names: Sequence[str]) -> str:
    """The classes whose exponent differs from the overall one, for the report."""
    pairs = zip(class_names, settings.class_gammas, strict=True)
    own = [f"{name} {gamma}" for name, gamma in pairs if gamma != settings.gamma]
    return ", ".join(own) if own else "the same"
