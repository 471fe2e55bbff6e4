"""Where a job's images are scored: in this process (`local`, the default) or on a Ray cluster
(`ray`, `pip install -e ".[ray]"`).

Both engines return the model's raw outputs per image (class probabilities, or boxes), and the
commands (`predict`, `value`, `evaluate`) turn those into rows, values and metrics with the same
code, so an engine changes where the work runs and never what it answers.
"""

from __future__ import annotations

ENGINES = ("local", "ray")
"""Names accepted by `--engine`."""


def check_engine(name: str) -> str:
    """`name` if it is an engine, else a one-line `UserError` listing them."""
    from ewaste_vision.errors import UserError

    if name not in ENGINES:
        raise UserError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    return name
