"""Tiled inference: detect small parts on large board photos without shrinking them away.

A 4080x3060 photo resized to a 640 px detector input shrinks every part about 6.4 times, so a
12 px resistor becomes 2 px and is lost. Cutting the photo into overlapping detector-sized tiles
keeps the native resolution. How the tiles' detections are merged is told in `tile_merge`.

This module imports no torch at load time: the ONNX detector tiles numpy arrays with
`detect_tiled_arrays` on installs without PyTorch, and `detect_tiled` wraps the same steps for
torch tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from ewaste_vision.detect.tile_merge import ArrayDetections, Window, merge_tiles, touches_interior_edge

if TYPE_CHECKING:
    import torch

    from ewaste_vision.detect.metrics import DetectionPrediction

DetectFn = Callable[[list["torch.Tensor"]], Sequence[Mapping[str, Any]]]
"""A detector: a list of [3, h, w] tiles in, one dict shaped like `DetectionPrediction` per tile
out, boxes in tile pixels (a torchvision detector in eval mode fits as it is)."""

ArrayDetectFn = Callable[[list[np.ndarray]], Sequence[Mapping[str, np.ndarray]]]
"""`DetectFn` for numpy: [3, h, w] float32 tiles in, `ArrayDetections` per tile out."""


class _HasShape(Protocol):
    """An image as `detect_images` takes it: a torch tensor or a numpy array, [..., H, W]."""

    @property
    def shape(self) -> tuple[int, ...]: ...


ImageT = TypeVar("ImageT", bound=_HasShape)
ResultT = TypeVar("ResultT")


def tile_windows(width: int, height: int, tile: int = 640, overlap: float = 0.2) -> list[Window]:
    """Square windows of side `tile` that cover the whole image, overlapping by `overlap`.

    Windows step by `tile * (1 - overlap)`; the last window in each row and column is shifted
    inward to end on the image border, so no window pads past the image and the last overlap may
    be larger. Along a side no longer than `tile` there is one window as long as the side.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        tile: window side in pixels, the detector's input size.
        overlap: fraction of `tile` shared by neighbouring windows, in [0, 1). Objects smaller
            than `tile * overlap` are seen whole in at least one window.

    Returns:
        Windows in row-major order, (x0, y0, x1, y1) with x1 and y1 exclusive.

    Raises:
        ValueError: on a non-positive size or tile, or an overlap outside [0, 1).
    """
    if width < 1 or height < 1 or tile < 1:
        raise ValueError(f"need positive sizes, got width={width}, height={height}, tile={tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, round(tile * (1.0 - overlap)))
    return [
        (x0, y0, min(x0 + tile, width), min(y0 + tile, height))
        for y0 in _starts(height, tile, stride)
        for x0 in _starts(width, tile, stride)
    ]


def needs_tiling(width: int, height: int, tile: int = 640, slack: float = 0.25) -> bool:
    """Whether an image is large enough that whole-image inference would shrink it noticeably.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        tile: the detector's input size.
        slack: how much larger than `tile` the long side may be before tiling pays; a little
            down-scaling costs less than the extra passes and the merging.

    Returns:
        True when the long side exceeds `tile * (1 + slack)`.
    """
    return max(width, height) > tile * (1.0 + slack)


def detect_images(
    images: Sequence[ImageT],
    detect_whole: Callable[[list[ImageT]], Sequence[ResultT]],
    detect_large: Callable[[ImageT], ResultT],
    tile_mode: str,
    tile_size: int,
    batch_size: int = 4,
) -> list[ResultT]:
    """Detections per image: large images one by one through `detect_large` (tiled), the others
    in batches through `detect_whole`. Works on torch tensors and numpy arrays alike.

    Args:
        images: [3, H, W] images.
        detect_whole: detects on a list of up to `batch_size` whole images, one result each.
        detect_large: detects on one image by tiles (`detect_tiled` and the same detector).
        tile_mode: `auto` (tile images that `needs_tiling` says are large), `always` or `never`.
        tile_size: the detector's input size.
        batch_size: whole images per `detect_whole` call.

    Returns:
        One result per image, in the order of `images`.
    """
    results: list[ResultT | None] = [None] * len(images)
    whole = []
    for index, image in enumerate(images):
        height, width = image.shape[-2:]
        if tile_mode == "always" or (tile_mode == "auto" and needs_tiling(width, height, tile_size)):
            results[index] = detect_large(image)
        else:
            whole.append(index)
    for start in range(0, len(whole), batch_size):
        chunk = whole[start : start + batch_size]
        for index, found in zip(chunk, detect_whole([images[i] for i in chunk]), strict=True):
            results[index] = found
    return [r for r in results if r is not None]


def detect_tiled(
    detect_fn: DetectFn,
    image: torch.Tensor,
    tile: int = 640,
    overlap: float = 0.2,
    iou_merge: float = 0.5,
    batch_size: int = 4,
    edge_tolerance: float = 2.0,
) -> DetectionPrediction:
    """Run a detector on overlapping tiles of a large image and merge the detections.

    Args:
        detect_fn: called with up to `batch_size` tiles, each a [3, h, w] view of `image`;
            returns one dict per tile with boxes in tile pixels.
        image: [3, H, W] float image in [0, 1].
        tile: tile side in pixels.
        overlap: fraction of `tile` shared by neighbouring tiles, in [0, 1).
        iou_merge: IoU above which two same-class boxes are one object (NMS, fragment fusion).
        batch_size: tiles per `detect_fn` call.
        edge_tolerance: a box side within this many pixels of an interior tile edge counts as cut.

    Returns:
        Boxes [K, 4] in image pixels, scores [K] and labels [K] (int64), highest score first, on
        the device of `image`.

    Raises:
        ValueError: if `image` is not [3, H, W], `batch_size` < 1, or `detect_fn` returns the
            wrong number of results.
    """

    def on_tiles(tiles: list[torch.Tensor]) -> list[ArrayDetections]:
        # The merge is numpy (`tile_merge`): a few hundred boxes per photo, so the copy to the
        # CPU costs nothing next to the network.
        return [as_arrays(found) for found in detect_fn(tiles)]

    merged = _detect_tiles(on_tiles, image, tile, overlap, iou_merge, batch_size, edge_tolerance)
    return as_tensors(merged, image.device)


def as_arrays(found: Mapping[str, Any]) -> ArrayDetections:
    """Torch detections as numpy arrays on the CPU (boxes and scores float32, labels int64)."""
    import torch

    return {
        "boxes": found["boxes"].detach().to("cpu", torch.float32).numpy(),
        "scores": found["scores"].detach().to("cpu", torch.float32).numpy(),
        "labels": found["labels"].detach().to("cpu", torch.int64).numpy(),
    }


def as_tensors(found: ArrayDetections, device: Any) -> DetectionPrediction:
    """Numpy detections as torch tensors on `device`."""
    import torch

    return {
        "boxes": torch.from_numpy(found["boxes"]).to(device),
        "scores": torch.from_numpy(found["scores"]).to(device),
        "labels": torch.from_numpy(found["labels"]).to(device),
    }


def detect_tiled_arrays(
    detect_fn: ArrayDetectFn,
    image: np.ndarray,
    tile: int = 640,
    overlap: float = 0.2,
    iou_merge: float = 0.5,
    batch_size: int = 4,
    edge_tolerance: float = 2.0,
) -> ArrayDetections:
    """`detect_tiled` for numpy images and detectors (the ONNX runtime): same arguments, same
    merge; returns `ArrayDetections`."""
    return _detect_tiles(detect_fn, image, tile, overlap, iou_merge, batch_size, edge_tolerance)


def _detect_tiles(
    detect_fn: Callable[[list[Any]], Sequence[Mapping[str, Any]]],
    image: Any,
    tile: int,
    overlap: float,
    iou_merge: float,
    batch_size: int,
    edge_tolerance: float,
) -> ArrayDetections:
    """The tiling loop of `detect_tiled` on a tensor or array `image`; `detect_fn` returns numpy."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a [3, H, W] image, got shape {tuple(image.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    height, width = (int(side) for side in image.shape[1:])
    windows = tile_windows(width, height, tile, overlap)
    boxes, scores, labels, tile_ids, cut = [], [], [], [], []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        results = detect_fn([image[:, y0:y1, x0:x1] for x0, y0, x1, y1 in batch])
        if len(results) != len(batch):
            raise ValueError(f"detect_fn returned {len(results)} results for {len(batch)} tiles")
        for offset, (window, result) in enumerate(zip(batch, results, strict=True)):
            local = np.asarray(result["boxes"], dtype=np.float32).reshape(-1, 4)  # [n, 4]
            boxes.append(local + np.asarray(window[:2] * 2, dtype=np.float32))
            scores.append(np.asarray(result["scores"], dtype=np.float32).reshape(-1))
            labels.append(np.asarray(result["labels"], dtype=np.int64).reshape(-1))
            tile_ids.append(np.full(len(local), start + offset, dtype=np.int64))
            cut.append(touches_interior_edge(local, window, width, height, edge_tolerance))
    return merge_tiles(
        np.concatenate(boxes),
        np.concatenate(scores),
        np.concatenate(labels),
        np.concatenate(tile_ids),
        np.concatenate(cut),
        np.asarray(windows, dtype=np.float32),
        iou_merge,
    )


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last window ends on the border instead of padding past it
    return starts
