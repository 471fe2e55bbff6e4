"""Stream features computed once, for fast fusion (the extractors and aggregators are frozen)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ewaste_vision.data.datasets import ImageFileDataset
from ewaste_vision.data.records import ImageRecord
from ewaste_vision.data.transforms import eval_transform
from ewaste_vision.errors import UnreadableImageError
from ewaste_vision.fusion.model import stream_features
from ewaste_vision.fusion.pairing import orient
from ewaste_vision.hardware import autocast
from ewaste_vision.model_meta import ModelMeta
from ewaste_vision.models.classifier import ImageClassifier


def readable_images(
    records: Sequence[ImageRecord], meta: ModelMeta
) -> tuple[list[ImageRecord], ImageFileDataset, list[tuple[str, str]]]:
    """The records whose files decode, a dataset over them (decoded images kept) and the rest.

    Images of any size are resized to the stream's input (`eval_transform`), so the two images of
    a pair need not match in size.
    """
    transform = eval_transform(meta.image_size, meta.mean, meta.std)
    probe = ImageFileDataset([r.path for r in records], torch.zeros(len(records)), transform, meta.image_size)
    kept, skipped = [], []
    for index, record in enumerate(records):
        try:
            probe.image(index)
            kept.append(record)
        except UnreadableImageError as exc:
            skipped.append((str(record.path), exc.reason))
    dataset = ImageFileDataset(
        [r.path for r in kept], torch.zeros(len(kept)), transform, meta.image_size, cache=probe.cache
    )
    return kept, dataset, skipped


@torch.no_grad()
def feature_table(
    stream: ImageClassifier,
    images: Dataset[tuple[torch.Tensor, torch.Tensor]],
    orientations: Sequence[int] = (0,),
    bf16: bool = False,
    batch_size: int = 32,
) -> torch.Tensor:
    """Features [len(orientations), N, F] of every image, in each of `orientations`."""
    stream.eval()
    chunks = []
    for batch, _ in DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=0):
        # Channels-last, as `Predictor` runs: oneDNN's fast convolutions on CPU want it.
        batch = batch.contiguous(memory_format=torch.channels_last)  # [B, 3, S, S]
        with autocast(bf16):
            views = [stream_features(stream, orient(batch, o)).float() for o in orientations]
        chunks.append(torch.stack(views))  # [O, B, F]
    if not chunks:
        return torch.zeros(len(orientations), 0, stream.num_features)
    return torch.cat(chunks, dim=1)


def sparse_features(
    stream: ImageClassifier,
    images: ImageFileDataset,
    wanted: Sequence[tuple[int, int]],
    bf16: bool = False,
    batch_size: int = 32,
) -> dict[tuple[int, int], torch.Tensor]:
    """Features [F] of only the (image index, orientation) combinations in `wanted`.

    Fixed validation and test pairs use one orientation of each X-ray (at most a few), so this
    costs about one pass over the images where `feature_table` over all orientations costs eight.
    """
    found: dict[tuple[int, int], torch.Tensor] = {}
    for orientation in sorted({o for _, o in wanted}):
        indices = sorted({i for i, o in wanted if o == orientation})
        table = feature_table(stream, Subset(images, indices), (orientation,), bf16, batch_size)[0]
        found.update({(i, orientation): row for i, row in zip(indices, table, strict=True)})
    return found
