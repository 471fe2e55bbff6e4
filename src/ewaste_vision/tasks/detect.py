"""Component detection (001): boxes and classes from YOLO labels, FCOS over the backbone registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ewaste_vision.data.records import LabelledImages
from ewaste_vision.errors import UserError
from ewaste_vision.tasks.registry import Task, register_task


@register_task
class DetectTask(Task):
    name = "detect"
    summary = "component boxes from YOLO labels; FCOS (sizes n/s/m) over any backbone; 001's metrics"
    # Sized for under an hour of training on 2 CPU cores with ~750 boards: 20 epochs at 448 px took
    # 46 minutes on pcb-components with the backbone's early stages frozen (15 epochs all trainable
    # took 47). Validation mAP@0.5 rose to 0.586 (15 epochs: 0.547); 640 px input at the same
    # time budget trailed (0.46 after 10 of 12 epochs). The box classifier trained after it
    # (`detect.box_classifier_train`) adds 12 minutes there: 58 in all.
    defaults: ClassVar[dict[str, Any]] = {
        "strategy": "full",
        "image_size": 448,
        "batch_size": 8,
        "max_epochs": 20,
        "lr": 1e-3,
    }
    invariant_duplicates = True

    def read_dataset(self, root: Path) -> LabelledImages:
        from ewaste_vision.data.yolo import is_yolo_dataset, read_yolo_dataset

        if not is_yolo_dataset(root):
            raise UserError(f"{root}: detection needs a YOLO dataset (data.yaml + images + labels)")
        return read_yolo_dataset(root)

    def train_run(self, config: Any, progress: bool) -> Any:
        from ewaste_vision.detect.train import train_detector

        return train_detector(self, config, progress)

    def headline(self, metrics: dict[str, Any]) -> str:
        def show(value: Any) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        return (
            f"test mAP@0.5 {show(metrics.get('map50'))}, mAP@0.5:0.95 {show(metrics.get('map50_95'))}, "
            f"F1 {show(metrics.get('f1'))} (IoU > 0.5, confidence > 0.5; n={metrics.get('n_images')})"
        )
