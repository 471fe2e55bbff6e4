"""RGB + X-ray fusion (002): two classifier streams, one per modality, joined by a fusion layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ewaste_vision.data.records import LabelledImages
from ewaste_vision.tasks.registry import Task, register_task


@register_task
class FuseTask(Task):
    name = "fuse"
    summary = "RGB + X-ray pairs from rgb/ and xray/ class folders; two streams, fast or slow fusion (002)"

    def read_dataset(self, root: Path) -> LabelledImages:
        """The RGB side of the paired dataset (the side a pair is named after)."""
        from ewaste_vision.fusion.data import read_paired_folders

        paired = read_paired_folders(root)
        return LabelledImages(paired.root, paired.class_names, paired.rgb, paired.skipped)

    def train_run(self, config: Any, progress: bool) -> Any:
        from ewaste_vision.fusion.train import train_fusion

        return train_fusion(config, progress)

    def headline(self, metrics: dict[str, Any]) -> str:
        low, high = metrics["accuracy_ci95"]
        alone = metrics.get("streams_alone", {})
        streams = ", ".join(
            f"{label} alone {alone[m]['accuracy']:.1%}"
            for m, label in (("rgb", "RGB"), ("xray", "X-ray"))
            if "accuracy" in alone.get(m, {})
        )
        return (
            f"RGB-X ({metrics.get('fusion')} fusion) test accuracy {metrics['accuracy']:.1%} "
            f"(95% CI {low:.1%}-{high:.1%}, n={metrics['n_test']} pairs); {streams}; "
            f"majority-class baseline {metrics['baseline_accuracy']:.1%}"
        )
