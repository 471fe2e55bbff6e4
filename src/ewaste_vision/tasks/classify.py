"""Single-label classification: one class per image (device type, component type)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ewaste_vision.data.folders import read_class_folders
from ewaste_vision.data.records import ImageRecord, LabelledImages
from ewaste_vision.tasks.registry import LabelTask, register_task


@register_task
class ClassifyTask(LabelTask):
    name = "classify"
    summary = "one class per image, from class folders; softmax + cross-entropy"

    def read_dataset(self, root: Path) -> LabelledImages:
        return read_class_folders(root)

    def train_run(self, config: Any, progress: bool) -> Any:
        from ewaste_vision.training.trainer import train_labels

        return train_labels(self, config, progress)

    def targets(self, records: list[ImageRecord], num_classes: int) -> torch.Tensor:
        return torch.tensor([record.label for record in records], dtype=torch.long)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(dim=-1)

    def batch_accuracy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(dim=-1) == targets).float().mean()

    def score(
        self,
        targets: torch.Tensor,
        probs: torch.Tensor,
        class_names: list[str],
        train_targets: torch.Tensor,
        settings: dict[str, Any],
    ) -> dict[str, Any]:
        from ewaste_vision.report.classification import classification_metrics

        return classification_metrics(targets, probs, class_names, train_labels=train_targets.tolist())

    def write_report(self, run_dir: Path, metrics: dict[str, Any], context: dict[str, Any]) -> Path:
        from ewaste_vision.report.markdown import write_classification_report
        from ewaste_vision.report.plots import plot_confusion_matrix, plot_learning_curves

        context = dict(context)
        context.pop("extra_sections", None)
        class_names = context.pop("class_names")
        training_log = Path(context.pop("run_dir", run_dir)) / "logs" / "metrics.csv"
        plots_dir = run_dir / "plots"
        plots = {
            "confusion matrix": plot_confusion_matrix(
                metrics["confusion_matrix"], class_names, plots_dir / "confusion_matrix.png"
            )
        }
        if training_log.is_file():
            plots["learning curves"] = plot_learning_curves(training_log, plots_dir / "learning_curves.png")
        return write_classification_report(run_dir, metrics, plots, context)

    def headline(self, metrics: dict[str, Any]) -> str:
        low, high = metrics["accuracy_ci95"]
        return (
            f"test accuracy {metrics['accuracy']:.1%} (95% CI {low:.1%}-{high:.1%}, n={metrics['n_test']}), "
            f"macro-F1 {metrics['macro_f1']:.3f}; majority-class baseline {metrics['baseline_accuracy']:.1%}"
        )
