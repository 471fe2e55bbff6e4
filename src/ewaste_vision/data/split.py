"""Train/val/test splits that keep copies of one photo together and every class in every split.

A random split of images puts one copy of a photo in train and another in test, and the test
score then measures memory. Splitting whole duplicate groups instead, per class, keeps the test
set honest while each split keeps close to its share of every class.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ewaste_vision.data.dedup import (
    duplicate_groups,
    fingerprints_cached,
    group_duplicates,
    unreadable_reason,
)
from ewaste_vision.data.records import SPLITS, LabelledImages

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
"""Shares of train, val and test."""


@dataclass
class DuplicateSummary:
    """What duplicate finding found in a dataset.

    Attributes:
        groups: number of duplicate groups (two or more images).
        images: images in those groups.
        cross_split: for each group whose members sit in different splits, its members' paths.
            Only a split given with the data can produce these; `grouped_stratified_split` never does.
    """

    groups: int = 0
    images: int = 0
    cross_split: list[list[Path]] = field(default_factory=list)


def normalised_shares(fractions: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Train/val/test shares scaled to sum 1, and the indices of the splits with a positive share.

    Raises:
        ValueError: not three non-negative numbers with a positive sum.
    """
    shares = np.asarray(fractions, dtype=float)
    if shares.shape != (len(SPLITS),) or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(
            f"fractions must be {len(SPLITS)} non-negative numbers with a positive sum, got {fractions}"
        )
    shares = shares / shares.sum()
    return shares, np.flatnonzero(shares > 0)


def items_by_group(groups: Sequence[int]) -> dict[object, list[int]]:
    """Item indices per group, in order of first appearance; a negative id is a group of one."""
    items_of: dict[object, list[int]] = {}
    for index, group in enumerate(groups):
        items_of.setdefault(group if group >= 0 else ("single", index), []).append(index)
    return items_of


def grouped_stratified_split(
    labels: Sequence[int],
    groups: Sequence[int],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> list[str]:
    """Assign each item to "train", "val" or "test", never splitting a group.

    A group takes the label most of its items have (the smallest on ties), and is split among
    the groups of that class. Within a class the groups are shuffled, then placed largest first,
    each into the split furthest below its target image count. A class with at least as many
    groups as there are non-empty splits gets at least one group in each of them.

    Args:
        labels: class index per item.
        groups: group id per item; items with a negative id are groups of their own.
        fractions: shares of train, val and test; they need not sum to one, and a zero share
            leaves that split empty.
        seed: the same seed gives the same split.

    Returns:
        The split name of each item, in item order.

    Raises:
        ValueError: lengths differ, or the fractions are not three non-negative numbers with a
            positive sum.
    """
    if len(labels) != len(groups):
        raise ValueError(f"got {len(labels)} labels but {len(groups)} group ids")
    shares, open_splits = normalised_shares(fractions)

    items_of = items_by_group(groups)
    groups_of_class: dict[int, list[list[int]]] = {}
    for items in items_of.values():
        votes = Counter(labels[index] for index in items)
        majority = min(label for label, count in votes.items() if count == max(votes.values()))
        groups_of_class.setdefault(majority, []).append(items)

    rng = np.random.default_rng(seed)
    split_of = [""] * len(labels)
    for label in sorted(groups_of_class):
        class_groups = groups_of_class[label]
        shuffled = [class_groups[index] for index in rng.permutation(len(class_groups))]
        # Stable sort: equal sizes keep their shuffled order, so the seed decides among them.
        ordered = sorted(shuffled, key=len, reverse=True)
        chosen = _place_groups([len(items) for items in ordered], shares, open_splits)
        for items, split in zip(ordered, chosen, strict=True):
            for index in items:
                split_of[index] = SPLITS[split]
    return split_of


def _place_groups(sizes: list[int], shares: np.ndarray, open_splits: np.ndarray) -> list[int]:
    """Split index per group (sizes in placement order), filling the emptiest split first."""
    target = shares * sum(sizes)
    filled = np.zeros(len(shares))
    chosen = []
    for size in sizes:
        deficit = target[open_splits] - filled[open_splits]
        split = int(open_splits[int(np.argmax(deficit))])
        filled[split] += size
        chosen.append(split)
    # Large groups can leave a small split empty; give it the smallest group of the split with most.
    if len(sizes) >= len(open_splits):
        for split in open_splits:
            if split in chosen:
                continue
            counts = Counter(chosen)
            donor = max(counts, key=lambda s: (counts[s], -s))
            smallest = min((i for i, s in enumerate(chosen) if s == donor), key=lambda i: (sizes[i], i))
            chosen[smallest] = int(split)
    return chosen


def assign_splits(
    dataset: LabelledImages,
    seed: int,
    cache_file: Path | None = None,
    invariant: bool = False,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    max_distance: int = 4,
) -> tuple[LabelledImages, DuplicateSummary]:
    """Find duplicates in `dataset` and give every record a group and a split.

    Unreadable images move to `skipped`. A split given with the data is kept as it is, and
    duplicate groups that cross it are reported; otherwise `grouped_stratified_split` makes one.

    Args:
        dataset: the images, e.g. from `read_class_folders`.
        seed: seed of the split made when the data has none.
        cache_file: JSON file that keeps fingerprints between runs (see `fingerprints_cached`).
        invariant: count flipped and rotated copies as duplicates too.
        fractions: train/val/test shares of the split made when the data has none.
        max_distance: perceptual-hash Hamming distance up to which images are near-duplicates.

    Returns:
        A new dataset (the input is not changed) and what duplicate finding found.

    Raises:
        ValueError: some records have a split and others do not.
    """
    if not dataset.has_split and any(record.split is not None for record in dataset.records):
        raise ValueError("some records have a split and some do not; give all or none a split")
    paths = [record.path for record in dataset.records]
    fingerprints = fingerprints_cached(paths, cache_file, invariant=invariant)

    readable = [index for index, fingerprint in enumerate(fingerprints) if fingerprint is not None]
    skipped = list(dataset.skipped)
    skipped += [
        (paths[index], unreadable_reason(paths[index]) or "cannot be read")
        for index, fingerprint in enumerate(fingerprints)
        if fingerprint is None
    ]
    kept = [dataset.records[index] for index in readable]
    kept_fingerprints = [fingerprints[index] for index in readable]
    groups = group_duplicates(kept_fingerprints, max_distance=max_distance)

    if dataset.has_split:
        splits = [record.split or "" for record in kept]
    else:
        splits = grouped_stratified_split(
            [record.label for record in kept], groups, fractions=tuple(fractions), seed=seed
        )
    records = [
        dataclasses.replace(record, group=group, split=split)
        for record, group, split in zip(kept, groups, splits, strict=True)
    ]

    found = duplicate_groups(kept_fingerprints, groups)
    summary = DuplicateSummary(
        groups=len(found),
        images=sum(len(group.members) for group in found),
        cross_split=[
            [records[index].path for index in group.members]
            for group in found
            if len({records[index].split for index in group.members}) > 1
        ],
    )
    return dataclasses.replace(dataset, records=records, skipped=skipped), summary
