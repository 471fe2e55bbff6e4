"""The Lightning module shared by every strategy: a network, a task's loss, an optimiser."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import nn

from ewaste_vision.tasks.registry import LabelTask


class SupervisedModule(L.LightningModule):
    """Trains `network` (images -> logits, or cached features -> logits) with `task.loss`.

    Parameters whose names start with a prefix in `slow_prefixes` (pretrained backbone layers)
    learn at `lr * backbone_lr_scale`; the rest at `lr`. A head on cached features trains with
    Adam at a constant rate; when backbone layers train, AdamW follows a one-cycle schedule (a
    short warm-up, then cosine decay over `max_epochs`): the recipe of the multi-label default,
    measured in BENCHMARKS.md. `lr_schedule="step"` replaces both with 003's schedule: the rate
    times `lr_step_gamma` every `lr_step_epochs` epochs.
    """

    def __init__(
        self,
        network: nn.Module,
        task: LabelTask,
        lr: float,
        weight_decay: float,
        slow_prefixes: tuple[str, ...] = (),
        backbone_lr_scale: float = 0.3,
        frozen_batchnorm: list[nn.Module] | None = None,
        channels_last: bool = False,
        loss_name: str = "auto",
        lr_schedule: str = "onecycle",
        lr_step_epochs: int = 20,
        lr_step_gamma: float = 0.5,
    ) -> None:
        super().__init__()
        self.network = network
        self.task = task
        self.lr = lr
        self.weight_decay = weight_decay
        self.slow_prefixes = slow_prefixes
        self.backbone_lr_scale = backbone_lr_scale
        self.frozen_batchnorm = frozen_batchnorm or []
        self.channels_last = channels_last
        self.loss_fn = task.make_loss(loss_name)
        self.lr_schedule = lr_schedule
        self.lr_step_epochs = lr_step_epochs
        self.lr_step_gamma = lr_step_gamma

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs)

    def on_fit_start(self) -> None:
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)

    def on_train_epoch_start(self) -> None:
        for module in self.frozen_batchnorm:
            module.eval()

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, targets = batch
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        logits = self.network(inputs)
        loss = self.loss_fn(logits, targets)
        on_step = stage == "train"
        self.log(
            f"{stage}_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            sync_dist=not on_step,
            batch_size=len(targets),
        )
        if stage != "train":
            self.log(
                f"{stage}_acc",
                self.task.batch_accuracy(logits, targets),
                on_epoch=True,
                prog_bar=True,
                sync_dist=True,
                batch_size=len(targets),
            )
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def configure_optimizers(self) -> Any:
        fast: list[nn.Parameter] = []
        slow: list[nn.Parameter] = []
        for name, parameter in self.network.named_parameters():
            if not parameter.requires_grad:
                continue
            (slow if name.startswith(self.slow_prefixes) and self.slow_prefixes else fast).append(parameter)
        groups = [{"params": fast, "lr": self.lr}]
        if slow:
            groups.append({"params": slow, "lr": self.lr * self.backbone_lr_scale})
        optimizer: torch.optim.Optimizer = (
            torch.optim.AdamW(groups, weight_decay=self.weight_decay)
            if slow
            else torch.optim.Adam(groups, weight_decay=self.weight_decay)
        )
        if self.lr_schedule == "step":
            step = torch.optim.lr_scheduler.LambdaLR(
                optimizer, partial(step_decay, every=self.lr_step_epochs, gamma=self.lr_step_gamma)
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": step, "interval": "epoch"}}
        if not slow:
            return optimizer
        # LambdaLR rather than OneCycleLR: OneCycleLR stores its step count in the checkpoint, so
        # resuming with a larger --max-epochs would run off its end; this reads it afresh.
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: one_cycle(step, int(self.trainer.estimated_stepping_batches))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def step_decay(epoch: int, every: int, gamma: float) -> float:
    """Learning-rate factor at `epoch`: `gamma` to the number of whole `every`-epoch periods."""
    return float(gamma ** (epoch // every))


def one_cycle(step: int, total: int, warmup_share: float = 0.1) -> float:
    """Learning-rate factor at `step` of `total`: cosine rise from 1/25 to 1 over the first
    `warmup_share` of the steps, then cosine decay to nearly 0 (the shape of OneCycleLR)."""
    start, end = 1 / 25, 1 / 25 / 1e4
    rise = max(1, round(warmup_share * total))
    if step < rise:
        return start + (1 - start) * (1 - math.cos(math.pi * step / rise)) / 2
    progress = min(1.0, (step - rise) / max(1, total - rise))
    return end + (1 - end) * (1 + math.cos(math.pi * progress)) / 2
