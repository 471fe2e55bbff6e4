"""`predict_pairs_to_file`: fused predictions for RGB images, each with its X-ray image.

Pairing for prediction: one RGB file and one X-ray file are a pair whatever their names; folders
(or several files) are paired by file stem (`phone1.jpg` with `phone1.png`). An RGB image without
an X-ray of its stem (or the other way round) is skipped and reported, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ewaste_vision.data.images import expand_image_paths
from ewaste_vision.data.records import ImageRecord
from ewaste_vision.errors import UserError
from ewaste_vision.io.atomic import write_json, write_text

FUSION_TASK = "fuse"


def is_fusion_run(path: Path | str) -> bool:
    """Whether `path` is a run directory of the fuse task (reads `run.json`; no torch).

    Raises:
        UserError: `path` is an ONNX file exported from a fusion run (its two inputs are not
            run by `ewaste predict` yet).
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx" and path.is_file() and _onnx_task(path) == FUSION_TASK:
        raise UserError(
            f"{path}: an RGB-X fusion model; `ewaste predict` runs fusion from its run directory "
            "(ewaste predict RUN RGB... --xray XRAY...); in onnxruntime feed inputs `rgb` and `xray`"
        )
    run_file = path / "run.json"
    if not run_file.is_file():
        return False
    try:
        return json.loads(run_file.read_text(encoding="utf-8")).get("task") == FUSION_TASK
    except (OSError, ValueError, AttributeError):
        return False


def _onnx_task(path: Path) -> str | None:
    """The `task` an exported file names in its metadata, or None when it cannot be read."""
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.get_modelmeta().custom_metadata_map.get("task")
    except Exception:  # not ours or unreadable: `predict` then reports it as it always has
        return None


def pair_inputs(
    rgb_inputs: Sequence[Path | str], xray_inputs: Sequence[Path | str]
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(RGB file, X-ray file) pairs and the files left without a partner (see the module docstring)."""
    if not xray_inputs:
        raise UserError("a fuse run needs X-ray images too: ewaste predict RUN RGB... --xray XRAY...")
    rgb, xray = expand_image_paths(rgb_inputs), expand_image_paths(xray_inputs)
    if len(rgb) == 1 and len(xray) == 1:
        return [(rgb[0], xray[0])], []
    xray_by_stem: dict[str, Path] = {}
    for path in xray:
        xray_by_stem.setdefault(path.stem, path)
    pairs, lonely = [], []
    for path in rgb:
        partner = xray_by_stem.pop(path.stem, None)
        if partner is None:
            lonely.append((path, f"no X-ray image named {path.stem}.* among the --xray inputs"))
        else:
            pairs.append((path, partner))
    lonely += [(path, f"no RGB image named {stem}.* among the inputs") for stem, path in xray_by_stem.items()]
    if not pairs:
        raise UserError("no RGB image has an X-ray image of the same file stem; name each pair alike")
    return pairs, lonely


def predict_pairs(
    run: Path | str, rgb_inputs: Sequence[Path | str], xray_inputs: Sequence[Path | str], k: int = 3
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Rows `{"file", "xray", "top": [(class, probability), ...]}` and the skipped files."""
    from ewaste_vision.fusion.pairing import Pair
    from ewaste_vision.fusion.predictor import FusionPredictor
    from ewaste_vision.predict import top_k

    if k < 1:
        raise UserError(f"--top-k must be at least 1, got {k}")
    predictor = FusionPredictor.from_run(run)
    pairs, skipped = pair_inputs(rgb_inputs, xray_inputs)
    rgb = [ImageRecord(r, -1) for r, _ in pairs]
    xray = [ImageRecord(x, -1) for _, x in pairs]
    plan = [Pair(i, i, -1, 0, True) for i in range(len(pairs))]
    probs, _, scored, unreadable = predictor.predict_pairs(rgb, xray, plan)
    skipped += [(Path(p), why) for p, why in unreadable]
    ranked = top_k(probs.numpy(), predictor.meta.class_names, k)
    rows = [
        {"file": str(pairs[n][0]), "xray": str(pairs[n][1]), "top": top}
        for n, top in zip(scored, ranked, strict=True)
    ]
    return rows, skipped


def predict_pairs_to_file(
    run: Path | str,
    rgb_inputs: Sequence[Path | str],
    xray_inputs: Sequence[Path | str],
    out: Path | None,
    k: int = 3,
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """`predict_pairs`, written to `out` (`.csv` or `.json`) when it is given."""
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise UserError(f"{out}: --out must end in .csv or .json for a fuse run")
    rows, skipped = predict_pairs(run, rgb_inputs, xray_inputs, k)
    if out is None:
        return rows, skipped
    if out.suffix.lower() == ".json":
        write_json(
            out,
            {
                "predictions": [
                    {**row, "top": [{"class": c, "probability": p} for c, p in row["top"]]} for row in rows
                ],
                "skipped": [{"file": str(p), "reason": why} for p, why in skipped],
            },
        )
        return rows, skipped
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "xray"] + [f"{kind}{i + 1}" for i in range(k) for kind in ("class", "prob")])
    for row in rows:
        writer.writerow([row["file"], row["xray"]] + [v for c, p in row["top"] for v in (c, f"{p:.4f}")])
    write_text(out, buffer.getvalue())
    return rows, skipped
