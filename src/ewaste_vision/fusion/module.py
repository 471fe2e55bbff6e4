"""The Lightning module of stage 2: the fusion network, cross-entropy, an optimiser."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ewaste_vision.fusion.datasets import RepairingDataset, Sample
from ewaste_vision.fusion.model import FeatureFusion, TwoStreamFusion
from ewaste_vision.training.modules import one_cycle


class FusionModule(L.LightningModule):
    """Trains the trainable part of a `TwoStreamFusion` (see `set_fusion_trainable`).

    `network` maps a batch's two inputs to fused logits: a `FeatureFusion` on cached features
    (fast fusion) or the whole `TwoStreamFusion` on images (slow). Backbone layers (slow fusion)
    learn at `lr * backbone_lr_scale` with AdamW on a one-cycle schedule, as `SupervisedModule`
    fine-tunes; with only heads to train, Adam at a constant rate.
    """

    def __init__(
        self,
        network: TwoStreamFusion | FeatureFusion,
        train_pairs: RepairingDataset,
        lr: float,
        weight_decay: float,
        frozen_batchnorm: list[nn.Module] | None = None,
        backbone_lr_scale: float = 0.3,
    ) -> None:
        super().__init__()
        self.model = network
        self.train_pairs = train_pairs
        self.lr, self.weight_decay = lr, weight_decay
        self.frozen_batchnorm = frozen_batchnorm or []
        self.backbone_lr_scale = backbone_lr_scale

    def forward(self, rgb: torch.Tensor, xray: torch.Tensor) -> torch.Tensor:
        return self.model(rgb, xray)

    def on_train_epoch_start(self) -> None:
        self.train_pairs.set_epoch(self.current_epoch)  # new random partners every epoch
        for module in self.frozen_batchnorm:
            module.eval()

    def _step(self, batch: Sample, stage: str) -> torch.Tensor:
        rgb, xray, targets = batch
        logits = self(rgb, xray).float()  # [B, C]
        loss = F.cross_entropy(logits, targets)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(targets))
        if stage == "val":
            accuracy = (logits.argmax(dim=1) == targets).float().mean()
            self.log("val_acc", accuracy, on_epoch=True, prog_bar=True, batch_size=len(targets))
        return loss

    def training_step(self, batch: Sample, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Sample, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        heads: list[nn.Parameter] = []
        backbone: list[nn.Parameter] = []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                (backbone if ".backbone." in f".{name}" else heads).append(parameter)
        groups = [{"params": heads, "lr": self.lr}]
        if not backbone:
            return torch.optim.Adam(groups, weight_decay=self.weight_decay)
        groups.append({"params": backbone, "lr": self.lr * self.backbone_lr_scale})
        optimizer = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: one_cycle(step, int(self.trainer.estimated_stepping_batches))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
