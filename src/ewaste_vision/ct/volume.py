"""CT volumes in: one reader for NRRD, NIfTI, DICOM series, multi-page TIFF and .npy.

Every reader hands back the same `Volume`: voxels as float32 `[D, H, W]` in the file's own
intensity units and the voxel spacing in mm along those same three axes. SimpleITK returns
arrays as `[z, y, x]` but spacing as `(x, y, z)`; the spacing is reversed here, once, so nothing
downstream has to remember which order it is in.

NRRD, NIfTI, MetaImage and DICOM go through SimpleITK (DICOM series sorted by GDCM from slice
positions, so the slice spacing is the real one). Multi-page TIFF goes through tifffile and .npy
through numpy (`allow_pickle=False`): neither format records voxel spacing reliably, so it comes
from a sidecar `NAME.json` holding `{"spacing": [d, h, w]}`, or is taken as 1 mm with a warning.

Orientation (the direction cosines of NRRD, NIfTI and DICOM) is not applied: voxels stay in file
order. A renderer randomises the projection angle anyway, and resampling would blur fine parts.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tokenize
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ewaste_vision.data.images import is_image_file
from ewaste_vision.errors import DataError

logger = logging.getLogger(__name__)

MAX_VOXELS = 1 << 30
"""Largest volume read (about 1 G voxels, 4 GiB as float32); bigger ones are refused up front."""

SITK_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", ".dcm")
"""File endings read by SimpleITK."""

STACK_SUFFIXES = (".tif", ".tiff", ".npy")
"""File endings read by tifffile or numpy, whose spacing comes from a sidecar JSON."""

VOLUME_SUFFIXES = SITK_SUFFIXES + STACK_SUFFIXES
"""Every file ending `read_volume` accepts (a DICOM series is a folder instead)."""

NPY_READ_ERRORS = (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError)
"""What `np.load` raises for a damaged .npy (a mangled header reaches numpy's tokenizer)."""

COMPANION_SUFFIXES = (".raw", ".zraw", ".raw.gz", ".img", ".json")
"""Files that belong to a volume beside them (detached NRRD/MetaImage data, sidecars)."""


@dataclass(frozen=True)
class Volume:
    """One CT volume.

    Attributes:
        voxels: `[D, H, W]` float32, in the file's intensity units (CT: Hounsfield-like, air
            about -1000).
        spacing: mm per voxel along (D, H, W); all finite and > 0.
        source: the file (or DICOM folder) it was read from.
        spacing_known: False when the file gave no spacing and 1 mm was assumed.
    """

    voxels: np.ndarray
    spacing: tuple[float, float, float]
    source: Path
    spacing_known: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        if self.voxels.ndim != 3:
            raise ValueError(f"voxels must be [D, H, W], got shape {self.voxels.shape}")
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"spacing must be three finite values > 0, got {self.spacing}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxels along (D, H, W)."""
        depth, height, width = self.voxels.shape
        return depth, height, width

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size along (D, H, W) in mm."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class VolumeEntry:
    """One volume found in a per-class folder tree.

    Attributes:
        path: the volume file, or the folder of a DICOM series.
        class_name: the class folder it sits in.
        device: the file stem (or DICOM folder name); files of one class sharing a stem count as
            scans of one device and are kept together by device-grouped splits.
    """

    path: Path
    class_name: str
    device: str


def volume_suffix(path: Path) -> str:
    """The volume file ending of `path` (`.nii.gz` counts as one), lower case; '' if none."""
    name = path.name.lower()
    for suffix in sorted(VOLUME_SUFFIXES + COMPANION_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ""


def volume_stem(path: Path) -> str:
    """`path`'s name without its volume ending (`scan.nii.gz` -> `scan`)."""
    suffix = volume_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.stem


def read_volume(path: Path | str, max_voxels: int = MAX_VOXELS) -> Volume:
    """Read one CT volume, honouring its voxel spacing.

    Args:
        path: a `.nrrd`/`.nhdr`, `.nii`/`.nii.gz`, `.mha`/`.mhd`, `.dcm` (one multi-frame file),
            a folder of DICOM slices, a multi-page `.tif`/`.tiff` or a `.npy` holding `[D, H, W]`.
        max_voxels: refuse volumes with more voxels than this, before reading them.

    Returns:
        The volume, voxels float32 `[D, H, W]`, spacing in mm along the same axes.

    Raises:
        DataError: the file is missing, unreadable or corrupt, not 3-D, empty (a zero-sized axis
            or one constant value), holds NaN or infinite values, too large, or its spacing is
            zero, negative or NaN. The message is one line naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: volume not found; check the path")
    if path.is_dir():
        voxels, spacing, known = _read_dicom_series(path, max_voxels)
    else:
        suffix = volume_suffix(path)
        if suffix in SITK_SUFFIXES:
            voxels, spacing, known = _read_sitk_file(path, max_voxels)
        elif suffix in (".tif", ".tiff"):
            voxels, spacing, known = _read_tiff_stack(path, max_voxels)
        elif suffix == ".npy":
            voxels, spacing, known = _read_npy(path, max_voxels)
        else:
            accepted = ", ".join(VOLUME_SUFFIXES)
            raise DataError(f"{path}: not a volume file; use one of {accepted} or a folder of DICOM slices")
    _check_voxels(path, voxels)
    _check_spacing(path, spacing)
    if not known:
        logger.warning("%s: no voxel spacing recorded; assuming 1 mm (add %s.json)", path, volume_stem(path))
    return Volume(voxels=voxels, spacing=spacing, source=path, spacing_known=known)


def find_volumes(root: Path | str) -> tuple[list[VolumeEntry], list[tuple[Path, str]]]:
    """List the volumes under `root/CLASS/...` without reading them.

    A folder holding DICOM files (`.dcm`, or files GDCM recognises) is one volume named after the
    folder. Other subfolders of a class folder are searched too. Hidden files are ignored, and so
    are companion files (detached `.raw` data, sidecar `.json`) that sit beside a volume.

    Args:
        root: the folder holding one folder per class.

    Returns:
        (entries sorted by class and device, skipped (path, reason) for files left out).

    Raises:
        DataError: `root` is missing, not a folder, or holds no class folder with a volume.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: volume folder not found; check the path")
    if not root.is_dir():
        raise DataError(f"{root}: is a file; pass the folder holding one folder per class of volumes")
    entries: list[VolumeEntry] = []
    skipped: list[tuple[Path, str]] = []
    for item in sorted(root.iterdir()):
        if item.name.startswith("."):
            continue
        if item.is_file():
            skipped.append((item, "not inside a class folder"))
            continue
        found = _volumes_in_class(item, skipped)
        if not found:
            skipped.append((item, "class folder without volumes"))
        entries += found
    if not entries:
        raise DataError(
            f"{root}: no volumes found; expected ROOT/<class>/<volume> with one of "
            f"{', '.join(VOLUME_SUFFIXES)} or a folder of DICOM slices"
        )
    entries.sort(key=lambda e: (e.class_name, e.device, str(e.path)))
    return entries, skipped


def is_dicom_folder(folder: Path) -> bool:
    """True when `folder` holds DICOM slices (a `.dcm` file, or files GDCM reads as a series)."""
    try:
        names = [n for n in os.listdir(folder) if not n.startswith(".")]
    except OSError:
        return False
    if any(n.lower().endswith(".dcm") for n in names):
        return True
    # Scanners often write slices without an extension: look for the DICM mark of DICOM files
    # (after a 128-byte preamble) in the first file, rather than asking GDCM to open every file.
    candidates = sorted(n for n in names if (folder / n).is_file())
    if not candidates or any(volume_suffix(Path(n)) or is_image_file(Path(n)) for n in candidates):
        return False
    try:
        with open(folder / candidates[0], "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _volumes_in_class(class_dir: Path, skipped: list[tuple[Path, str]]) -> list[VolumeEntry]:
    found: list[VolumeEntry] = []
    if is_dicom_folder(class_dir):
        skipped.append(
            (class_dir, "DICOM slices directly in a class folder; put each scan in its own folder")
        )
        return found
    for folder, subfolders, files in os.walk(class_dir):
        here = Path(folder)
        subfolders.sort()
        kept = []
        for name in subfolders:
            if name.startswith("."):
                continue
            if is_dicom_folder(here / name):
                found.append(VolumeEntry(here / name, class_dir.name, name))
            else:
                kept.append(name)
        subfolders[:] = kept
        stems = {volume_stem(here / n) for n in files if volume_suffix(Path(n)) in VOLUME_SUFFIXES}
        for name in sorted(files):
            path = here / name
            suffix = volume_suffix(path)
            if name.startswith("."):
                continue
            if suffix in VOLUME_SUFFIXES:
                found.append(VolumeEntry(path, class_dir.name, volume_stem(path)))
            elif suffix in COMPANION_SUFFIXES and (suffix != ".json" or volume_stem(path) in stems):
                continue
            else:
                skipped.append((path, "not a volume file"))
    return found


def _read_sitk_file(path: Path, max_voxels: int) -> tuple[np.ndarray, tuple[float, float, float], bool]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(
            f"{path}: cannot read volume ({_itk_reason(exc)}); replace or re-export the file"
        ) from exc
    size = reader.GetSize()  # (x, y, z[, t])
    spacing_xyz = reader.GetSpacing()
    if reader.GetNumberOfComponents() != 1:
        raise DataError(f"{path}: has {reader.GetNumberOfComponents()} values per voxel; a CT volume has one")
    # NIfTI files often carry a trailing time axis of length 1.
    while len(size) > 3 and size[-1] == 1:
        size, spacing_xyz = size[:-1], spacing_xyz[:-1]
    if len(size) != 3:
        raise DataError(f"{path}: is {len(size)}-D (size {size}); a CT volume is 3-D")
    _check_size(path, tuple(reversed(size)), max_voxels)
    _check_spacing(path, _dhw(spacing_xyz))
    if volume_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_pixdim(path)
    elif volume_suffix(path) in (".nrrd", ".nhdr"):
        _check_nrrd_spacing(path)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(
            f"{path}: cannot read volume ({_itk_reason(exc)}); replace or re-export the file"
        ) from exc
    voxels = sitk.GetArrayFromImage(image).reshape(tuple(reversed(size)))
    return voxels.astype(np.float32, copy=False), _dhw(spacing_xyz), True


def _read_dicom_series(folder: Path, max_voxels: int) -> tuple[np.ndarray, tuple[float, float, float], bool]:
    import SimpleITK as sitk

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(f"{folder}: no DICOM series in this folder; put the .dcm slices of one scan in it")
    if len(series) > 1:
        raise DataError(f"{folder}: holds {len(series)} DICOM series; put each series in its own folder")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    if len(files) == 1:
        return _read_sitk_file(Path(files[0]), max_voxels)
    info = sitk.ImageFileReader()
    info.SetFileName(files[0])
    try:
        info.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{files[0]}: cannot read DICOM slice ({_itk_reason(exc)}); replace it") from exc
    width, height = info.GetSize()[:2]
    _check_size(folder, (len(files), height, width), max_voxels)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(f"{folder}: cannot read DICOM series ({_itk_reason(exc)}); check the slices") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{folder}: DICOM series is not a 3-D single-value volume")
    voxels = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    return voxels, _dhw(image.GetSpacing()), True


def _read_tiff_stack(path: Path, max_voxels: int) -> tuple[np.ndarray, tuple[float, float, float], bool]:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if "S" in series.axes:
                raise DataError(f"{path}: colour TIFF ({series.axes}); a CT volume has one value per voxel")
            shape = tuple(n for n in series.shape if n != 1) if len(series.shape) > 3 else series.shape
            if len(shape) != 3:
                raise DataError(f"{path}: TIFF holds shape {series.shape}; a CT volume is [D, H, W] (3-D)")
            _check_size(path, shape, max_voxels)
            voxels = series.asarray().reshape(shape)
    # zlib.error: damaged deflate data; RuntimeError: imagecodecs' decoders, when installed.
    except (OSError, ValueError, IndexError, zlib.error, RuntimeError, tifffile.TiffFileError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot read TIFF ({exc}); replace or re-export the file") from exc
    spacing, known = _sidecar_spacing(path)
    return _as_float32(path, voxels), spacing, known


def _read_npy(path: Path, max_voxels: int) -> tuple[np.ndarray, tuple[float, float, float], bool]:
    try:
        # mmap first: the shape is checked before anything is read into memory.
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except NPY_READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read .npy ({exc}); save it with numpy.save, no pickles") from exc
    if not isinstance(mapped, np.ndarray):
        raise DataError(f"{path}: holds no array; save one [D, H, W] array with numpy.save")
    if mapped.ndim != 3:
        raise DataError(f"{path}: holds shape {mapped.shape}; a CT volume is [D, H, W] (3-D)")
    _check_size(path, mapped.shape, max_voxels)
    spacing, known = _sidecar_spacing(path)
    return _as_float32(path, np.asarray(mapped)), spacing, known


def _sidecar_spacing(path: Path) -> tuple[tuple[float, float, float], bool]:
    """Spacing from `NAME.json` beside `path`, or (1, 1, 1) and False when there is none."""
    sidecar = path.with_name(volume_stem(path) + ".json")
    if not sidecar.is_file():
        return (1.0, 1.0, 1.0), False
    try:
        data: Any = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{sidecar}: cannot read sidecar JSON ({exc}); fix or delete it") from exc
    values = data.get("spacing") if isinstance(data, dict) else None
    if (
        not isinstance(values, list)
        or len(values) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    ):
        raise DataError(f'{sidecar}: key "spacing" must be three numbers [d, h, w] in mm, got {values!r}')
    spacing = (float(values[0]), float(values[1]), float(values[2]))
    _check_spacing(sidecar, spacing)
    return spacing, True


def _check_nifti_pixdim(path: Path) -> None:
    """Refuse zero or NaN pixdim, which ITK's NIfTI reader silently turns into 1 mm."""
    import nibabel

    try:
        with nibabel.openers.ImageOpener(str(path)) as handle:
            raw = handle.read(540)
        nifti2 = raw[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")  # sizeof_hdr 540
        header_class = nibabel.Nifti2Header if nifti2 else nibabel.Nifti1Header
        header = header_class.from_fileobj(io.BytesIO(raw), check=False)
        pixdim = [float(v) for v in header["pixdim"][1:4]]
    except Exception as exc:  # nibabel raises many types for a broken header; all mean the same here
        raise DataError(f"{path}: cannot read NIfTI header ({exc}); replace or re-export the file") from exc
    if not all(math.isfinite(v) and v != 0 for v in pixdim):
        raise DataError(
            f"{path}: voxel spacing (pixdim) is {pixdim}; it must be non-zero mm, re-export the scan"
        )


def _check_nrrd_spacing(path: Path) -> None:
    """Refuse NaN spacings, which ITK's NRRD reader silently turns into 1 mm."""
    import nrrd

    try:
        header = nrrd.read_header(str(path))
    except Exception as exc:  # pynrrd raises its own error type and ValueError; both mean unreadable
        raise DataError(f"{path}: cannot read NRRD header ({exc}); replace or re-export the file") from exc
    values = header.get("spacings")
    if values is None and header.get("space directions") is not None:
        # pynrrd gives a row of NaN for a non-spatial axis ("none"); those carry no spacing.
        directions = np.asarray(header["space directions"], dtype=float)
        rows = [row for row in directions if row.size and not np.isnan(row).all()]
        values = [float(np.linalg.norm(row)) for row in rows]
    if values is not None and not all(math.isfinite(float(v)) and float(v) != 0 for v in values):
        shown = ", ".join(f"{float(v):g}" for v in values)
        raise DataError(f"{path}: voxel spacing ({shown}) must be finite and non-zero mm; fix the header")


def _as_float32(path: Path, voxels: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(voxels.dtype, np.number) or voxels.dtype == np.bool_) or np.iscomplexobj(voxels):
        raise DataError(f"{path}: voxels of type {voxels.dtype}; a CT volume holds real numbers")
    return voxels.astype(np.float32, copy=False)


def _check_size(path: Path, shape: tuple[int, ...], max_voxels: int) -> None:
    if any(n == 0 for n in shape):
        raise DataError(f"{path}: empty volume (shape {tuple(shape)}); replace or remove the file")
    voxels = math.prod(shape)
    if voxels > max_voxels:
        raise DataError(
            f"{path}: {voxels / 1e9:.2f} G voxels (shape {tuple(shape)}) is over the limit of "
            f"{max_voxels / 1e9:.2f} G; crop or downsample the scan first"
        )


def _check_voxels(path: Path, voxels: np.ndarray) -> None:
    if voxels.ndim != 3:
        raise DataError(f"{path}: holds shape {voxels.shape}; a CT volume is [D, H, W] (3-D)")
    if voxels.size == 0:
        raise DataError(f"{path}: empty volume (shape {voxels.shape}); replace or remove the file")
    if min(voxels.shape) < 2:
        hint = "; pass the folder holding all slices of the scan" if volume_suffix(path) == ".dcm" else ""
        raise DataError(
            f"{path}: a single slice (shape {voxels.shape}), not a volume; a CT volume needs at least "
            f"2 voxels along each axis{hint}"
        )
    low, high = float(np.min(voxels)), float(np.max(voxels))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise DataError(f"{path}: holds NaN or infinite voxel values; replace or re-export the file")
    if low == high:
        raise DataError(f"{path}: empty volume (every voxel is {low:g}); replace or remove the file")


def _check_spacing(path: Path, spacing: tuple[float, ...]) -> None:
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        shown = ", ".join(f"{s:g}" for s in spacing)
        raise DataError(f"{path}: voxel spacing ({shown}) must be three finite values > 0 mm; fix the header")


def _dhw(spacing_xyz: tuple[float, ...]) -> tuple[float, float, float]:
    """SimpleITK's (x, y, z) spacing as (D, H, W), matching GetArrayFromImage's [z, y, x]."""
    x, y, z = (float(s) for s in spacing_xyz[:3])
    return z, y, x


def _itk_reason(exc: RuntimeError) -> str:
    """The last meaningful line of an ITK exception, without the C++ file path noise."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("/", "Exception thrown", "sitk::ERROR"))]
    text = (useful or lines or ["unknown error"])[-1]
    return text.removeprefix("ITK ERROR: ")[:200]
