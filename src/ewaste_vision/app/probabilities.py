"""Classify runs in the app: class probabilities for every image of a batch of requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ewaste_vision.app.catalog import RunEntry
from ewaste_vision.app.jobs import RESULT_FILE, Job, Outcome, nothing_readable, write_table

TOP_K = 5
"""Classes listed per image under `top` (all probabilities are in `probabilities`)."""


def classify_jobs(entry: RunEntry, jobs: Sequence[Job]) -> list[Outcome]:
    """Probabilities for the images of many requests, in one model pass over all of them.

    Args:
        entry: a classify run.
        jobs: the requests batched together by the queue.

    Returns:
        One outcome per job; its result is `{"model", "task", "images": [{"file", "top": [{"class",
        "probability"}], "probabilities": {class: p}}], "skipped": [{"file", "reason"}]}`.
    """
    predictor = entry.model()
    names = entry.meta.class_names
    every = [path for job in jobs for path in job.uploads.files]
    probs, kept, skipped = predictor.predict_files(every)  # probs [N, C]
    found = {path: row for path, row in zip(kept, probs.tolist(), strict=True)}
    unreadable = dict(skipped)
    outcomes = []
    for job in jobs:
        for path in job.uploads.files:
            if path in unreadable:
                job.uploads.skip(job.name(path), unreadable[path])
        images: list[dict[str, Any]] = []
        for path in job.uploads.files:
            if path not in found:
                continue
            row = found[path]
            order = sorted(range(len(names)), key=lambda k: -row[k])
            images.append(
                {
                    "file": job.name(path),
                    "top": [{"class": names[k], "probability": round(row[k], 4)} for k in order[:TOP_K]],
                    "probabilities": {name: round(p, 4) for name, p in zip(names, row, strict=True)},
                }
            )
        if not images:
            outcomes.append(nothing_readable(job, entry.name, entry.task))
            continue
        rows = [
            [image["file"], image["top"][0]["class"], *image["probabilities"].values()] for image in images
        ]
        table = write_table(job.out / RESULT_FILE, ["file", "predicted", *names], rows)
        result = {"model": entry.name, "task": entry.task, "images": images, "skipped": job.uploads.skipped}
        outcomes.append(Outcome(result, table=table))
    return outcomes
