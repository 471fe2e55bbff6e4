"""The Lightning module that trains a detector: summed FCOS losses, AdamW with a cosine schedule,
and validation mAP@0.5 (the figure early stopping and checkpoints follow)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from ewaste_vision.detect.data import Target
from ewaste_vision.detect.metrics import detection_metrics


class DetectionModule(L.LightningModule):
    """Wraps a torchvision detector (`detector(images, targets)` gives losses in train mode,
    detections in eval mode).

    Pretrained backbone parameters (names starting with `slow_prefix`) learn at a tenth of `lr`.
    """

    def __init__(
        self,
        detector: nn.Module,
        lr: float,
        weight_decay: float,
        max_epochs: int,
        slow_prefix: str = "backbone.body.",
        backbone_lr_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.detector = detector
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.slow_prefix = slow_prefix
        self.backbone_lr_scale = backbone_lr_scale
        self._val_predictions: list[dict[str, torch.Tensor]] = []
        self._val_targets: list[Target] = []

    def on_train_epoch_start(self) -> None:
        # Batches of a few boards are too small for batch-norm statistics: the pretrained
        # backbone keeps its ImageNet ones (as torchvision's detection backbones do).
        for module in self.detector.backbone.body.modules():  # type: ignore[union-attr]
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def training_step(self, batch: tuple[list[torch.Tensor], list[Target]], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.detector(images, targets)
        loss: torch.Tensor = sum(losses.values())
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(images))
        for name, value in losses.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple[list[torch.Tensor], list[Target]], batch_idx: int) -> None:
        images, targets = batch
        detections = self.detector(images)
        self._val_predictions.extend(_as_float(detections))
        self._val_targets.extend(targets)

    def on_validation_epoch_end(self) -> None:
        # The project's own mAP: torchmetrics' summary works only at 100 detections per image,
        # and boards carry more parts than that. Under DDP each process scores its own share.
        head: Any = self.detector.head
        num_classes = head.classification_head.num_classes
        scores = detection_metrics(
            self._val_predictions, self._val_targets, [str(k) for k in range(int(num_classes))]
        )
        self.log("val_map50", float(scores["map50"] or 0.0), prog_bar=True, sync_dist=True)
        self._val_predictions, self._val_targets = [], []

    def configure_optimizers(self) -> Any:
        fast: list[nn.Parameter] = []
        slow: list[nn.Parameter] = []
        for name, parameter in self.detector.named_parameters():
            if parameter.requires_grad:
                (slow if name.startswith(self.slow_prefix) else fast).append(parameter)
        groups = [{"params": fast, "lr": self.lr}, {"params": slow, "lr": self.lr * self.backbone_lr_scale}]
        optimizer = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def _as_float(detections: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Boxes and scores in float32 (under bf16 autocast they can come out in bf16)."""
    return [
        {"boxes": d["boxes"].float(), "scores": d["scores"].float(), "labels": d["labels"]}
        for d in detections
    ]
