"""`ewaste demo`: the main job end to end on synthetic data, offline, in a few minutes."""

from __future__ import annotations

import time
from pathlib import Path

from ewaste_vision.config import TrainConfig
from ewaste_vision.training.trainer import train

DEMO_BOARDS = 150
DEMO_CROPS_PER_CLASS = 60


def run_demo(out: Path, seed: int = 0, progress: bool = True) -> dict[str, Path]:
    """Draw synthetic boards and component crops, train and evaluate a classifier on the crops.

    Returns:
        The paths a user may want: the boards, the crops, the run and its report.
    """
    from ewaste_vision.data.synth import write_component_crops, write_synthetic_boards

    started = time.perf_counter()
    out = Path(out)
    boards = write_synthetic_boards(out / "data" / "boards", DEMO_BOARDS, seed=seed)
    crops = write_component_crops(out / "data" / "components", DEMO_CROPS_PER_CLASS, seed=seed)
    print(f"drew {DEMO_BOARDS} boards with YOLO labels in {boards} and component crops in {crops}")

    run_dir = out / "runs" / "components"
    resume = (run_dir / "config.yaml").is_file() and not (run_dir / "model.pt").is_file()
    if (run_dir / "model.pt").is_file():
        import shutil

        shutil.rmtree(run_dir)  # the demo is re-runnable: a finished demo run is made anew
    result = train(
        TrainConfig(data=str(crops), out=str(run_dir), task="classify", seed=seed, resume=resume),
        progress=progress,
    )
    assert result is not None  # single process: always rank 0
    from ewaste_vision.tasks import get_task

    print(f"component classifier: {get_task('classify').headline(result.metrics)}")
    print(f"report: {result.report}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s; try: ewaste predict {run_dir} {crops}")
    return {"boards": boards, "crops": crops, "run": run_dir, "report": result.report}
