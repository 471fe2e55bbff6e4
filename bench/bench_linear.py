"""Wall time of the `linear` strategy on 3000 images of 150 px, against the 2-minute target.

Writes 3000 synthetic component crops (8 classes x 375, 150 px) into a temporary folder, then runs
the toolkit's `train(TrainConfig(strategy="linear"))` with the default backbone, exactly as
`ewaste train --data DIR --strategy linear` would. Making the images is not timed; everything
`train` does is: splitting with duplicate fingerprints, feature extraction, head training, saving
and the evaluation on the test split with its report.

To show where the time goes, the bench wraps three of the toolkit's functions with a stopwatch
(their behaviour is unchanged): `assign_splits`, `extract_pooled_features` and `evaluate_run`.

Run from the repository root:
    python bench/bench_linear.py            # full run, about 2.5 minutes on 2 cores
    python bench/bench_linear.py --quick    # smoke run on 160 images
    python bench/bench_linear.py --image-size 224 --json bench/results/linear_224.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import ewaste_vision.evaluate
import ewaste_vision.training.trainer
from _common import RESULTS_DIR, describe, machine_facts, print_table, write_json
from ewaste_vision.config import TrainConfig
from ewaste_vision.data.synth import COMPONENT_CLASSES, write_component_crops
from ewaste_vision.models.registry import get_backbone_spec
from ewaste_vision.training.trainer import train

TARGET_SECONDS = 120.0
"""Product target: the linear strategy on 3000 images of 150 px in under 2 minutes."""


@contextlib.contextmanager
def stopwatch(module: ModuleType, name: str, totals: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in `module.name` to `totals[name]` while the block runs."""
    original = getattr(module, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - started

    setattr(module, name, timed)
    try:
        yield
    finally:
        setattr(module, name, original)


def run_linear(workdir: Path, n_per_class: int, size: int, image_size: int = 0) -> dict[str, Any]:
    """Make the images, train, and return the timings and the test accuracy."""
    started = time.perf_counter()
    data = write_component_crops(workdir / "data", n_per_class, seed=0, size=size)
    generation_s = time.perf_counter() - started

    phases: dict[str, float] = {}
    config = TrainConfig(data=str(data), out=str(workdir / "run"), strategy="linear", image_size=image_size)
    with contextlib.ExitStack() as stack:
        # `train` looks these names up in its own module, and imports `evaluate_run` when it runs.
        stack.enter_context(stopwatch(ewaste_vision.training.trainer, "assign_splits", phases))
        stack.enter_context(stopwatch(ewaste_vision.training.trainer, "extract_pooled_features", phases))
        stack.enter_context(stopwatch(ewaste_vision.evaluate, "evaluate_run", phases))
        started = time.perf_counter()
        result = train(config, progress=False)
        wall_s = time.perf_counter() - started
    assert result is not None  # one process: always rank 0
    named = {
        "split + fingerprints": phases.get("assign_splits", 0.0),
        "feature extraction": phases.get("extract_pooled_features", 0.0),
        "evaluation + report": phases.get("evaluate_run", 0.0),
    }
    named["head training + rest"] = wall_s - sum(named.values())
    return {
        "images": n_per_class * len(COMPONENT_CLASSES),
        "image_px": size,
        "backbone": config.backbone,
        # The images are resized to the backbone's own input size unless the config says otherwise.
        "model_input_px": config.image_size or get_backbone_spec(config.backbone).input_size,
        "generation_s_not_timed": round(generation_s, 1),
        "wall_s": round(wall_s, 1),
        "phases_s": {k: round(v, 1) for k, v in named.items()},
        "test_accuracy": round(float(result.metrics["accuracy"]), 4),
        "epochs": _epochs(result.run_dir),
    }


def _epochs(run_dir: Path) -> int | None:
    """Epochs the head trained for, read from the run's training log."""
    log = run_dir / "logs" / "metrics.csv"
    if not log.is_file():
        return None
    epochs = {line.split(",")[0] for line in log.read_text().splitlines()[1:]}
    return len(epochs) or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=375, help="images per class (8 classes)")
    parser.add_argument("--size", type=int, default=150, help="image side in pixels")
    parser.add_argument(
        "--image-size",
        type=int,
        default=0,
        help="model input side in pixels (default 0: the backbone's own, as `train` does)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the images and the run here (default: a temporary folder)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 images per class")
    parser.add_argument(
        "--json", type=Path, default=RESULTS_DIR / "linear.json", help="where to write the results"
    )
    args = parser.parse_args()
    if args.quick:
        args.per_class = 20

    facts = machine_facts()
    with tempfile.TemporaryDirectory(prefix="bench-linear-") as temporary:
        workdir = args.workdir or Path(temporary)
        results = run_linear(workdir, args.per_class, args.size, args.image_size)
    facts["load_average_1min_after"] = machine_facts()["load_average_1min"]

    verdict = "met" if results["wall_s"] < TARGET_SECONDS else "MISSED"
    print(
        f"\nlinear strategy, {results['images']} images of {args.size} px, {results['backbone']} "
        f"at {results['model_input_px']} px"
    )
    print(describe(facts))
    print_table(
        ["measure", "value"],
        [
            ["wall time (s)", results["wall_s"]],
            *[[f"  {phase} (s)", seconds] for phase, seconds in results["phases_s"].items()],
            ["target (s)", f"< {TARGET_SECONDS:.0f}: {verdict}"],
            ["test accuracy", results["test_accuracy"]],
            ["head epochs", results["epochs"]],
            ["image generation (s, not timed)", results["generation_s_not_timed"]],
        ],
    )
    write_json(
        args.json,
        {
            "bench": "linear",
            "machine": facts,
            "target_seconds": TARGET_SECONDS,
            "verdict": verdict,
            **results,
        },
    )


if __name__ == "__main__":
    main()
