"""Typed configuration shared by the CLI, the Python API and YAML recipes.

The CLI builds its `train` options from these fields, and `--config FILE.yaml` fills the same
fields, so a recipe and a command line always mean the same thing.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ewaste_vision.errors import UserError
from ewaste_vision.model_meta import HeadSettings

STRATEGIES = ("auto", "linear", "finetune", "full")

TASK_DEFAULT_FIELDS = ("strategy", "image_size", "batch_size", "max_epochs", "lr", "head_warmup")
"""Fields whose "auto" value (`auto`, 0 or None) means "the task's own default" (`Task.defaults`)."""


@dataclass
class TrainConfig:
    """Everything that decides what `ewaste train` does."""

    data: str = ""
    """Dataset folder (class folders, optionally under train/val/test)."""
    out: str = "runs/run"
    """Run directory to create (or resume)."""
    task: str = "classify"
    """Task name from the task registry (`classify`)."""
    backbone: str = "efficientnet_lite0"
    """Backbone name from `ewaste models`; the default is the fastest one with offline weights (see
    BENCHMARKS.md for the larger ones)."""
    weights: str | None = None
    """Local file of backbone weights to use instead of a download."""
    pretrained: bool = True
    """Start from ImageNet weights when they can be had."""
    init: str | None = None
    """Run directory whose backbone weights start this run instead of ImageNet's: a finished
    classify, multilabel or detect run of the same backbone (its head is not taken)."""
    strategy: str = "auto"
    """`linear` (frozen backbone, cached features), `finetune` (last stages) or `full` (all but a
    pretrained backbone's stride-2 and stride-4 stages); `auto` is the task's own (classify:
    linear; multilabel and detect: full)."""
    image_size: int = 0
    """Input resolution in pixels; 0 means the task's own (multilabel and detect 448), else the
    backbone's (256 for the default)."""
    batch_size: int = 0
    """Images per optimisation step; 0 means the task's own (classify 32, multilabel 16, detect 8)."""
    max_epochs: int = 0
    """Upper bound on epochs that train backbone layers (0: the task's own); early stopping usually
    ends sooner."""
    head_epochs: int = 200
    """Upper bound on epochs of head training on cached features (`linear`, and the warm-up of
    `finetune`/`full`); each takes about a second."""
    loss: str = "auto"
    """Training loss: `auto` is the task's own (cross-entropy; BCE for multilabel), `asl` is the
    asymmetric loss for multilabel."""
    lr: float = 0.0
    """Learning rate of the head (0: the task's own, 1e-3); trainable backbone layers use 0.3 of it,
    on a one-cycle schedule."""
    lr_schedule: str = "onecycle"
    """`onecycle` (warm-up then cosine decay while backbone layers train; constant for a head on
    cached features) or `step` (multiply the rate by `lr_step_gamma` every `lr_step_epochs`)."""
    lr_step_epochs: int = 20
    """`step` schedule: epochs between two rate cuts (003 halves it every 20 epochs)."""
    lr_step_gamma: float = 0.5
    """`step` schedule: factor applied to the rate at each cut."""
    weight_decay: float = 1e-4
    """Weight decay of the optimiser."""
    dropout: float = 0.2
    """Dropout before the linear head."""
    head: str = "linear"
    """`classify`: `linear` (pooling, dropout, linear) or `icam` (002's Iterative Class Activation
    Mapping: the backbone looks again at crops its CAM points to; see `models/icam.py`)."""
    icam_iterations: int = 3
    """`icam`: backbone passes per image (the whole image, then one per crop; 1 is the plain head)."""
    aggregate: str = "weighted"
    """`icam`: how the iterations' features are combined: `weighted` (learned), `mean` or `sum`."""
    icam_crop_fraction: float = 0.5
    """`icam`: side of each crop as a fraction of the side of the view it is cut from."""
    patience: int = 5
    """Epochs without a better validation loss before training stops."""
    seed: int = 0
    """Seed for splits, initialisation, augmentation and data order."""
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    """Train/val/test fractions used when the dataset has no split of its own."""
    duplicate_distance: int = 4
    """Perceptual-hash Hamming distance up to which two images count as near-duplicates."""
    augment: bool = True
    """Random crops, flips and colour changes while training."""
    head_warmup: bool | None = None
    """`finetune`/`full`: first fit the head on cached frozen features, then train the backbone
    (unset: the task's own; classify yes, multilabel no)."""
    feature_views: int = 2
    """`linear` strategy: cached views per training image (1 = as is, 2 = also mirrored)."""
    detector_size: str = "n"
    """`detect`: detector size, `n`, `s` or `m` (pyramid width and head depth; see `ewaste models`)."""
    box_classifier: bool = True
    """`detect`: train a second-stage classifier that re-scores each detected box from a crop of
    the image (see `detect.box_classifier`)."""
    repeats: int = 1
    """`detect`: train this many seeds (seed, seed+1, ...) and report mean and standard deviation."""
    fusion: str = "fast"
    """`fuse`: `fast` (002: the streams' extractors and aggregators frozen, their classifier layers
    and the fusion layer trained) or `slow` (the streams' higher layers trainable too)."""
    rgb_run: str | None = None
    """`fuse`: a finished classify run on the RGB images to use as the RGB stream (trained first,
    in the run, when not given)."""
    xray_run: str | None = None
    """`fuse`: a finished classify run on the X-ray images to use as the X-ray stream."""
    precision: str = "auto"
    """`auto` (bf16 where the hardware supports it), `bf16` or `32`."""
    devices: int = 1
    """Processes (CPU) or GPUs; more than one trains with DDP."""
    num_nodes: int = 1
    """Machines taking part (Lightning's `num_nodes`); each runs `--devices` processes, and more
    than one process in all trains with DDP. Launch one command per node with `torchrun` (README)."""
    accelerator: str = "auto"
    """`auto`, `cpu` or `gpu`."""
    resume: bool = False
    """Continue an interrupted run in `out` from its last checkpoint."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Task-specific settings."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UserError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.precision not in ("auto", "bf16", "32"):
            raise UserError(f"unknown precision {self.precision!r}; choose auto, bf16 or 32")
        if len(self.split) != 3 or abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) <= 0:
            raise UserError(f"split {self.split} must be three positive fractions that sum to 1")
        if self.lr_schedule not in ("onecycle", "step"):
            raise UserError(f"unknown lr_schedule {self.lr_schedule!r}; choose onecycle or step")
        if not 0.0 < self.lr_step_gamma <= 1.0:
            raise UserError(f"lr_step_gamma must be in (0, 1], got {self.lr_step_gamma}")
        for name in ("head_epochs", "devices", "num_nodes", "feature_views", "repeats", "lr_step_epochs"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("batch_size", "max_epochs", "lr"):
            if getattr(self, name) < 0:
                raise UserError(
                    f"{name} must be positive (or 0 for the task's own), got {getattr(self, name)}"
                )
        self.head_settings()  # unknown head or aggregate, bad iteration count: fail here
        if self.head != "linear" and self.task not in ("classify", "fuse"):
            raise UserError(f"--head {self.head} is for the classify task, not {self.task!r}")
        if self.fusion not in ("fast", "slow"):
            raise UserError(f"unknown fusion {self.fusion!r}; choose fast or slow")
        if self.image_size < 0 or 0 < self.image_size < 32:
            raise UserError(
                f"image_size {self.image_size} is too small; use 32 or more (or 0 for the default)"
            )
        self.split = tuple(float(x) for x in self.split)  # type: ignore[assignment]

    def head_settings(self) -> HeadSettings:
        """The classifier head these settings ask for."""
        return HeadSettings(self.head, self.icam_iterations, self.aggregate, self.icam_crop_fraction)

    def with_task_defaults(self, defaults: dict[str, Any]) -> TrainConfig:
        """A copy whose `auto`/0 fields take the task's `defaults` (other fields stay as given)."""
        unknown = set(defaults) - set(TASK_DEFAULT_FIELDS)
        if unknown:
            raise ValueError(f"task defaults for fields that have no auto value: {sorted(unknown)}")
        chosen = {name: value for name, value in defaults.items() if _is_auto(getattr(self, name))}
        return dataclasses.replace(self, **chosen)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for YAML."""
        values = dataclasses.asdict(self)
        values["split"] = list(self.split)
        return values


def _is_auto(value: Any) -> bool:
    """Whether a `TASK_DEFAULT_FIELDS` value asks for the task's default (False is a choice)."""
    return value is None or (not isinstance(value, bool) and value in ("auto", 0, 0.0))


def config_fields() -> list[dataclasses.Field[Any]]:
    """The fields of `TrainConfig`, for building command-line options."""
    return list(dataclasses.fields(TrainConfig))


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML recipe into a dict of `TrainConfig` fields, rejecting unknown keys."""
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text; save the config as a UTF-8 YAML file") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: not valid YAML; fix the syntax") from exc
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of settings at the top level")
    known = {f.name for f in config_fields()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{path}: unknown setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}")
    for setting in config_fields():
        if setting.name in values:
            values[setting.name] = _check_type(path, setting.name, setting.default, values[setting.name])
    if "split" in values:
        values["split"] = tuple(values["split"])
    return values


def _check_type(path: Path, name: str, default: Any, value: Any) -> Any:
    """A setting from a file must have its field's kind: a word where a number goes is an error.

    Returns the value, with numbers YAML 1.1 reads as text (`1e-3`) turned into floats.
    """
    if isinstance(default, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):  # not a number: reported below
            value = float(value)
    if isinstance(default, bool):
        wanted, ok = "true or false", isinstance(value, bool)
    elif isinstance(default, int):
        wanted, ok = "a whole number", isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        wanted, ok = "a number", isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, str):
        wanted, ok = "text", isinstance(value, str)
    elif isinstance(default, tuple):
        wanted, ok = "a list", isinstance(value, list | tuple)
    else:
        return value  # optional settings (None by default) are checked by TrainConfig itself
    if not ok:
        raise UserError(f"{path}: setting {name!r} must be {wanted}, got {value!r}")
    return value
