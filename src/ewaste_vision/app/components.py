"""Multi-label runs in the app: the components present in each image, with their heatmaps.

Grad-CAM maps for every class come from one backbone pass per chunk of images (the fast all-class
Grad-CAM of `explain`), which also gives the probabilities; the class picker then chooses which
maps to draw, on one shared colour scale or each map to its own peak.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ewaste_vision.app.catalog import RunEntry
from ewaste_vision.app.jobs import RESULT_FILE, Job, Outcome, nothing_readable, save_clean_png, write_table
from ewaste_vision.data.images import load_rgb
from ewaste_vision.errors import UnreadableImageError
from ewaste_vision.explain.gradcam import upsample_and_normalise
from ewaste_vision.explain.methods import class_activation_maps
from ewaste_vision.explain.render import overlay_heatmap
from ewaste_vision.explain.run import DEFAULT_THRESHOLD, choose_classes, parse_class_selection

PRESENT = "present"
"""Class picker value: the classes above their thresholds (the most probable one when none is)."""

CAM_CHUNK = 8
"""Images per Grad-CAM pass (its memory grows with images x classes)."""


def class_choices(class_names: Sequence[str]) -> list[str]:
    """The class picker's values: `present`, `all`, then each class name."""
    return [PRESENT, "all", *class_names]


def components_jobs(entry: RunEntry, jobs: Sequence[Job]) -> list[Outcome]:
    """Components present and their heatmaps for the images of many requests.

    Each job's options: `classes` (`present`, `all`, or a class name) and `shared_scale` (bool).

    Args:
        entry: a multilabel run.
        jobs: the requests batched together by the queue.

    Returns:
        One outcome per job; its result is `{"model", "task", "shared_scale", "images": [{"file",
        "present": [{"class", "probability", "threshold"}], "probabilities": {class: p},
        "heatmaps": [class, ...]}], "skipped"}`, its images the overlays in `heatmaps` order.
    """
    predictor = entry.model()
    meta = predictor.meta
    stored = meta.extra.get("thresholds") or [DEFAULT_THRESHOLD] * len(meta.class_names)
    thresholds = [float(t) for t in stored]
    outcomes: dict[int, Outcome] = {}
    selections: dict[int, int | list[int]] = {}
    for index, job in enumerate(jobs):
        picked = str(job.options.get("classes") or PRESENT)
        if picked not in class_choices(meta.class_names):
            message = f"unknown class {picked!r}; choose one of: {', '.join(class_choices(meta.class_names))}"
            outcomes[index] = Outcome.failed(message, entry.name, entry.task, job.uploads.skipped)
        else:
            # `present` is every class above its threshold: a top-N as long as the class list.
            selections[index] = (
                len(meta.class_names)
                if picked == PRESENT
                else parse_class_selection(picked, meta.class_names)
            )
    found: dict[int, list[tuple[dict[str, Any], list[tuple[Path, str]]]]] = {i: [] for i in selections}
    work = [(index, path) for index in selections for path in jobs[index].uploads.files]
    # Chunk by chunk, so a batch of large photos is never all in memory at once.
    for start in range(0, len(work), CAM_CHUNK):
        loaded = []
        for index, path in work[start : start + CAM_CHUNK]:
            try:
                loaded.append((index, path, load_rgb(path)))
            except UnreadableImageError as exc:
                jobs[index].uploads.skip(jobs[index].name(path), exc.reason)
        if not loaded:
            continue
        batch = torch.stack([predictor.transform(image) for _, _, image in loaded])  # [B, 3, S, S]
        raw, logits = class_activation_maps(predictor.model, batch, None, "gradcam", meta.backbone)
        probs = predictor.task.probabilities(logits.float())  # [B, N]
        for (index, path, image), row, maps in zip(loaded, probs.tolist(), raw, strict=True):
            job = jobs[index]
            chosen = choose_classes(torch.tensor(row), meta, selections[index])
            heatmaps = upsample_and_normalise(maps[None, chosen], meta.image_size, per_map=not _shared(job))[
                0
            ]
            overlays = []
            for k, heatmap in zip(chosen, heatmaps, strict=True):  # heatmap [S, S]
                png = job.out / f"{len(found[index]):03d}-{k:02d}.png"
                caption = f"{job.name(path)}: {meta.class_names[k]} p={row[k]:.2f}"
                overlays.append((save_clean_png(overlay_heatmap(image, heatmap), png), caption))
            found[index].append(
                (_image_result(job.name(path), row, chosen, meta.class_names, thresholds), overlays)
            )
    for index, images in found.items():
        outcomes[index] = _outcome(entry, jobs[index], images, thresholds)
    return [outcomes[index] for index in range(len(jobs))]


def _shared(job: Job) -> bool:
    return bool(job.options.get("shared_scale"))


def _image_result(
    name: str, row: list[float], chosen: list[int], class_names: list[str], thresholds: list[float]
) -> dict[str, Any]:
    present = sorted((k for k in range(len(row)) if row[k] > thresholds[k]), key=lambda k: -row[k])
    return {
        "file": name,
        "present": [
            {"class": class_names[k], "probability": round(row[k], 4), "threshold": round(thresholds[k], 4)}
            for k in present
        ],
        "probabilities": {c: round(p, 4) for c, p in zip(class_names, row, strict=True)},
        "heatmaps": [class_names[k] for k in chosen],
    }


def _outcome(
    entry: RunEntry,
    job: Job,
    images: list[tuple[dict[str, Any], list[tuple[Path, str]]]],
    thresholds: list[float],
) -> Outcome:
    if not images:
        return nothing_readable(job, entry.name, entry.task)
    names = entry.meta.class_names
    rows = []
    for result, _ in images:
        probabilities = list(result["probabilities"].values())
        present = [int(p > t) for p, t in zip(probabilities, thresholds, strict=True)]
        rows.append([result["file"], *present, *probabilities])
    header = ["file", *names, *(f"p_{c}" for c in names)]
    table = write_table(job.out / RESULT_FILE, header, rows)
    result = {
        "model": entry.name,
        "task": entry.task,
        "shared_scale": _shared(job),
        "images": [image for image, _ in images],
        "skipped": job.uploads.skipped,
    }
    return Outcome(result, [overlay for _, overlays in images for overlay in overlays], table)
