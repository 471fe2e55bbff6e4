"""One request's work and result, and the folders they live in.

A `Job` is one request's checked uploads and options; a task's runner turns a batch of jobs into
`Outcome`s: a JSON-ready result, images (written without metadata) and a CSV table.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ewaste_vision.app.uploads import Uploads
from ewaste_vision.io.atomic import atomic_path

RESULT_FILE = "results.csv"


@dataclass
class Job:
    """One request, ready for a task runner."""

    uploads: Uploads
    """The request's images and what was left out."""
    out: Path
    """A fresh folder for the request's images and CSV."""
    options: dict[str, Any] = field(default_factory=dict)
    """Task options from the page or the API (class picker, shared scale, ...)."""

    def name(self, path: Path) -> str:
        """The name the user knows a file by."""
        return self.uploads.names.get(path, path.name)


@dataclass
class Outcome:
    """What one request returns."""

    result: dict[str, Any]
    """JSON result (always has `model`, `task`, `images`, `skipped`; `error` when nothing was done)."""
    images: list[tuple[Path, str]] = field(default_factory=list)
    """(PNG, caption) pairs: overlays or drawn detections."""
    table: Path | None = None
    """The CSV of the results, one row per image."""

    @classmethod
    def failed(
        cls, message: str, model: str, task: str, skipped: Sequence[Mapping[str, str]] = ()
    ) -> Outcome:
        """A request that produced nothing, with the one-line reason."""
        return cls({"model": model, "task": task, "images": [], "skipped": list(skipped), "error": message})


def nothing_readable(job: Job, model: str, task: str) -> Outcome:
    """The outcome of a request none of whose files could be read."""
    reasons = "; ".join(f"{item['file']}: {item['reason']}" for item in job.uploads.skipped[:3])
    message = f"no usable image ({reasons or 'nothing uploaded'})"
    return Outcome.failed(message, model, task, job.uploads.skipped)


def save_clean_png(image: Image.Image, path: Path, max_side: int = 1600) -> Path:
    """Write `image` as PNG built from its pixels alone: no EXIF, GPS or text chunks survive.

    Args:
        image: any RGB image.
        path: target file.
        max_side: the image is shrunk to this long side first (a 12 MP drawing is 30 MB of PNG).
    """
    rgb = image.convert("RGB")
    if max(rgb.size) > max_side:
        scale = max_side / max(rgb.size)
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))))
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    with atomic_path(path) as tmp:
        clean.save(tmp, format="PNG")
    return path


def write_table(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Write a CSV with `header` and `rows`, atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


class WorkArea:
    """A private folder of request folders, in the system temp dir (where Gradio may serve from).

    Old request folders are removed as new ones are made, once they are older than `ttl_s`.
    """

    def __init__(self, ttl_s: int = 3600, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="ewaste-serve-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s

    def new_request(self) -> Path:
        """A fresh, empty folder for one request."""
        self.prune()
        return Path(tempfile.mkdtemp(prefix="req-", dir=self.root))

    def prune(self) -> None:
        """Remove request folders older than `ttl_s`."""
        cutoff = time.time() - self.ttl_s
        for folder in self.root.glob("req-*"):
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                continue

    def close(self) -> None:
        """Remove everything."""
        shutil.rmtree(self.root, ignore_errors=True)
