"""One registry of tasks. A task says how to read its data, what its targets and loss are, and how
its predictions are scored and reported; training, inference and the CLI are shared.

The registry sits below every task: it never imports one. `TASK_MODULES` names the module of each
built-in task, loaded on first lookup, so adding a task is one new module (a `Task` subclass under
`@register_task`) plus one line in that table. `tests/test_architecture.py` keeps it that way.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from ewaste_vision.data.records import ImageRecord, LabelledImages
from ewaste_vision.data.transforms import train_transform
from ewaste_vision.errors import UserError


class Task(ABC):
    """What every task has: a name, training defaults, a data reader, a way to train and a headline.

    Subclasses are registered with `register_task`.
    """

    name: str = ""
    summary: str = ""
    defaults: ClassVar[dict[str, Any]] = {
        "strategy": "linear",
        "batch_size": 32,
        "max_epochs": 15,
        "lr": 1e-3,
        "head_warmup": True,
    }
    """Training settings used where the config says `auto` (or 0); see `TrainConfig`."""
    invariant_duplicates: bool = False
    """Count flipped, rotated and recoloured copies as duplicates (augmented dataset exports)."""

    @abstractmethod
    def read_dataset(self, root: Path) -> LabelledImages:
        """Read the dataset at `root` (no images decoded)."""

    @abstractmethod
    def train_run(self, config: Any, progress: bool) -> Any:
        """Train as `config` (a `TrainConfig` with the task's defaults filled in) says; write the
        run directory; return a `TrainResult` (None on DDP ranks other than 0)."""

    @abstractmethod
    def headline(self, metrics: dict[str, Any]) -> str:
        """One line that sums up `metrics` for the terminal."""


class LabelTask(Task):
    """Image-level labels (one class, or a set of classes): a classifier network, a loss over its
    logits, probabilities per class. Trained by the shared trainer."""

    # Whether `train_transform` crops, so that cached training images keep a margin of pixels.
    train_transform_crops: ClassVar[bool] = True

    @abstractmethod
    def targets(self, records: list[ImageRecord], num_classes: int) -> torch.Tensor:
        """Training targets for `records`."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scalar training loss (the task's default)."""

    def train_transform(
        self, image_size: int, mean: Sequence[float], std: Sequence[float]
    ) -> Callable[[Image.Image], torch.Tensor]:
        """Augmentation for training images (random crops, flips and colour by default)."""
        return train_transform(image_size, mean, std)

    def make_loss(self, name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The loss called `name` (`auto` is the task's default)."""
        if name not in ("auto", "default"):
            raise UserError(f"the {self.name} task has no loss {name!r}; use --loss auto")
        return self.loss

    def decision_settings(self, val_probs: torch.Tensor, val_targets: torch.Tensor) -> dict[str, Any]:
        """Settings fitted on the validation split and stored with the model (e.g. thresholds)."""
        return {}

    @abstractmethod
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Map logits [B, C] to probabilities [B, C]."""

    @abstractmethod
    def batch_accuracy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """A cheap per-batch score logged during training as `val_acc`."""

    @abstractmethod
    def score(
        self,
        targets: torch.Tensor,
        probs: torch.Tensor,
        class_names: list[str],
        train_targets: torch.Tensor,
        settings: dict[str, Any],
    ) -> dict[str, Any]:
        """Test metrics, JSON-ready, with a trivial baseline beside them."""

    def extra_scores(self, predictor: Any, records: list[ImageRecord]) -> tuple[dict[str, Any], list[str]]:
        """Further metrics for `metrics.json` and sections for the report (e.g. heatmap quality)."""
        return {}, []

    @abstractmethod
    def write_report(self, run_dir: Path, metrics: dict[str, Any], context: dict[str, Any]) -> Path:
        """Write plots and the human report into `run_dir`; return the report's path."""


_TASKS: dict[str, Task] = {}

TASK_MODULES: tuple[str, ...] = (
    "ewaste_vision.tasks.classify",
    "ewaste_vision.tasks.detect",
    "ewaste_vision.tasks.multilabel",
    "ewaste_vision.tasks.fuse",
)
"""The built-in tasks' modules, in the order `available_tasks` lists them; each registers itself."""


def register_task(task_class: type[Task]) -> type[Task]:
    """Class decorator: instantiate and register a task; one name, one task."""
    task = task_class()
    if not task.name or task.name in _TASKS:
        raise ValueError(f"task name {task.name!r} is empty or registered twice")
    _TASKS[task.name] = task
    return task_class


def _ensure_builtin_tasks() -> None:
    # By name, not by import statement: the tasks import the registry (and the trainers), so a
    # static import here would tie the registry into one import ring with all of them.
    for module in TASK_MODULES:
        importlib.import_module(module)


def available_tasks() -> list[str]:
    """Registered task names."""
    _ensure_builtin_tasks()
    return list(_TASKS)


def get_task(name: str) -> Task:
    """The task registered as `name`, or a `UserError` listing the choices."""
    _ensure_builtin_tasks()
    if name not in _TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(_TASKS)}")
    return _TASKS[name]


def get_label_task(name: str, source: Path | str = "") -> LabelTask:
    """The image-label task `name`; a `RunError` when it is another kind (for example detect)."""
    task = get_task(name)
    if not isinstance(task, LabelTask):
        from ewaste_vision.errors import RunError

        raise RunError(f"{source or name}: a {name!r} run; this command needs a classify or multilabel run")
    return task
