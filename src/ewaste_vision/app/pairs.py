"""Fusion runs in the app: one RGB photo and one X-ray image of a device -> class probabilities.

A request uploads exactly two files, the RGB photo first and the X-ray image second (the tab's
two inputs; API clients send `files: [rgb, xray]`). Both are resized to their stream's input, so
their sizes need not match. All pairs of a batch go through the model together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ewaste_vision.app.catalog import RunEntry
from ewaste_vision.app.jobs import RESULT_FILE, Job, Outcome, write_table
from ewaste_vision.data.records import ImageRecord

TOP_K = 5
"""Classes listed per pair under `top` (all probabilities are in `probabilities`)."""


def fusion_jobs(entry: RunEntry, jobs: Sequence[Job]) -> list[Outcome]:
    """Fused probabilities for the (RGB, X-ray) pair of each request, in one pass for the batch.

    Returns:
        One outcome per job (see `page.FUSION_API`); `streams` holds each stream's own top class.
    """
    from ewaste_vision.fusion.pairing import Pair

    predictor = entry.model()
    names = entry.meta.class_names
    outcomes: dict[int, Outcome] = {}
    rgb: list[ImageRecord] = []
    xray: list[ImageRecord] = []
    owners: list[int] = []
    for index, job in enumerate(jobs):
        if len(job.uploads.files) != 2:
            message = f"upload one RGB image and one X-ray image; got {len(job.uploads.files)} usable file(s)"
            outcomes[index] = Outcome.failed(message, entry.name, entry.task, job.uploads.skipped)
            continue
        rgb.append(ImageRecord(job.uploads.files[0], -1))
        xray.append(ImageRecord(job.uploads.files[1], -1))
        owners.append(index)
    plan = [Pair(n, n, -1, 0, True) for n in range(len(owners))]
    found: dict[int, tuple[list[float], dict[str, str]]] = {}
    if plan:
        probs, per_stream, scored, skipped = predictor.predict_pairs(rgb, xray, plan)
        unreadable = dict(skipped)
        for n, row, g_rgb, g_xray in zip(
            scored,
            probs.tolist(),
            per_stream["rgb"].argmax(1).tolist(),
            per_stream["xray"].argmax(1).tolist(),
            strict=True,
        ):
            found[owners[n]] = (row, {"rgb": names[g_rgb], "xray": names[g_xray]})
        for n, owner in enumerate(owners):
            job = jobs[owner]
            for path in (rgb[n].path, xray[n].path):
                if str(path) in unreadable:
                    job.uploads.skip(job.name(path), unreadable[str(path)])
    for index, job in enumerate(jobs):
        if index in outcomes:
            continue
        if index not in found:
            outcomes[index] = Outcome.failed(
                "the pair could not be read", entry.name, entry.task, job.uploads.skipped
            )
            continue
        row, streams = found[index]
        order = sorted(range(len(names)), key=lambda k: -row[k])
        probabilities = {name: round(p, 4) for name, p in zip(names, row, strict=True)}
        image: dict[str, Any] = {
            "file": job.name(job.uploads.files[0]),
            "xray": job.name(job.uploads.files[1]),
            "top": [{"class": names[k], "probability": round(row[k], 4)} for k in order[:TOP_K]],
            "probabilities": probabilities,
            "streams": streams,
        }
        table = write_table(
            job.out / RESULT_FILE,
            ["file", "xray", "predicted", *names],
            [[image["file"], image["xray"], names[order[0]], *probabilities.values()]],
        )
        result = {"model": entry.name, "task": entry.task, "images": [image], "skipped": job.uploads.skipped}
        outcomes[index] = Outcome(result, table=table)
    return [outcomes[index] for index in range(len(jobs))]
