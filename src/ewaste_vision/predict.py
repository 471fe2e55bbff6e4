"""`predict_to_file`: top-k classes for many images, written as CSV or JSON."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ewaste_vision.errors import UserError
from ewaste_vision.evaluate import top_k
from ewaste_vision.inference import Predictor, expand_image_paths
from ewaste_vision.io.atomic import write_json, write_text


def predict_paths(
    run_dir: Path | str,
    inputs: Sequence[Path | str],
    k: int = 3,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Rows `{"file", "top": [(class, probability), ...]}` and the files that could not be read."""
    if k < 1:
        raise UserError(f"--top-k must be at least 1, got {k}")
    predictor = Predictor.from_run(run_dir, batch_size=batch_size)
    paths = expand_image_paths(inputs)
    probs, kept, skipped = predictor.predict_files(paths, progress=progress)
    ranked = top_k(probs, predictor.meta.class_names, k)
    return [{"file": str(path), "top": top} for path, top in zip(kept, ranked, strict=True)], skipped


def predict_to_file(
    run_dir: Path | str,
    inputs: Sequence[Path | str],
    out: Path | None,
    k: int = 3,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Predict and, when `out` is given, write `.csv` (one row per image) or `.json`."""
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise UserError(f"{out}: --out must end in .csv or .json")
    rows, skipped = predict_paths(run_dir, inputs, k, batch_size, progress)
    if out is not None and out.suffix.lower() == ".json":
        write_json(
            out,
            {
                "predictions": [
                    {"file": r["file"], "top": [{"class": c, "probability": p} for c, p in r["top"]]}
                    for r in rows
                ],
                "skipped": [{"file": str(p), "reason": why} for p, why in skipped],
            },
        )
    elif out is not None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        width = max((len(r["top"]) for r in rows), default=k)
        writer.writerow(["file"] + [f"{kind}{i + 1}" for i in range(width) for kind in ("class", "prob")])
        for row in rows:
            writer.writerow([row["file"]] + [v for c, p in row["top"] for v in (c, f"{p:.4f}")])
        write_text(out, buffer.getvalue())
    return rows, skipped
