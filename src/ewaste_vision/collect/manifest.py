"""`DIR/manifest.csv`: one row per URL tried, so a crawl can be audited, credited and resumed.

Rows are appended and synced one at a time: a crawl that dies keeps every row written before. A
row cut short by a crash or a full disk has no newline; the next run cuts it off before appending
(and a reader skips it), so the file never holds a half row in the middle.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO

from ewaste_vision.errors import UserError

MANIFEST_NAME = "manifest.csv"

ACCEPTED_DIR = "_accepted"
"""Where `ewaste data clean --apply` moves accepted files (`DIR/_accepted/CLASS/FILE`); a later
crawl counts a kept file found there as still kept."""

KEPT = "ok"
"""Status of a row whose image was written."""

FINAL_STATUSES = frozenset(
    {KEPT, "duplicate", "too_small", "not_image", "robots_disallowed", "bad_url", "too_large"}
)
"""Statuses a later run does not retry (HTTP 4xx too); timeouts and dead hosts are retried."""


@dataclass(frozen=True)
class ManifestRow:
    """What happened to one URL.

    Attributes:
        class_name: the class it was fetched for.
        file: the written image, relative to the crawl folder ("" when none was written).
        source_url: the image URL.
        page_url: the page showing it, when the results page said.
        licence: as the results page gave it, else "unknown": check it before publishing.
        query: the keyword that found it, or "url list".
        sha256: of the written file.
        width: of the written image, pixels.
        height: of the written image, pixels.
        status: `ok`, or why not (`duplicate`, `too_small`, `not_image`, `robots_disallowed`,
            `http_404`, `timeout`, `host_abandoned`, ...).
        detail: a few words more on the status.
    """

    class_name: str
    file: str
    source_url: str
    page_url: str
    licence: str
    query: str
    sha256: str
    width: int
    height: int
    status: str
    detail: str = ""

    @property
    def final(self) -> bool:
        """True when a later run should not try this URL again."""
        return self.status in FINAL_STATUSES or (
            self.status.startswith("http_4") and self.status != "http_429"
        )


COLUMNS = tuple(field.name for field in fields(ManifestRow))


def read_manifest(path: Path) -> list[ManifestRow]:
    """All complete rows of a manifest; [] when it does not exist yet.

    Raises:
        UserError: the file is not UTF-8 (saved by a spreadsheet in another encoding, say).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8, or move it away to start afresh"
        ) from None
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row cut short by a crash
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        if None in record or any(record.get(column) is None for column in COLUMNS):
            continue
        try:
            values = {**record, "width": int(record["width"] or 0), "height": int(record["height"] or 0)}
            rows.append(ManifestRow(**values))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return rows


class ManifestWriter:
    """Appends rows to a manifest, durably, one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_partial_last_line(path)
        new = not path.exists() or path.stat().st_size == 0
        # Held open for the whole crawl; closed by `close` / the context manager.
        self._handle: IO[str] = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self._writer = csv.DictWriter(self._handle, fieldnames=COLUMNS, lineterminator="\n")
        if new:
            self._writer.writeheader()
            self._sync()

    def append(self, row: ManifestRow) -> None:
        """Write one row and sync it to disk."""
        self._writer.writerow(asdict(row))
        self._sync()

    def extend(self, rows: Iterable[ManifestRow]) -> None:
        """Write several rows."""
        for row in rows:
            self.append(row)

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())


def _cut_partial_last_line(path: Path) -> None:
    if not path.exists():
        return
    with open(path, "rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
        handle.truncate(data.rfind(b"\n") + 1)
