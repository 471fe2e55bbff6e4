"""Errors meant for the person at the keyboard.

A `UserError` carries one line that says what is wrong, which file (and line), and what to do.
The CLI prints it without a traceback and exits non-zero; library callers can catch it by type.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input that they can fix; the message is shown as is."""

    exit_code = 2


class DataError(UserError, ValueError):
    """A dataset, label file or image cannot be used."""


class RunError(UserError, ValueError):
    """A run directory or checkpoint is missing, corrupt, or of another task."""


class UnreadableImageError(DataError):
    """One image file cannot be decoded; datasets skip and count these instead of failing."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: cannot read image ({reason}); replace or remove the file")


def require_path(path: Path | str, what: str = "path") -> Path:
    """Return `path` as a Path, or raise a `UserError` saying it does not exist."""
    resolved = Path(path)
    if not resolved.exists():
        raise UserError(f"{resolved}: {what} not found; check the spelling or create it first")
    return resolved
