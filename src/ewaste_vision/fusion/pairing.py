"""Pairing an RGB image with an X-ray image of its class (002, Sec. IV-C).

002 had no sensor that sees a device both ways at once, so each RGB image was paired with a random
X-ray image of the same class, the X-ray randomly re-oriented so the network cannot learn from two
images lying alike. Here files of one stem are true pairs and keep their orientation; every other
image gets a random partner of its class, with one of the 8 right-angle orientations (4 quarter
turns, mirrored or not). A training epoch draws new partners; validation and test pairs are drawn
once, from the seed, so a run scores the same pairs every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ewaste_vision.data.records import ImageRecord

ORIENTATIONS = 8
"""Right-angle orientations of a square image: quarter turns 0-3, then the same mirrored (4-7)."""

PAIRING_STREAMS = {"train": 0, "val": 1, "test": 2, "eval": 3}
"""Separate random streams per use, so a change to one never reshuffles another."""


@dataclass(frozen=True)
class Pair:
    """One (RGB, X-ray) sample: indices into the RGB and X-ray record lists of one split."""

    rgb: int
    xray: int
    label: int
    orientation: int
    """Applied to the X-ray image (`orient`); 0 keeps it as it is."""
    true_pair: bool


def orient(images: torch.Tensor, orientation: int) -> torch.Tensor:
    """Images [..., S, S] in orientation `orientation` (0-7; see `ORIENTATIONS`)."""
    mirrored = images.flip(-1) if orientation >= 4 else images
    return torch.rot90(mirrored, orientation % 4, dims=(-2, -1)) if orientation % 4 else mirrored


def missing_partners(rgb: Sequence[ImageRecord], xray: Sequence[ImageRecord]) -> list[int]:
    """Labels that occur on one side only (those images cannot be paired)."""
    return sorted({r.label for r in rgb} ^ {r.label for r in xray})


def plan_pairs(
    rgb: Sequence[ImageRecord], xray: Sequence[ImageRecord], seed: int, use: str, epoch: int = 0
) -> list[Pair]:
    """Pairs covering every image of both sides at least once.

    Per class: true pairs (same stem) first; then each remaining image of the larger side once,
    with a partner from the other side's remaining images, drawn in a shuffled cycle (or from all
    of its images when every one of them is truly paired already), and a random X-ray orientation.

    Args:
        rgb: the RGB records of one split.
        xray: the X-ray records of the same split.
        seed: the run's seed.
        use: a key of `PAIRING_STREAMS` (`train` pairs change with `epoch`).
        epoch: the training epoch.

    Raises:
        ValueError: a class has images on one side only (see `missing_partners`).
    """
    lonely = missing_partners(rgb, xray)
    if lonely:
        raise ValueError(f"labels {lonely} have images on one side only; they cannot be paired")
    pairs: list[Pair] = []
    for label in sorted({r.label for r in rgb}):
        rng = np.random.default_rng([seed, PAIRING_STREAMS[use], epoch if use == "train" else 0, label])
        rgb_of = [i for i, r in enumerate(rgb) if r.label == label]
        xray_of = [i for i, r in enumerate(xray) if r.label == label]
        xray_by_stem: dict[str, int] = {}
        for index in xray_of:
            xray_by_stem.setdefault(xray[index].path.stem, index)
        paired_x: set[int] = set()
        free_rgb = []
        for index in rgb_of:
            partner = xray_by_stem.get(rgb[index].path.stem)
            if partner is not None and partner not in paired_x:
                paired_x.add(partner)
                pairs.append(Pair(index, partner, label, 0, True))
            else:
                free_rgb.append(index)
        free_xray = [i for i in xray_of if i not in paired_x]
        if not free_rgb and not free_xray:
            continue
        rgb_leads = len(free_rgb) >= len(free_xray)
        leaders = free_rgb if rgb_leads else free_xray
        pool = (free_xray or xray_of) if rgb_leads else (free_rgb or rgb_of)
        cycles = -(-len(leaders) // len(pool))
        partners = np.concatenate([rng.permutation(pool) for _ in range(cycles)])[: len(leaders)]
        order = rng.permutation(len(leaders))
        turns = rng.integers(0, ORIENTATIONS, size=len(leaders))
        for leader, partner, turn in zip(
            [leaders[i] for i in order.tolist()], partners.tolist(), turns.tolist(), strict=True
        ):
            r, x = (leader, partner) if rgb_leads else (partner, leader)
            pairs.append(Pair(int(r), int(x), label, int(turn), False))
    return pairs
