"""The X-ray part of `ewaste demo`: 002's RGB-X fusion on synthetic devices, end to end.

1. `ct.synth_ct`: CT volumes of synthetic devices and RGB photos of their outside (two classes of
   a family share an outside, so the photos alone cannot tell them apart);
2. `ct.render_job`: domain-randomised X-ray renders of the volumes;
3. `ewaste train --task fuse`: an iCAM RGB stream and an iCAM X-ray stream, then fast fusion,
   split by device, so every test pair shows devices no stream was trained on.

Sized to add about a minute to the demo on 2 CPU cores: few small devices, 96 px inputs, two iCAM
iterations, a few epochs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ewaste_vision.config import TrainConfig
from ewaste_vision.io.atomic import write_text
from ewaste_vision.training.trainer import TrainResult, train

DEMO_CT = {"classes": 4, "devices_per_class": 4, "size": 96, "photos_per_device": 3}
"""Two families of two classes, four devices each (one to test, one to validate, two to train)."""
DEMO_RENDERS = 3
"""X-ray renders per device."""
DEMO_FUSION = {
    "image_size": 96,
    "head": "icam",
    "icam_iterations": 2,
    "max_epochs": 2,
    "head_epochs": 20,
    "split": (0.5, 0.25, 0.25),
}


def run_xray_demo(out: Path, seed: int = 0, progress: bool = True, report: Path | None = None) -> TrainResult:
    """Make the synthetic devices, train the two streams and their fast fusion, and add a section
    to the demo's `report` (when given).

    Returns:
        The fusion run's result.
    """
    from ewaste_vision.ct.render_job import synth_xray_folder
    from ewaste_vision.ct.synth_ct import write_synthetic_ct
    from ewaste_vision.tasks import get_task

    data = Path(out) / "data" / "devices"
    write_synthetic_ct(data, seed=seed, **DEMO_CT)
    synth_xray_folder(data / "volumes", data / "xray", DEMO_RENDERS, seed=seed, progress=progress)
    print(f"synthetic devices: CT volumes, photos and X-ray renders in {data}")

    run_dir = Path(out) / "runs" / "rgbx"
    if (run_dir / "model.pt").is_file():
        shutil.rmtree(run_dir)  # a finished demo run is made anew, an unfinished one resumes
    config = TrainConfig(
        data=str(data),
        out=str(run_dir),
        task="fuse",
        fusion="fast",
        seed=seed,
        resume=(run_dir / "config.yaml").is_file(),
        **DEMO_FUSION,  # type: ignore[arg-type]
    )
    result = train(config, progress=progress)
    assert result is not None  # one process: always rank 0
    headline = get_task("fuse").headline(result.metrics)
    print(f"RGB + X-ray fusion: {headline}")
    if report is not None:
        _append_section(report, result, headline, Path(out))
    return result


def _append_section(report: Path, result: TrainResult, headline: str, out: Path) -> None:
    link = result.report.relative_to(out)
    section = "\n".join(
        [
            "## Devices from a photo and an X-ray (RGB-X fusion, 002)\n",
            headline + "\n",
            "Synthetic devices: two classes of a family look alike outside and differ inside. The test "
            "pairs show devices held out from training; the baseline always answers the training "
            "split's most common class.\n",
            f"Full report: [{link}]({link})\n",
        ]
    )
    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    write_text(report, text.rstrip("\n") + "\n\n" + section)
