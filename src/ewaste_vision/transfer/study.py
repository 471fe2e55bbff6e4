"""003's Table 1 on your own data: does a network started from your own earlier run beat one
started from ImageNet, or from nothing?

`run_transfer_study(source, target, out)` trains every row on one split of the target data:
the source run's backbone from scratch, started from the source run (`--init`, linear and
finetune), and ImageNet-initialised backbones (EfficientNet-Lite0, ResNet-18, Inception-v3). Each
row is an ordinary run directory under `out/rows/`, trained in a process of its own so that its
peak memory is its own. The study writes `transfer.md` (accuracy with its 95% Wilson interval,
the majority baseline, time and peak memory per row), `transfer.json` and `learning_curves.png`.

A row whose ImageNet weights cannot be had (offline, no cache) is not trained: it would be a
randomly initialised network, not the row the table names; the report says so. An interrupted
study continues where it stopped: finished rows are read back, a half-trained one resumes (so a
study with other settings needs another folder).
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ewaste_vision.errors import RunError, UserError, require_path
from ewaste_vision.io.atomic import write_json, write_text
from ewaste_vision.runs import MODEL_FILE, read_model_file, resolve_run_dir

STARTS = ("scratch", "source", "imagenet")


@dataclass(frozen=True)
class StudyRow:
    """One line of the table: a backbone, where its weights start, and which layers train."""

    backbone: str
    """Registry backbone; empty means the source run's own."""
    start: str
    """`scratch` (random weights), `source` (the source run's backbone) or `imagenet`."""
    strategy: str
    """`linear`, `finetune` or `full` (see `ewaste train --strategy`)."""

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"unknown start {self.start!r}; one of {STARTS}")

    def slug(self, source_backbone: str) -> str:
        """Folder name of the row's run."""
        return f"{self.backbone or source_backbone}-{self.start}-{self.strategy}"


def default_rows(
    imagenet_backbones: tuple[str, ...] = ("efficientnet_lite0", "resnet18", "inception_v3"),
) -> list[StudyRow]:
    """003's comparison: the network from scratch, transferred from the source run (with only
    the head training, as 003 does, and with the last stage too), and ImageNet backbones (head
    only, the toolkit's default for classification)."""
    return [
        StudyRow("", "scratch", "full"),
        StudyRow("", "source", "linear"),
        StudyRow("", "source", "finetune"),
        *(StudyRow(name, "imagenet", "linear") for name in imagenet_backbones),
    ]


@dataclass(frozen=True)
class StudySettings:
    """Training settings shared by every row (003: step schedule, dropout 0.4)."""

    max_epochs: int = 30
    """Epochs of rows that train backbone layers (early stopping may end them sooner)."""
    head_epochs: int = 100
    """Epochs of head training on cached features (`linear` rows)."""
    patience: int = 20
    """Epochs without a better validation loss before a row stops: one step of 003's schedule, so
    a from-scratch row, whose validation loss is noisy while the rate is high, is not stopped (and
    left with its first epoch's weights) before the rate first drops."""
    image_size: int = 0
    """Input size; 0: the source run's for its backbone's rows, each backbone's own for the rest."""
    lr: float = 1e-3
    """Head learning rate (backbone layers train at 0.3 of it)."""
    scratch_lr: float = 5e-3
    """Head learning rate of the from-scratch row: random weights need larger steps."""
    lr_schedule: str = "step"
    """003 halves the rate every 20 epochs (`step`); `onecycle` is the toolkit's own."""
    lr_step_epochs: int = 20
    lr_step_gamma: float = 0.5
    dropout: float = 0.4
    """003's dropout before the linear layer."""
    batch_size: int = 32
    seed: int = 0


@dataclass
class RowResult:
    """What one row measured (or why it was not trained)."""

    row: StudyRow
    backbone: str
    run_dir: str
    weights: str = ""
    """Where the row's backbone weights came from."""
    skipped: str = ""
    """Why the row was not trained; empty when it was."""
    accuracy: float | None = None
    accuracy_ci95: list[float] = field(default_factory=list)
    n_test: int = 0
    n_correct: int = 0
    macro_f1: float | None = None
    baseline_accuracy: float | None = None
    seconds: float | None = None
    """Wall time from the start of training to a finished, evaluated run."""
    peak_rss_mib: float | None = None
    """Peak resident memory of the row's process (includes the Python, torch and data loaded)."""
    epochs: int = 0
    test_split_digest: str = ""
    """Hash of the row's test files: every row must have the same."""


def run_transfer_study(
    source: Path | str,
    target: Path | str,
    out: Path | str,
    rows: list[StudyRow] | None = None,
    settings: StudySettings | None = None,
    isolate: bool = True,
) -> tuple[list[RowResult], Path]:
    """Train every row on the target data and write the comparison.

    Args:
        source: a finished run (any task) whose backbone the `source` rows start from.
        target: the target dataset (class folders, optionally with its own train/val/test).
        out: folder for the rows' runs and the report.
        rows: the table's rows (default `default_rows()`).
        settings: training settings shared by the rows.
        isolate: train each row in a fresh process, so that its peak memory is its own; False
            trains in this process (tests), and peak memory is then the process's high-water
            mark since the row started (Linux) or not measured.

    Returns:
        The rows' results, in order, and the report's path.
    """
    source_dir = resolve_run_dir(source)
    _, source_meta = read_model_file(source_dir / MODEL_FILE)
    require_path(target, "target dataset folder")
    settings = settings or StudySettings()
    rows = rows or default_rows()
    out_dir = Path(out)
    (out_dir / "rows").mkdir(parents=True, exist_ok=True)
    results: list[RowResult] = []
    for row in rows:
        backbone = row.backbone or source_meta.backbone
        if row.start == "source" and backbone != source_meta.backbone:
            raise UserError(
                f"row {row.slug(source_meta.backbone)}: a run of {backbone} cannot start from the "
                f"{source_meta.backbone} run {source_dir}; leave its backbone empty"
            )
        result_file = out_dir / "rows" / f"{row.slug(source_meta.backbone)}.json"
        if result_file.is_file():
            results.append(_read_result(result_file))
            continue
        job = (row, backbone, str(source_dir), source_meta.image_size, str(target), str(out_dir), settings)
        if isolate:
            # One process per row (spawn: no state inherited from this one), so each row's peak
            # memory and time are its own.
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                result = pool.submit(train_row, *job).result()
        else:
            result = train_row(*job, in_process=True)
        write_json(result_file, _result_dict(result))
        results.append(result)
    _check_one_test_split(results)
    report = write_study_report(out_dir, source_dir, source_meta.backbone, results, settings)
    return results, report


def train_row(
    row: StudyRow,
    backbone: str,
    source_dir: str,
    source_image_size: int,
    target: str,
    out_dir: str,
    settings: StudySettings,
    in_process: bool = False,
) -> RowResult:
    """Train and evaluate one row as an ordinary `ewaste train` run; see `run_transfer_study`."""
    from ewaste_vision.config import TrainConfig
    from ewaste_vision.models.registry import create_backbone, get_backbone_spec
    from ewaste_vision.training.trainer import train

    run_dir = Path(out_dir) / "rows" / row.slug(backbone)
    result = RowResult(row, backbone, str(run_dir))
    if row.start == "imagenet":
        _, weights = create_backbone(backbone, pretrained=True)
        if weights == "untrained":
            result.skipped = (
                "untrained: no offline ImageNet weights on this machine (online, timm downloads them; "
                "or pass --weights FILE to `ewaste train`)"
            )
            return result
        result.weights = weights
    else:
        result.weights = f"run {source_dir}" if row.start == "source" else "untrained (random)"
    own_backbone = row.start != "imagenet"
    image_size = settings.image_size or (
        source_image_size if own_backbone else get_backbone_spec(backbone).input_size
    )
    config = TrainConfig(
        data=target,
        out=str(run_dir),
        task="classify",
        backbone=backbone,
        pretrained=row.start == "imagenet",
        init=source_dir if row.start == "source" else None,
        strategy=row.strategy,
        image_size=image_size,
        batch_size=settings.batch_size,
        max_epochs=settings.max_epochs,
        head_epochs=settings.head_epochs,
        patience=settings.patience,
        lr=settings.scratch_lr if row.start == "scratch" else settings.lr,
        lr_schedule=settings.lr_schedule,
        lr_step_epochs=settings.lr_step_epochs,
        lr_step_gamma=settings.lr_step_gamma,
        dropout=settings.dropout,
        seed=settings.seed,
        resume=(run_dir / "config.yaml").is_file(),
    )
    high_water = _reset_peak_memory() if in_process else True
    started = time.perf_counter()
    trained = train(config, progress=False)
    result.seconds = round(time.perf_counter() - started, 1)
    if trained is None:
        raise RunError(f"{run_dir}: the row did not finish training")
    result.peak_rss_mib = _peak_memory_mib() if high_water else None
    metrics = trained.metrics
    result.accuracy = float(metrics["accuracy"])
    result.accuracy_ci95 = [float(v) for v in metrics["accuracy_ci95"]]
    result.n_test, result.n_correct = int(metrics["n_test"]), int(metrics["n_correct"])
    result.macro_f1 = float(metrics["macro_f1"])
    result.baseline_accuracy = float(metrics["baseline_accuracy"])
    result.epochs = _epochs_logged(run_dir)
    result.test_split_digest = _test_split_digest(run_dir)
    return result


def _reset_peak_memory() -> bool:
    """Reset this process's resident-memory high-water mark (Linux); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_memory_mib() -> float:
    """Peak resident memory of this process: VmHWM (which `_reset_peak_memory` resets) on Linux,
    else `getrusage`'s maximum."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _epochs_logged(run_dir: Path) -> int:
    from ewaste_vision.report.plots import read_epoch_metrics

    _, per_epoch = read_epoch_metrics(run_dir / "logs" / "metrics.csv")
    return len({epoch for values in per_epoch.values() for epoch in values})


def _test_split_digest(run_dir: Path) -> str:
    from ewaste_vision.data.split_file import read_split_file

    tests = sorted(str(r.path) for r in read_split_file(run_dir / "split.csv") if r.split == "test")
    return hashlib.sha256("\n".join(tests).encode()).hexdigest()[:16]


def _check_one_test_split(results: list[RowResult]) -> None:
    """Rows compare only on one test set; a different one is a bug, not a result."""
    digests = {r.test_split_digest for r in results if not r.skipped}
    if len(digests) > 1:
        raise RunError("the rows were tested on different splits; delete the study folder and run it again")


def _result_dict(result: RowResult) -> dict[str, Any]:
    return asdict(result)


def _read_result(path: Path) -> RowResult:
    values = json.loads(path.read_text(encoding="utf-8"))
    values["row"] = StudyRow(**values["row"])
    return RowResult(**values)


def row_title(row: StudyRow, backbone: str) -> str:
    """How the table names a row."""
    start = {"scratch": "from scratch", "source": "from the source run", "imagenet": "ImageNet"}[row.start]
    return f"{backbone}, {start}, {row.strategy}"


def write_study_report(
    out_dir: Path, source_dir: Path, source_backbone: str, results: list[RowResult], settings: StudySettings
) -> Path:
    """Write `transfer.md`, `transfer.json` and `learning_curves.png` into `out_dir`."""
    source_metrics_file = source_dir / "metrics.json"
    source_metrics = (
        json.loads(source_metrics_file.read_text(encoding="utf-8")) if source_metrics_file.is_file() else {}
    )
    plot = plot_study_curves(out_dir / "learning_curves.png", results, source_backbone)
    lines = [
        "# Transfer study (003, Table 1)",
        "",
        f"Source run: `{source_dir}` ({source_backbone})"
        + (f", test accuracy {_accuracy_cell(source_metrics)}" if "accuracy" in source_metrics else "")
        + (
            f", majority baseline {100 * source_metrics['baseline_accuracy']:.1f}%"
            if "baseline_accuracy" in source_metrics
            else ""
        )
        + ".",
        "",
        "Every row trained on the same target split and was tested on the same test images. "
        f"Settings: {settings.lr_schedule} schedule (x{settings.lr_step_gamma} every "
        f"{settings.lr_step_epochs} epochs), dropout {settings.dropout}, up to {settings.max_epochs} epochs "
        f"({settings.head_epochs} for a head on cached features), patience {settings.patience}, "
        f"seed {settings.seed}.",
        "",
        "| row | weights from | test accuracy | 95% CI (Wilson) | majority baseline | macro-F1 | time (s) "
        "| peak memory (MiB) | epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        title = row_title(result.row, result.backbone)
        if result.skipped:
            lines.append(f"| {title} | {result.skipped} | - | - | - | - | - | - | - |")
            continue
        low, high = result.accuracy_ci95
        memory = f"{result.peak_rss_mib:.0f}" if result.peak_rss_mib is not None else "not measured"
        lines.append(
            f"| {title} | {result.weights} "
            f"| {100 * (result.accuracy or 0):.1f}% ({result.n_correct}/{result.n_test}) "
            f"| {100 * low:.1f}%-{100 * high:.1f}% | {100 * (result.baseline_accuracy or 0):.1f}% "
            f"| {result.macro_f1:.3f} | {result.seconds:.0f} | {memory} | {result.epochs} |"
        )
    lines += [
        "",
        "Time: from the start of training to a finished, evaluated run, on this machine, in one process "
        "per row; peak memory: that process's peak resident set (Python, torch and the decoded images "
        "included). The test set is small: read the interval, not the point.",
        "",
        f"![validation accuracy per epoch]({plot.name})",
        "",
    ]
    report = write_text(out_dir / "transfer.md", "\n".join(lines))
    write_json(
        out_dir / "transfer.json",
        {"source": str(source_dir), "settings": asdict(settings), "rows": [_result_dict(r) for r in results]},
    )
    return report


def _accuracy_cell(metrics: dict[str, Any]) -> str:
    low, high = metrics.get("accuracy_ci95", [0.0, 1.0])
    accuracy, n_test = 100 * metrics["accuracy"], metrics.get("n_test")
    return f"{accuracy:.1f}% (95% CI {100 * low:.1f}%-{100 * high:.1f}%, n = {n_test})"


def plot_study_curves(path: Path, results: list[RowResult], source_backbone: str) -> Path:
    """Validation accuracy per epoch of every trained row, in one figure."""
    from matplotlib.figure import Figure

    from ewaste_vision.report.plots import read_epoch_metrics, save_figure

    figure = Figure(figsize=(7.5, 4.0), layout="constrained")
    axes = figure.add_subplot()
    for result in results:
        log = Path(result.run_dir) / "logs" / "metrics.csv"
        if result.skipped or not log.is_file():
            continue
        _, per_epoch = read_epoch_metrics(log)
        accuracy = per_epoch.get("val_acc", {})
        if accuracy:
            epochs = sorted(accuracy)
            axes.plot(
                [e + 1 for e in epochs],
                [accuracy[e] for e in epochs],
                label=row_title(result.row, result.backbone),
            )
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy")
    axes.set_ylim(0, 1.02)
    if axes.lines:
        axes.legend(fontsize=7)
    return save_figure(figure, path)
