"""Training randomness that depends on the epoch alone, so a resumed run repeats an uninterrupted one.

A DataLoader shuffling with one seeded generator draws epoch k's order from the generator's state
after k earlier epochs; a run resumed at epoch k starts a fresh generator, so from there on it sees
other batches, other augmentations and other dropout masks than the run it continues, and ends
with other weights. `EpochShuffle` derives each epoch's order, and reseeds torch's global generator
(augmentations and dropout draw from it), from the run's seed and the epoch number only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

_EPOCH_STRIDE = 1_000_003
"""Spreads (seed, epoch) over distinct generator seeds (a prime larger than any epoch count)."""


class EpochShuffle(Sampler[int]):
    """A random order of `size` items that is a function of (seed, epoch).

    Starting an epoch also reseeds torch's, NumPy's and Python's global generators from (seed,
    epoch): with in-process loading (`num_workers=0`), the augmentations of that epoch's batches and
    the dropout of its steps then come out the same whether the run was resumed or not.

    Attributes:
        epoch_of: returns the epoch being trained; `bind_epochs` points it at the trainer.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch_of: Callable[[], int] = lambda: 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        epoch_seed = self.seed * _EPOCH_STRIDE + int(self.epoch_of())
        torch.manual_seed(epoch_seed)
        np.random.seed(epoch_seed % 2**32)
        random.seed(epoch_seed)
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(epoch_seed))
        return iter(order.tolist())


def bind_epochs(loader: object, epoch_of: Callable[[], int]) -> None:
    """Let `loader`'s `EpochShuffle` (if it has one) read the current epoch from `epoch_of`."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, EpochShuffle):
        sampler.epoch_of = epoch_of
