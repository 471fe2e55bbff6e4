"""What the machine can do fast. Decided per command, never at import time."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch


def bf16_supported(device: str = "cpu") -> bool:
    """True where bf16 matrix maths is native: AVX512-BF16/AMX CPUs and Ampere-or-newer GPUs."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(precision: str, device: str = "cpu") -> bool:
    """Resolve a precision setting (`auto`, `bf16`, `32`) to a yes/no for bf16 autocast."""
    if precision == "auto":
        return bf16_supported(device)
    return precision == "bf16"


def autocast(enabled: bool, device: str = "cpu") -> AbstractContextManager[object]:
    """bf16 autocast on `device` when `enabled`, else a no-op."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def configure_threads() -> None:
    """Use every core for intra-op work unless the user said otherwise (OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def training_device(accelerator: str) -> str:
    """`cuda` or `cpu` for a run's `accelerator` setting (`gpu`, `cuda`, `cpu`, or `auto`)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and default_device() == "cuda"):
        return "cuda"
    return "cpu"


def quiet_lightning() -> None:
    """Silence Lightning's start-up banner, tips and known-harmless warnings.

    Lightning sets its loggers to INFO when imported, so this must run after that import.
    Frozen batch-norm layers are kept in eval mode on purpose, which Lightning warns about.
    """
    import logging
    import warnings

    import lightning  # noqa: F401  (its import sets the levels this overrides)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        r".*module\(s\) in eval mode.*",
        r".*LeafSpec.*",
        r".*does not have many workers.*",
        r".*The number of training batches.*",
        r".*litlogger.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


COMPILE_MIN_IMAGES = 2000
"""`compile="auto"` compiles only jobs of at least this many images. Compiling costs 10-25 s once
per process on 2 cores, which the faster forward pass (2-3x) pays back after 1,000-2,000 images."""


class CompiledForward:
    """A network's forward pass compiled by Inductor with weight freezing, falling back to eager.

    Freezing folds batch norm into convolutions and pre-packs weights for oneDNN, which is what
    makes bf16 inference fast on CPUs; it is only valid while the weights do not change, so it is
    used for inference only. Batches are padded to one size so the graph compiles once.
    """

    def __init__(self, network: torch.nn.Module, batch_size: int) -> None:
        self.network = network
        self.batch_size = batch_size
        self.compiled: Any = torch.compile(network, dynamic=False)
        self.failed = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return self.network(images)
        count = images.shape[0]
        if count < self.batch_size:
            padding = images[-1:].expand(self.batch_size - count, *images.shape[1:])
            images = torch.cat([images, padding]).contiguous(memory_format=torch.channels_last)
        try:
            from torch._inductor import config as inductor_config

            with inductor_config.patch(freezing=True):
                return self.compiled(images)[:count]
        except Exception as exc:  # no C++ compiler, unsupported op: eager is always correct
            import logging

            logging.getLogger(__name__).warning(
                "compiled inference unavailable (%s); running eagerly", str(exc).splitlines()[0][:120]
            )
            self.failed = True
            return self.network(images[:count])
