"""Where a job's images are scored: in this process (`local`, the default) or on a Ray cluster
(`ray`, `pip install -e ".[ray]"`).

Both engines return the model's raw outputs per image (class probabilities, or boxes), and the
commands (`predict`, `value`, `evaluate`) turn those into rows, values and metrics with the same
code, so an engine changes where the work runs and never what it answers.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("local", "ray")
"""Names accepted by `--engine`."""


def check_engine(name: str) -> str:
    """`name` if it is an engine, else a one-line `UserError` listing them."""
    from ewaste_vision.errors import UserError

    if name not in ENGINES:
        raise UserError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    return name


@dataclass(frozen=True)
class EngineSettings:
    """Where and how wide a job runs: what `--engine`, `--address`, `--workers` and
    `--gpus-per-worker` say."""

    name: str = "local"
    """`local` (this process) or `ray`."""
    address: str | None = None
    """Ray only: the cluster's address; None starts a Ray instance on this machine for the job."""
    workers: int = 1
    """Ray only: model workers, each holding one copy of the model."""
    gpus_per_worker: float | None = None
    """Ray only: GPUs each worker asks for; None means one where the cluster has GPUs, else none.
    A fraction (0.5) puts several workers on one GPU."""

    def __post_init__(self) -> None:
        from ewaste_vision.errors import UserError

        check_engine(self.name)
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise UserError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")


def as_engine(engine: str | EngineSettings) -> EngineSettings:
    """An engine given by name (`"ray"`) or in full, as settings."""
    return engine if isinstance(engine, EngineSettings) else EngineSettings(engine)
