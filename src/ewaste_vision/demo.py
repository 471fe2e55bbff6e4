"""`ewaste demo`: the main jobs end to end on synthetic data, offline, in a few minutes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ewaste_vision.config import TrainConfig
from ewaste_vision.io.atomic import write_text
from ewaste_vision.training.trainer import TrainResult, train

DEMO_BOARDS = 150
DEMO_CROPS_PER_CLASS = 60
DEMO_HEATMAP_IMAGES = 4


def run_demo(out: Path, seed: int = 0, progress: bool = True) -> dict[str, Path]:
    """Draw synthetic boards and component crops; train, evaluate and explain on them.

    1. single-label component classification on crops (class folders);
    2. multi-label "which components does this board carry" on whole boards (YOLO labels), with
       Grad-CAM heatmaps scored against the boxes (pointing game).

    Returns:
        The paths a user may want: data, runs, heatmaps and the demo's own summary report.
    """
    from ewaste_vision.data.synth import write_component_crops, write_synthetic_boards
    from ewaste_vision.explain.run import explain_paths
    from ewaste_vision.tasks import get_task

    started = time.perf_counter()
    out = Path(out)
    boards_yaml = write_synthetic_boards(out / "data" / "boards", DEMO_BOARDS, seed=seed)
    crops = write_component_crops(out / "data" / "components", DEMO_CROPS_PER_CLASS, seed=seed)
    print(f"drew {DEMO_BOARDS} boards with YOLO labels ({boards_yaml}) and component crops in {crops}")

    components = _train_fresh(crops, out / "runs" / "components", "classify", seed, progress)
    print(f"component classifier: {get_task('classify').headline(components.metrics)}")
    boards = _train_fresh(boards_yaml.parent, out / "runs" / "boards", "multilabel", seed, progress)
    print(f"board components (multi-label): {get_task('multilabel').headline(boards.metrics)}")

    test_boards = sorted((boards_yaml.parent / "test" / "images").glob("*.jpg"))[:DEMO_HEATMAP_IMAGES]
    heatmaps = explain_paths(boards.run_dir, test_boards, out / "heatmaps", shared_scale=True)
    summary = _write_summary(out, components, boards, heatmaps.images)
    print(f"heatmaps: {out / 'heatmaps'}; pointing game {_pointing(boards.metrics)}")
    print(f"report: {summary}")
    elapsed = time.perf_counter() - started
    print(f"demo finished in {elapsed:.0f} s; try: ewaste predict {components.run_dir} {crops}")
    return {
        "boards": boards_yaml,
        "crops": crops,
        "runs": out / "runs",
        "heatmaps": out / "heatmaps",
        "report": summary,
    }


def _train_fresh(data: Path, run_dir: Path, task: str, seed: int, progress: bool) -> TrainResult:
    """Train into `run_dir`; an unfinished demo run resumes, a finished one is made anew."""
    if (run_dir / "model.pt").is_file():
        shutil.rmtree(run_dir)
    resume = (run_dir / "config.yaml").is_file()
    result = train(
        TrainConfig(data=str(data), out=str(run_dir), task=task, seed=seed, resume=resume), progress=progress
    )
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


def _write_summary(out: Path, components: TrainResult, boards: TrainResult, explained: list[Any]) -> Path:
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
    return write_text(out / "report.md", "\n".join(lines))
