"""Uploaded files -> image files in a private folder, checked before anything decodes them.

Uploads arrive as files (never through Gradio's image component, which would turn 16-bit scans into
8 bits) and are copied under safe names into the request's folder, so side-by-side X-ray pairs
(`NAME.high.png`, `NAME.low.png`) sit together. Zips are unpacked with bounds on their member count
and total size, and members that would land outside the folder are refused. Nothing is unpickled
or run: images are read by Pillow, tifffile or `numpy.load(allow_pickle=False)` later.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ewaste_vision.app.limits import ServeLimits
from ewaste_vision.app.security import strip_paths
from ewaste_vision.data.images import IMAGE_EXTENSIONS
from ewaste_vision.errors import UserError

ARRAY_EXTENSIONS = frozenset({".npy"})
"""Dual-energy X-ray scans stored as arrays."""

ACCEPTED_EXTENSIONS = IMAGE_EXTENSIONS | ARRAY_EXTENSIONS
"""What a request may hold besides zips."""

UPLOAD_EXTENSIONS = (*sorted(ACCEPTED_EXTENSIONS), ".zip")
"""File types offered in the page's upload boxes."""

_CHUNK = 1024 * 1024


class UploadError(UserError):
    """A request's uploads cannot be used as a whole (too many files, an oversize zip)."""


@dataclass
class Uploads:
    """The usable images of one request and what was left out."""

    folder: Path
    """Where the copies are, under safe names."""
    files: list[Path] = field(default_factory=list)
    """The copies that passed the checks, in upload order."""
    names: dict[Path, str] = field(default_factory=dict)
    """{copy: name shown to the user}; zip members read `archive.zip/inner/name.jpg`."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """[{"file": name, "reason": one line}] for uploads left out."""

    def skip(self, name: str, reason: str) -> None:
        """Record that `name` was left out, with a reason free of server paths."""
        self.skipped.append({"file": name, "reason": strip_paths(reason)})


def safe_name(name: str) -> str:
    """A file name reduced to letters, digits, `.`, `_` and `-` (never empty, never hidden)."""
    cleaned = re.sub(r"[^\w.-]+", "_", name).strip("._")
    return cleaned or "file"


def prepare_uploads(paths: Sequence[str | Path] | None, folder: Path, limits: ServeLimits) -> Uploads:
    """Copy uploads into `folder` and unpack zips, keeping the images that pass `limits`.

    Args:
        paths: the files Gradio stored (their base names are the names the user gave them).
        folder: a fresh folder of this request.
        limits: counts, sizes and pixels allowed.

    Returns:
        The accepted copies, their display names and the files left out with reasons.

    Raises:
        UploadError: no files, more than `limits.max_files` images, or a zip over its bounds.
    """
    if not paths:
        raise UploadError("no files uploaded; choose one or more images, or a zip of them")
    uploads = Uploads(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, upload in enumerate(paths or []):
        source = Path(upload)
        name = safe_name(source.name)
        suffix = source.suffix.lower()
        if suffix == ".zip":
            _unpack_zip(source, folder / f"zip{index}-{safe_name(source.stem)}", name, uploads, limits)
        elif suffix not in ACCEPTED_EXTENSIONS:
            uploads.skip(name, f"not an image file ({suffix or 'no extension'}); upload photos or scans")
        elif source.stat().st_size > limits.max_file_bytes:
            uploads.skip(name, f"larger than {limits.max_file_bytes // (1024 * 1024)} MB")
        else:
            _accept(uploads, shutil.copyfile(source, _unique(folder / name)), name, limits)
        if len(uploads.files) > limits.max_files:
            raise UploadError(f"more than {limits.max_files} images in one request; send fewer at a time")
    return uploads


def pixel_count(path: Path) -> int | None:
    """Width x height of an image (of one energy for X-ray files), read from its header only.

    Returns:
        The count, or None when the header cannot be read (the loader then says why).
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return int(np.prod(sorted(shape)[-2:])) if len(shape) >= 2 else None
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tiff:
                page = tiff.pages[0]
                return int(page.imagelength) * int(page.imagewidth)  # type: ignore[union-attr]
        with Image.open(path) as image:
            return int(image.width) * int(image.height)
    except (OSError, ValueError, SyntaxError, IndexError, Image.DecompressionBombError):
        return None


def _accept(uploads: Uploads, copy: Path | str, name: str, limits: ServeLimits) -> None:
    path = Path(copy)
    pixels = pixel_count(path)
    if pixels is not None and pixels > limits.max_pixels:
        path.unlink()
        uploads.skip(
            name, f"{pixels / 1e6:.1f} megapixels is over this server's limit of {limits.max_pixels} pixels"
        )
        return
    uploads.files.append(path)
    uploads.names[path] = name


def _unpack_zip(archive_path: Path, target: Path, name: str, uploads: Uploads, limits: ServeLimits) -> None:
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as exc:
        uploads.skip(name, f"not a readable zip ({type(exc).__name__})")
        return
    with archive:
        members = [member for member in archive.infolist() if not member.is_dir()]
        if len(members) > limits.max_zip_members:
            raise UploadError(
                f"{name}: {len(members)} files; a zip may hold at most {limits.max_zip_members}"
            )
        budget = limits.max_zip_bytes
        for member in members:
            inner = PurePosixPath(member.filename.replace("\\", "/"))
            shown = f"{name}/{inner}"
            if inner.is_absolute() or ".." in inner.parts or ":" in inner.parts[0]:
                uploads.skip(shown, "path points outside the zip; left out")
            elif stat.S_ISLNK(member.external_attr >> 16):
                uploads.skip(shown, "symbolic link; left out")
            elif inner.suffix.lower() not in ACCEPTED_EXTENSIONS or inner.name.startswith("."):
                uploads.skip(shown, "not an image file; left out")
            elif member.file_size > limits.max_file_bytes:
                uploads.skip(shown, f"larger than {limits.max_file_bytes // (1024 * 1024)} MB")
            elif member.file_size > budget:
                megabytes = limits.max_zip_bytes // (1024 * 1024)
                raise UploadError(f"{name}: unpacked images exceed {megabytes} MB")
            else:
                copy = _unique(target.joinpath(*[safe_name(part) for part in inner.parts]))
                try:
                    budget -= _extract_bounded(archive, member, copy, member.file_size)
                except (zipfile.BadZipFile, RuntimeError, zlib.error, EOFError) as exc:
                    copy.unlink(missing_ok=True)
                    uploads.skip(shown, f"cannot be unpacked ({type(exc).__name__}); left out")
                    continue
                _accept(uploads, copy, shown, limits)


def _extract_bounded(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, limit: int) -> int:
    """Copy one member, stopping if it unpacks to more than its header said (a lying zip bomb)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(member) as source, target.open("wb") as sink:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise UploadError(f"{member.filename}: unpacks to more than its zip header says; refused")
            sink.write(chunk)
    return written


def _unique(path: Path) -> Path:
    """`path`, or `n-NAME` beside it when taken (a prefix keeps X-ray energy tags intact)."""
    candidate, number = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{number}-{path.name}")
        number += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    return candidate
