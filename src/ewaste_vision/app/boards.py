"""Detect runs in the app: boxes drawn with a legend, and each board's value with its interval.

Large photos are tiled by the `Detector` itself. Values come from the packaged price table (its
currency and date are part of every result); intervals from the run's own test precision and
recall, as in `ewaste value`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ewaste_vision.app.catalog import RunEntry
from ewaste_vision.app.jobs import RESULT_FILE, Job, Outcome, nothing_readable, save_clean_png, write_table
from ewaste_vision.data.xray import find_xray_samples
from ewaste_vision.detect.draw import SHOWN_CONFIDENCE, render_detections
from ewaste_vision.detect.metrics import DetectionPrediction
from ewaste_vision.detect.tiling import needs_tiling
from ewaste_vision.errors import DataError, UnreadableImageError
from ewaste_vision.lot_value import detections_for_value, rates_from_metrics
from ewaste_vision.value import BoardValue, PriceTable, ValueInterval, board_value, value_interval

DETECT_CHUNK = 4
"""Boards loaded and detected at once (tiles of large photos are batched inside the Detector)."""


def boards_jobs(entry: RunEntry, jobs: Sequence[Job], table: PriceTable) -> list[Outcome]:
    """Detections and values for the boards of many requests, detected in shared batches.

    Args:
        entry: a detect run.
        jobs: the requests batched together by the queue.
        table: the price table that values components.

    Returns:
        One outcome per job; its result is `{"model", "task", "price_table": {"currency", "date"},
        "images": [{"file", "width", "height", "tiled", "detections": [{"class", "score", "box"}],
        "counts": {class: n}, "value": {"detected", "currency", "expected", "low", "high",
        "confidence"}}], "lot": {...} or null, "interval_note", "skipped"}`, its images the drawn boards.
    """
    detector = entry.model()
    samples = [(index, path) for index, job in enumerate(jobs) for path in _samples(job, detector.modality)]
    found: list[list[tuple[dict[str, Any], BoardValue, tuple[Path, str]]]] = [[] for _ in jobs]
    # Chunk by chunk, so a batch of large photos is never all in memory at once.
    for start in range(0, len(samples), DETECT_CHUNK):
        loaded = []
        for index, path in samples[start : start + DETECT_CHUNK]:
            try:
                loaded.append((index, path, detector.load(path)))  # [3, H, W] in [0, 1]
            except (UnreadableImageError, DataError) as exc:
                jobs[index].uploads.skip(jobs[index].name(path), getattr(exc, "reason", str(exc)))
        detections = detector.detect([tensor for _, _, tensor in loaded]) if loaded else []
        for (index, path, tensor), boxes in zip(loaded, detections, strict=True):
            job = jobs[index]
            name = job.name(path)
            board = board_value(detections_for_value(boxes, detector.class_names), table, image=name)
            png = job.out / f"{len(found[index]):03d}.png"
            save_clean_png(render_detections(detector.display_image(path), boxes, detector.class_names), png)
            image = _image_result(name, tensor, boxes, board, detector.class_names, entry.meta.image_size)
            found[index].append((image, board, (png, f"{name}: {board.value:.2f} {board.currency}")))
    rates = rates_from_metrics(entry.metrics.get("per_class") or {})
    outcomes = []
    for job, results in zip(jobs, found, strict=True):
        if not results:
            outcomes.append(nothing_readable(job, entry.name, entry.task))
            continue
        images = [image for image, _, _ in results]
        boards = [board for _, board, _ in results]
        drawn = [picture for _, _, picture in results]
        intervals, lot, note = _intervals(boards, table, rates)
        for image, board, interval in zip(images, boards, intervals, strict=True):
            image["value"] = _value(board, interval)
        result = {
            "model": entry.name,
            "task": entry.task,
            "price_table": {"currency": table.currency, "date": table.date},
            "images": images,
            "lot": lot,
            "interval_note": note,
            "skipped": job.uploads.skipped,
        }
        outcomes.append(Outcome(result, drawn, _write_csv(job, images, table)))
    return outcomes


def _image_result(
    name: str,
    tensor: torch.Tensor,
    boxes: DetectionPrediction,
    board: BoardValue,
    class_names: list[str],
    image_size: int,
) -> dict[str, Any]:
    """One board's JSON, less its value (added once the intervals of the request are known)."""
    height, width = (int(side) for side in tensor.shape[-2:])
    keep = boxes["scores"] > SHOWN_CONFIDENCE
    return {
        "file": name,
        "width": width,
        "height": height,
        "tiled": needs_tiling(width, height, image_size),
        "detections": [
            {"class": class_names[int(label)], "score": round(float(score), 4), "box": _rounded(box)}
            for box, label, score in zip(
                boxes["boxes"][keep].tolist(),
                boxes["labels"][keep].tolist(),
                boxes["scores"][keep].tolist(),
                strict=True,
            )
        ],
        "counts": dict(board.counts),
    }


def _samples(job: Job, modality: str) -> list[Path]:
    """The request's inputs: every file, or for X-ray runs one file per scan (pairs count once)."""
    if modality != "xray":
        return list(job.uploads.files)
    try:
        scans = find_xray_samples(job.uploads.folder)
    except DataError as exc:
        job.uploads.skip("upload", str(exc))
        return []
    covered = {path for scan in scans for path in scan.files}
    for path in job.uploads.files:
        if path not in covered:
            job.uploads.skip(
                job.name(path),
                "not a dual-energy scan; upload NAME.high.png with NAME.low.png, or one [2, H, W] .npy/.tif",
            )
    # Scans follow the order of the uploads that hold them.
    order = {path: index for index, path in enumerate(job.uploads.files)}
    return sorted((scan.files[0] for scan in scans if scan.files[0] in order), key=order.__getitem__)


def _intervals(
    boards: list[BoardValue], table: PriceTable, rates: dict[str, Any]
) -> tuple[list[ValueInterval | None], dict[str, Any] | None, str]:
    """Per-board intervals, the lot's (for more than one board), and why they are missing if so."""
    valued = {name for board in boards for name in board.counts if table.value_class_of(name) is not None}
    missing = sorted(valued - set(rates))
    if missing:
        note = f"no test precision/recall for {', '.join(missing)} in this run; values are uncorrected"
        return [None] * len(boards), None, note
    uncertainty = value_interval(boards, rates)
    lot = _interval_dict(uncertainty.lot, table.currency) if len(boards) > 1 else None
    return list(uncertainty.boards), lot, ""


def _value(board: BoardValue, interval: ValueInterval | None) -> dict[str, Any]:
    if interval is None:
        return {
            "detected": round(board.value, 4),
            "currency": board.currency,
            "expected": None,
            "low": None,
            "high": None,
            "confidence": None,
        }
    return _interval_dict(interval, board.currency)


def _interval_dict(interval: ValueInterval, currency: str) -> dict[str, Any]:
    return {
        "detected": round(interval.detected, 4),
        "currency": currency,
        "expected": round(interval.expected, 4),
        "low": round(interval.low, 4),
        "high": round(interval.high, 4),
        "confidence": interval.confidence,
    }


def _rounded(box: Sequence[float]) -> list[float]:
    return [round(float(v), 1) for v in box]


def _write_csv(job: Job, images: list[dict[str, Any]], table: PriceTable) -> Path:
    classes = sorted({name for image in images for name in image["counts"]})
    header = ["file", "boxes", f"value_{table.currency}", "expected", "low", "high", *classes]
    rows = [
        [
            image["file"],
            len(image["detections"]),
            image["value"]["detected"],
            image["value"]["expected"],
            image["value"]["low"],
            image["value"]["high"],
            *(image["counts"].get(name, 0) for name in classes),
        ]
        for image in images
    ]
    return write_table(job.out / RESULT_FILE, header, rows)
