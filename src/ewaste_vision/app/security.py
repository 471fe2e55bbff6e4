"""Safe defaults of the server: where it listens, who may use it, and what its messages reveal."""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path

from ewaste_vision.errors import UserError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

INTERNAL_ERROR = "the server could not process this request; the details are in the server log"
"""What a user sees of an error that is not theirs to fix (the traceback goes to the log only)."""

_DIRECTORIES = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?[/\\](?:[^\s/\\:'\"<>|]+[/\\])+")
"""The folder part of an absolute path (`/tmp/x/y/` of `/tmp/x/y/board.jpg`)."""

log = logging.getLogger(__name__)

Credentials = tuple[str, str]


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, auth: list[Credentials] | None) -> str | None:
    """The warning to print before listening on `host`, or None when the setup is safe.

    Args:
        host: the address the server binds.
        auth: the accepted (user, password) pairs; None or empty when anyone may use the app.

    Returns:
        One line when another machine could reach an app that asks for no password.
    """
    if is_loopback(host) or auth:
        return None
    return (
        f"warning: serving on {host} without a password: anyone who can reach this machine can use "
        "the app and its models; add --auth-file FILE (lines of user:password) or bind 127.0.0.1"
    )


def parse_credentials(text: str, source: str = "--auth") -> Credentials:
    """`user:password` -> (user, password).

    Raises:
        UserError: when the user or the password is empty or the colon is missing.
    """
    user, colon, password = text.strip().partition(":")
    if not colon or not user or not password:
        raise UserError(f"{source}: expected user:password with neither part empty")
    return user, password


def read_auth_file(path: Path | str) -> list[Credentials]:
    """Read `user:password` lines (blank lines and `#` comments ignored).

    Raises:
        UserError: the file is missing, unreadable, holds a malformed line, or no credentials.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot read the auth file ({type(exc).__name__}); check the path") from exc
    pairs = [
        parse_credentials(line, f"{file} line {number}")
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not pairs:
        raise UserError(f"{file}: no user:password lines; add one per user")
    return pairs


def strip_paths(text: str) -> str:
    """`text` with the folders of absolute paths removed, so only file names remain."""
    return _DIRECTORIES.sub("", text)


def user_message(exc: BaseException) -> str:
    """One line safe to show in the page: the user error's text without folders, or a generic line.

    Errors that are not `UserError`s are logged with their traceback and replaced by
    `INTERNAL_ERROR`: their text may hold server paths or code.
    """
    if isinstance(exc, UserError):
        lines = str(exc).strip().splitlines()
        return strip_paths(lines[0]) if lines else type(exc).__name__
    log.error("request failed", exc_info=exc)
    return INTERNAL_ERROR
