"""`ewaste demo`: the main jobs end to end on synthetic data, offline, in a few minutes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ewaste_vision.config import TrainConfig
from ewaste_vision.io.atomic import write_text
from ewaste_vision.lot_value import LotResult
from ewaste_vision.training.trainer import TrainResult, train

DEMO_BOARDS = 250
"""Boards for the multi-label model: on the close-ups, 250 beat 150 (BENCHMARKS.md, issue 23)."""
DEMO_CROPS_PER_CLASS = 60
DEMO_HEATMAP_IMAGES = 4
DEMO_XRAY_BOARDS = 120
DEMO_BOARD_LOOK: dict[str, Any] = {"field_mm": 32.0, "count_range": (1, 4)}
"""Close-ups of a board, one to four parts each: at 256 px a resistor is 40-80 px long. Whole
boards (72 mm, 2-10 parts) put most classes on most boards, so predicting every class scored
0.598 and the frozen features could do little better (0.607), nor their heatmaps find the parts
(see BENCHMARKS.md, "The demo's board model")."""
DEMO_BOARD_TRAINING: dict[str, Any] = {"strategy": "linear", "image_size": 320, "extra": {"road_images": 4}}
"""A linear probe on cached features: a fine-tune of the few boards scored lower and took longer.
At 320 px the heatmaps come from a 10 x 10 grid instead of 8 x 8: the pointing game of seed 0 went
from 0.59 to 0.69 (BENCHMARKS.md, issue 23). ROAD is scored on 4 test boards instead of the
default 8: it is the costliest part of the demo's evaluation (sparse solves on 320 x 320 images)."""
DEMO_DETECTOR = {"image_size": 256, "max_epochs": 10, "patience": 4}
"""A small detector on small synthetic scans, so the demo stays within a few minutes on a laptop.
10 epochs instead of 12 (seed 0): test mAP@0.5 0.752 against 0.774 and F1 0.722 against 0.701 on
18 test scans, a sixth less training; 8 epochs fell to 0.672 (BENCHMARKS.md, issue 23)."""


def run_demo(out: Path, seed: int = 0, progress: bool = True) -> dict[str, Path]:
    """Draw synthetic boards and component crops; train, evaluate and explain on them.

    1. single-label component classification on crops (class folders);
    2. multi-label "which components does this board carry" on whole boards (YOLO labels), with
       Grad-CAM heatmaps scored against the boxes (pointing game);
    3. component detection on synthetic dual-energy X-ray scans of boards (both sides), and the
       value of the test boards as a lot, with its interval.

    Returns:
        The paths a user may want: data, runs, heatmaps and the demo's own summary report.
    """
    from ewaste_vision.data.synth import write_component_crops, write_synthetic_boards
    from ewaste_vision.data.synth_xray import write_synthetic_xray_boards
    from ewaste_vision.explain.run import explain_paths
    from ewaste_vision.lot_value import value_lot
    from ewaste_vision.tasks import get_task

    started = time.perf_counter()
    out = Path(out)
    boards_yaml = write_synthetic_boards(out / "data" / "boards", DEMO_BOARDS, seed=seed, **DEMO_BOARD_LOOK)
    crops = write_component_crops(out / "data" / "components", DEMO_CROPS_PER_CLASS, seed=seed)
    print(f"drew {DEMO_BOARDS} boards with YOLO labels ({boards_yaml}) and component crops in {crops}")

    components = _train_fresh(crops, out / "runs" / "components", "classify", seed, progress)
    print(f"component classifier: {get_task('classify').headline(components.metrics)}")
    boards = _train_fresh(
        boards_yaml.parent, out / "runs" / "boards", "multilabel", seed, progress, DEMO_BOARD_TRAINING
    )
    print(f"board components (multi-label): {get_task('multilabel').headline(boards.metrics)}")

    test_boards = sorted((boards_yaml.parent / "test" / "images").glob("*.jpg"))[:DEMO_HEATMAP_IMAGES]
    heatmaps = explain_paths(boards.run_dir, test_boards, out / "heatmaps", shared_scale=True)
    print(f"heatmaps: {out / 'heatmaps'}; pointing game {_pointing(boards.metrics)}")

    xray_yaml = write_synthetic_xray_boards(
        out / "data" / "xray-boards", DEMO_XRAY_BOARDS, seed=seed, size=256
    )
    detector = _train_fresh(
        xray_yaml.parent, out / "runs" / "detector", "detect", seed, progress, DEMO_DETECTOR
    )
    print(f"component detector (dual-energy X-ray): {get_task('detect').headline(detector.metrics)}")
    lot = value_lot(detector.run_dir, [xray_yaml.parent / "test" / "images"], out / "lot")
    print(f"lot of {len(lot.boards)} test boards: {_lot_line(lot)}")

    summary = _write_summary(out, components, boards, heatmaps.images, detector, lot)
    # 002's RGB-X fusion on synthetic devices (CT, X-ray renders, iCAM streams); adds its section.
    from ewaste_vision.demo_xray import run_xray_demo

    rgbx = run_xray_demo(out, seed=seed, progress=progress, report=summary)
    print(f"report: {summary}")
    elapsed = time.perf_counter() - started
    print(f"demo finished in {elapsed:.0f} s; try: ewaste predict {components.run_dir} {crops}")
    runs = " ".join(str(r.run_dir) for r in (components, boards, detector, rgbx))
    print(f"open the operator app on these runs: ewaste serve {runs}  (then browse http://127.0.0.1:7860)")
    return {
        "boards": boards_yaml,
        "crops": crops,
        "xray_boards": xray_yaml,
        "runs": out / "runs",
        "heatmaps": out / "heatmaps",
        "lot": lot.report,
        "report": summary,
    }


def _train_fresh(
    data: Path, run_dir: Path, task: str, seed: int, progress: bool, settings: dict[str, Any] | None = None
) -> TrainResult:
    """Train into `run_dir`; an unfinished demo run resumes, a finished one is made anew."""
    if (run_dir / "model.pt").is_file():
        shutil.rmtree(run_dir)
    resume = (run_dir / "config.yaml").is_file()
    config = TrainConfig(
        data=str(data), out=str(run_dir), task=task, seed=seed, resume=resume, **(settings or {})
    )
    result = train(config, progress=progress)
    assert result is not None  # one process: always rank 0
    return result


def _pointing(metrics: dict[str, Any]) -> str:
    per_class = metrics.get("cam_pointing", {})
    pairs = sum(v["n"] for v in per_class.values())
    if not pairs:
        return "n/a"
    cam = sum(v["cam"] * v["n"] for v in per_class.values()) / pairs
    centre = sum(v["centre_baseline"] * v["n"] for v in per_class.values()) / pairs
    return f"{cam:.2f} (centre-Gaussian baseline {centre:.2f}, {pairs} image-class pairs)"


def _lot_line(lot: LotResult) -> str:
    currency = lot.boards[0].currency if lot.boards else ""
    line = f"{sum(b.value for b in lot.boards):.2f} {currency} as detected"
    if lot.uncertainty is not None:
        total = lot.uncertainty.lot
        line += f"; corrected {total.expected:.2f} (90% interval {total.low:.2f} to {total.high:.2f})"
    if lot.comparison is not None:
        line += f"; true boxes give {lot.comparison.lot_true:.2f}"
    return line


def _write_summary(
    out: Path,
    components: TrainResult,
    boards: TrainResult,
    explained: list[Any],
    detector: TrainResult,
    lot: LotResult,
) -> Path:
    from ewaste_vision.tasks import get_task

    lines = [
        "# ewaste-vision demo\n",
        "Everything here was drawn and trained on this machine, offline.\n",
        "## Component classifier (single label)\n",
        get_task("classify").headline(components.metrics) + "\n",
        f"Full report: [{components.report.relative_to(out)}]({components.report.relative_to(out)})\n",
        "## Which components does a board carry? (multi-label)\n",
        get_task("multilabel").headline(boards.metrics) + "\n",
        f"Heatmap pointing game: {_pointing(boards.metrics)}.\n",
        f"Full report: [{boards.report.relative_to(out)}]({boards.report.relative_to(out)})\n",
        "## Heatmaps of test boards (Grad-CAM, shared colour scale)\n",
    ]
    for image in explained:
        panel = Path(image.folder) / "panel.png"
        lines.append(f"![{Path(image.path).name}]({panel.relative_to(out)})\n")
    lines += [
        "## Component detection on dual-energy X-ray scans\n",
        get_task("detect").headline(detector.metrics) + "\n",
        f"Full report: [{detector.report.relative_to(out)}]({detector.report.relative_to(out)})\n",
        "## Value of the test boards as a lot\n",
        _lot_line(lot) + "\n",
        f"Lot report: [{lot.report.relative_to(out)}]({lot.report.relative_to(out)})\n",
    ]
    return write_text(out / "report.md", "\n".join(lines))
