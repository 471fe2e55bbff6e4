"""`predict_to_file`: predictions for many images, written as CSV or JSON.

The model is a run directory (`model.pt`, run with PyTorch) or a file exported by `ewaste export`
(`.onnx`, run with onnxruntime); both give the same rows. Label tasks give the top-k classes per
image; detectors give their boxes scoring above `min_score`, one row per box.

The `.onnx` path imports no torch (numpy, Pillow and onnxruntime only), so an edge box can run it
without PyTorch; torch is imported only when a run directory is opened.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ewaste_vision.data.images import expand_image_paths
from ewaste_vision.detect.facts import SHOWN_CONFIDENCE
from ewaste_vision.errors import RunError, UnreadableImageError, UserError
from ewaste_vision.io.atomic import write_json, write_text

Rows = list[dict[str, Any]]
"""Label tasks: `{"file", "top": [(class, probability), ...]}`; detect:
`{"file", "detections": [(class, score, [x0, y0, x1, y1]), ...]}` in image pixels, best first."""


def open_model(model: Path | str, batch_size: int = 32) -> Any:
    """A `Predictor` or `Detector` for a run directory, an `OnnxClassifier` or `OnnxDetector` for an
    exported `.onnx` file."""
    from ewaste_vision.export.runtime import OnnxClassifier, OnnxDetector, is_onnx_file, load_onnx

    path = Path(model)
    if is_onnx_file(path):
        loaded = load_onnx(path)
        if loaded.meta.detector is not None:
            return OnnxDetector(loaded)
        return OnnxClassifier(loaded, batch_size)
    if path.is_file():
        raise RunError(f"{path}: expected a run directory or an exported .onnx file")
    from ewaste_vision.runs import MODEL_FILE, read_model_file, resolve_run_dir

    _, meta = read_model_file(resolve_run_dir(path) / MODEL_FILE)
    if meta.task == "detect":
        from ewaste_vision.detect.predictor import Detector

        return Detector.from_run(path)
    from ewaste_vision.inference import Predictor

    return Predictor.from_run(path, batch_size=batch_size)


def predict_paths(
    model: Path | str,
    inputs: Sequence[Path | str],
    k: int = 3,
    batch_size: int = 32,
    progress: bool = False,
    min_score: float | None = None,
) -> tuple[Rows, list[tuple[Path, str]]]:
    """Prediction rows (see `Rows`) for the readable images, and the files that could not be read.

    `min_score` is the detect cut-off; None means `SHOWN_CONFIDENCE` (001's 0.5).
    """
    if k < 1:
        raise UserError(f"--top-k must be at least 1, got {k}")
    predictor = open_model(model, batch_size)
    paths = expand_image_paths(inputs)
    if hasattr(predictor, "detect"):
        cut_off = SHOWN_CONFIDENCE if min_score is None else min_score
        return _detection_rows(predictor, paths, cut_off, progress)
    probs, kept, skipped = predictor.predict_files(paths, progress=progress)
    ranked = top_k(np.asarray(probs), predictor.meta.class_names, k)
    return [{"file": str(path), "top": top} for path, top in zip(kept, ranked, strict=True)], skipped


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """The `k` most probable classes of each row of `probs` [N, C], best first.

    Ties go to the lower class index (a stable sort), so equal probabilities list in a fixed order.
    """
    k = min(k, probs.shape[1])
    indices = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # [N, k]
    values = np.take_along_axis(probs, indices, axis=1)  # [N, k]
    return [
        [(class_names[i], float(v)) for v, i in zip(row_v, row_i, strict=True)]
        for row_v, row_i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def _detection_rows(
    detector: Any, paths: Sequence[Path], min_score: float, progress: bool
) -> tuple[Rows, list[tuple[Path, str]]]:
    # One image per call, as `ewaste value` and evaluation run: a batch pads every image to its
    # largest, which would make an image's boxes depend on its neighbours.
    rows, skipped = [], []
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, unit="image")
    for path in paths:
        try:
            image = detector.load(path)
        except UnreadableImageError as exc:
            skipped.append((path, exc.reason))
            continue
        found = detector.detect([image])[0]
        boxes, scores, labels = (np.asarray(found[key]) for key in ("boxes", "scores", "labels"))
        keep = scores > min_score
        detections = [
            (detector.class_names[int(label)], float(score), [float(v) for v in box])
            for box, score, label in zip(boxes[keep], scores[keep], labels[keep], strict=True)
        ]
        rows.append({"file": str(path), "detections": detections})
    return rows, skipped


def predict_to_file(
    model: Path | str,
    inputs: Sequence[Path | str],
    out: Path | None,
    k: int = 3,
    batch_size: int = 32,
    progress: bool = False,
    min_score: float | None = None,
) -> tuple[Rows, list[tuple[Path, str]]]:
    """Predict and, when `out` is given, write `.csv` (a row per image, or per box) or `.json`."""
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise UserError(f"{out}: --out must end in .csv or .json")
    rows, skipped = predict_paths(model, inputs, k, batch_size, progress, min_score)
    if out is None:
        return rows, skipped
    if out.suffix.lower() == ".json":
        write_json(
            out,
            {
                "predictions": [_json_row(row) for row in rows],
                "skipped": [{"file": str(p), "reason": why} for p, why in skipped],
            },
        )
        return rows, skipped
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if rows and "detections" in rows[0]:
        writer.writerow(["file", "class", "score", "x0", "y0", "x1", "y1"])
        for row in rows:
            for name, score, box in row["detections"]:
                writer.writerow([row["file"], name, f"{score:.4f}", *(f"{v:.1f}" for v in box)])
    else:
        width = max((len(r["top"]) for r in rows), default=k)
        writer.writerow(["file"] + [f"{kind}{i + 1}" for i in range(width) for kind in ("class", "prob")])
        for row in rows:
            writer.writerow([row["file"]] + [v for c, p in row["top"] for v in (c, f"{p:.4f}")])
    write_text(out, buffer.getvalue())
    return rows, skipped


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    if "detections" in row:
        return {
            "file": row["file"],
            "detections": [{"class": c, "score": s, "box": box} for c, s, box in row["detections"]],
        }
    return {"file": row["file"], "top": [{"class": c, "probability": p} for c, p in row["top"]]}
