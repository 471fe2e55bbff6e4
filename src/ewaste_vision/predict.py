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
from ewaste_vision.engines import EngineSettings, as_engine, local
from ewaste_vision.engines.opening import open_model as open_model  # re-exported: the public name
from ewaste_vision.engines.outputs import BoxesOutput
from ewaste_vision.errors import UserError
from ewaste_vision.io.atomic import write_json, write_text

Rows = list[dict[str, Any]]
"""Label tasks: `{"file", "top": [(class, probability), ...]}`; detect:
`{"file", "detections": [(class, score, [x0, y0, x1, y1]), ...]}` in image pixels, best first."""


def predict_paths(
    model: Path | str,
    inputs: Sequence[Path | str],
    k: int = 3,
    batch_size: int = 32,
    progress: bool = False,
    min_score: float | None = None,
    engine: str | EngineSettings = "local",
    parts: Path | None = None,
) -> tuple[Rows, list[tuple[Path, str]]]:
    """Prediction rows (see `Rows`) for the readable images, and the files that could not be read.

    `min_score` is the detect cut-off; None means `SHOWN_CONFIDENCE` (001's 0.5). `engine="ray"`
    (or `EngineSettings("ray", address, workers, gpus_per_worker)`) scores the images on Ray,
    `parts` being where finished shards are kept so a stopped job resumes; inputs may then also be
    pyarrow file-system URIs such as `s3://bucket/boards/`. Both engines give the same rows in the
    same order.
    """
    if k < 1:
        raise UserError(f"--top-k must be at least 1, got {k}")
    settings = as_engine(engine)
    predictor = open_model(model, batch_size)
    paths = expand_inputs(inputs, allow_uris=settings.name == "ray")
    cut_off = SHOWN_CONFIDENCE if min_score is None else min_score
    if settings.name == "ray":
        from ewaste_vision.engines.ray_engine import RayEngine

        runner = RayEngine.from_settings(settings, model, parts, progress)
        if hasattr(predictor, "detect"):
            outputs, skipped = runner.detect_files(paths)
            return _detection_rows(outputs, predictor.class_names, cut_off), skipped
        probs, kept, skipped = runner.label_probabilities(paths, len(predictor.meta.class_names))
    elif hasattr(predictor, "detect"):
        outputs, skipped = local.detect_files(predictor, paths, progress)
        return _detection_rows(outputs, predictor.class_names, cut_off), skipped
    else:
        probs, kept, skipped = local.label_probabilities(predictor, paths, progress)
    ranked = top_k(np.asarray(probs), predictor.meta.class_names, k)
    return [{"file": str(path), "top": top} for path, top in zip(kept, ranked, strict=True)], skipped


def expand_inputs(inputs: Sequence[Path | str], allow_uris: bool = False) -> list[Path]:
    """Image files of `inputs` (files and folders); with `allow_uris`, remote URIs listed too."""
    from ewaste_vision.engines.ray_engine import is_uri, list_uri_images

    remote = [str(item) for item in inputs if is_uri(item)]
    if remote and not allow_uris:
        raise UserError(f"{remote[0]}: a remote URI is read only with --engine ray")
    local_inputs = [item for item in inputs if not is_uri(item)]
    paths = expand_image_paths(local_inputs) if local_inputs else []
    # A URI stays a string inside a Path-typed list: PurePath would fold its double slash.
    return paths + [uri for item in remote for uri in list_uri_images(item)]  # type: ignore[misc]


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


def _detection_rows(outputs: Sequence[BoxesOutput], class_names: Sequence[str], min_score: float) -> Rows:
    rows = []
    for output in outputs:
        boxes, scores, labels = (np.asarray(output.found[key]) for key in ("boxes", "scores", "labels"))
        keep = scores > min_score
        detections = [
            (class_names[int(label)], float(score), [float(v) for v in box])
            for box, score, label in zip(boxes[keep], scores[keep], labels[keep], strict=True)
        ]
        rows.append({"file": str(output.path), "detections": detections})
    return rows


def predict_to_file(
    model: Path | str,
    inputs: Sequence[Path | str],
    out: Path | None,
    k: int = 3,
    batch_size: int = 32,
    progress: bool = False,
    min_score: float | None = None,
    engine: str | EngineSettings = "local",
) -> tuple[Rows, list[tuple[Path, str]]]:
    """Predict and, when `out` is given, write `.csv` or `.parquet` (a row per image, or per box)
    or `.json`. With the Ray engine, finished shards wait in `OUT.parts/` until every shard is
    scored, so the same command resumes a stopped job."""
    suffix = out.suffix.lower() if out is not None else ""
    if out is not None and suffix not in (".csv", ".json", ".parquet"):
        raise UserError(f"{out}: --out must end in .csv, .parquet or .json")
    parts = out.with_name(out.name + ".parts") if out is not None else None
    rows, skipped = predict_paths(model, inputs, k, batch_size, progress, min_score, engine, parts)
    if out is None:
        return rows, skipped
    if suffix == ".json":
        write_json(
            out,
            {
                "predictions": [_json_row(row) for row in rows],
                "skipped": [{"file": str(p), "reason": why} for p, why in skipped],
            },
        )
        return rows, skipped
    header, table = _table(rows, k)
    if suffix == ".parquet":
        _write_parquet(out, header, table)
        return rows, skipped
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(table)
    write_text(out, buffer.getvalue())
    return rows, skipped


def _table(rows: Rows, k: int) -> tuple[list[str], list[list[str]]]:
    """The CSV's header and rows: one per box for detectors, one per image for label tasks."""
    if rows and "detections" in rows[0]:
        header = ["file", "class", "score", "x0", "y0", "x1", "y1"]
        table = [
            [row["file"], name, f"{score:.4f}", *(f"{v:.1f}" for v in box)]
            for row in rows
            for name, score, box in row["detections"]
        ]
        return header, table
    width = max((len(r["top"]) for r in rows), default=k)
    header = ["file"] + [f"{kind}{i + 1}" for i in range(width) for kind in ("class", "prob")]
    return header, [[row["file"]] + [v for c, p in row["top"] for v in (c, f"{p:.4f}")] for row in rows]


def _write_parquet(out: Path, header: list[str], table: list[list[str]]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UserError(f'{out}: writing Parquet needs pyarrow: pip install -e ".[ray]"') from exc
    from ewaste_vision.io.atomic import atomic_path

    numeric = {"score", "x0", "y0", "x1", "y1"} | {h for h in header if h.startswith("prob")}
    columns = {
        name: [float(row[i]) if name in numeric else row[i] for row in table] for i, name in enumerate(header)
    }
    with atomic_path(out) as tmp:
        pq.write_table(pa.table(columns), tmp)


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    if "detections" in row:
        return {
            "file": row["file"],
            "detections": [{"class": c, "score": s, "box": box} for c, s, box in row["detections"]],
        }
    return {"file": row["file"], "top": [{"class": c, "probability": p} for c, p in row["top"]]}
