"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A crash or Ctrl-C mid-write leaves the previous version (or nothing), never a truncated file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(target: Path | str, writer: Callable[[IO[Any]], object], binary: bool = False) -> Path:
    """Call `writer(file)` on a temporary file and move it over `target` when it returns."""
    with (
        atomic_path(target) as tmp,
        open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle,
    ):
        writer(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(target)


def write_text(target: Path | str, text: str) -> Path:
    """Write `text` to `target` atomically."""
    return write_atomic(target, lambda f: f.write(text))


def write_json(target: Path | str, data: Any) -> Path:
    """Write `data` as indented JSON to `target` atomically."""
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_yaml(target: Path | str, data: Any) -> Path:
    """Write `data` as YAML to `target` atomically."""
    return write_text(target, yaml.safe_dump(data, sort_keys=False))


def _json_default(value: Any) -> Any:
    # numpy scalars and Paths show up in metrics; JSON has no type for either.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
