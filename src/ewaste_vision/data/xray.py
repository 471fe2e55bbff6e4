"""Dual-energy X-ray transmission scans: reading high/low-energy pairs and turning them into model input.

A dual-energy line detector gives two 16-bit images of the same board, one per energy. Three ways
of storing them are read (names are case-insensitive):

(a) one `NAME.npy` holding an array [2, H, W], high energy first, of uint16 (or uint8, int, float);
    read with `numpy.load(allow_pickle=False)`, so a file can never run code;
(b) one `NAME.tif` / `NAME.tiff` with two pages (high, low), or one page of shape [2, H, W] or
    [H, W, 2];
(c) two files side by side, `NAME.high.EXT` and `NAME.low.EXT`, EXT one of png, tif, tiff, npy
    (each a single [H, W] image; 16-bit PNGs are read through Pillow's `I;16` / `I` modes).

Raw values stay in detector units (uint16, or float32 for float files) until `preprocess_xray`;
nothing passes through 8 bits. An 8-bit file is scaled up by 257 (so 255 -> 65535) with an
`EightBitXrayWarning`, because its lost precision cannot come back and the user should know.

Preprocessing follows Weber et al. (seed 001): offset/gain correction, normalisation to the bright
(air) level, natural logarithm, then three channels (high, low, their mean). The log transmission
ln(T) is <= 0; the model gets the attenuation -ln(T) divided by a fixed constant,
`MAX_ATTENUATION` = ln(65536), the attenuation at which a 16-bit detector reads a single count.
Transmission is clipped to [2**-16, 1] first, so every channel lies in [0, 1]: 0 is air, 1 is
"nothing got through". The constant is the same for every image, never a per-image min-max, so a
given material and thickness always gives the same input value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile
from numpy.typing import ArrayLike
from PIL import Image

from ewaste_vision.data.images import MAX_IMAGE_PIXELS
from ewaste_vision.errors import DataError, UnreadableImageError

if TYPE_CHECKING:
    # Only the tensor helpers need torch, and import it when called: an ONNX-only install reads
    # scans with `load_xray_array`.
    import torch

ENERGIES = ("high", "low")
"""Energy channels in storage order, and the tags of side-by-side files (`NAME.high.png`)."""

XRAY_CHANNELS = ("high", "low", "mean")
"""Model input channels, in order, as in the seed paper's YOLOv5 input."""

PAIR_EXTENSIONS = (".png", ".tif", ".tiff", ".npy")
"""Extensions of one-energy files in a side-by-side pair, in the order a partner is looked for."""

STACKED_EXTENSIONS = (".npy", ".tif", ".tiff")
"""Extensions of files that can hold both energies."""

MIN_TRANSMISSION = 2.0**-16
"""Transmission is clipped here before the logarithm: one count of a 16-bit detector, never log 0."""

MAX_ATTENUATION = -math.log(MIN_TRANSMISSION)
"""-ln(MIN_TRANSMISSION) = ln(65536) ~ 11.09: the attenuation mapped to input value 1."""

DEFAULT_AIR_PERCENTILE = 99.5
"""Percentile of each energy image taken as its air level when none is given."""


class EightBitXrayWarning(UserWarning):
    """An 8-bit file was given where a 16-bit X-ray energy image was expected, and scaled up."""


@dataclass(frozen=True)
class XraySample:
    """One dual-energy scan on disk.

    Attributes:
        name: NAME shared by the files (the stem without the energy tag).
        files: one file holding both energies, or (high-energy file, low-energy file).
    """

    name: str
    files: tuple[Path] | tuple[Path, Path]

    @property
    def is_pair(self) -> bool:
        """True when the energies are in two side-by-side files."""
        return len(self.files) == 2


# --------------------------------------------------------------------------------------------
# Finding and reading files


def energy_tag(path: Path) -> tuple[str, str] | None:
    """(NAME, "high" or "low") for `NAME.high.png`-style names, None for other names."""
    if path.suffix.lower() not in PAIR_EXTENSIONS:
        return None
    name, _, tag = path.stem.rpartition(".")
    tag = tag.lower()
    return (name, tag) if name and tag in ENERGIES else None


def find_xray_samples(folder: Path | str, recursive: bool = True) -> list[XraySample]:
    """Find the X-ray scans in `folder`: side-by-side pairs grouped by NAME, and stacked files.

    Every `.npy`, `.tif` and `.tiff` without an energy tag counts as a stacked scan; its content is
    only checked when it is read. Untagged PNGs are left out (a PNG holds one energy).

    Args:
        folder: where to look.
        recursive: also look in subfolders; pairs are grouped within one folder.

    Returns:
        The samples, sorted by folder and name.

    Raises:
        DataError: `folder` is missing, a pair file has no partner, or two files claim the same
            NAME and energy.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; pass the folder that holds the X-ray scans")
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    pairs: dict[tuple[Path, str], dict[str, Path]] = {}
    samples: dict[tuple[Path, str], XraySample] = {}
    for path in files:
        if path.name.startswith("."):
            continue
        tagged = energy_tag(path)
        if tagged is None:
            if path.suffix.lower() in STACKED_EXTENSIONS:
                _claim(samples, (path.parent, path.stem), XraySample(path.stem, (path,)), path)
            continue
        name, tag = tagged
        group = pairs.setdefault((path.parent, name), {})
        if tag in group:
            raise DataError(
                f"{path}: {group[tag].name} is also the {tag}-energy image of {name!r}; keep one of them"
            )
        group[tag] = path
    for (parent, name), group in pairs.items():
        if len(group) < 2:
            raise DataError(_missing_partner_message(next(iter(group.values()))))
        _claim(samples, (parent, name), XraySample(name, (group["high"], group["low"])), group["high"])
    return [samples[key] for key in sorted(samples, key=lambda key: (str(key[0]), key[1]))]


def _claim(
    samples: dict[tuple[Path, str], XraySample], key: tuple[Path, str], sample: XraySample, path: Path
) -> None:
    if key in samples:
        other = samples[key].files[0]
        raise DataError(f"{path}: {other.name} is also a scan named {key[1]!r}; rename or remove one")
    samples[key] = sample


def _missing_partner_message(path: Path) -> str:
    tagged = energy_tag(path)
    assert tagged is not None  # only called for tagged files
    name, tag = tagged
    other = ENERGIES[1 - ENERGIES.index(tag)]
    options = "|".join(ext.lstrip(".") for ext in PAIR_EXTENSIONS)
    return (
        f"{path}: no {other}-energy partner ({name}.{other}.{options}) beside it; "
        f"add it, or store both energies in one [2, H, W] .npy or .tif"
    )


def read_xray(source: Path | str | XraySample) -> np.ndarray:
    """Read a dual-energy scan as raw detector values [2, H, W] (high, low).

    Args:
        source: a stacked file, either file of a side-by-side pair (the partner is found), or a
            sample from `find_xray_samples`.

    Returns:
        uint16 for integer files (8-bit ones scaled by 257), float32 for float files.

    Raises:
        DataError: unreadable file, wrong shape or dtype, or a missing partner file; the message
            names the file.
    """
    if isinstance(source, XraySample):
        files: Sequence[Path] = source.files
    else:
        path = Path(source)
        tagged = energy_tag(path)
        files = (path,) if tagged is None else _pair_files(path, tagged)
    if len(files) == 1:
        return _read_stacked(files[0])
    high, low = [_read_single(path) for path in files]
    if high.shape != low.shape:
        raise DataError(
            f"{files[1]}: size {low.shape[1]}x{low.shape[0]} differs from {files[0].name} "
            f"({high.shape[1]}x{high.shape[0]}); both energies must come from the same scan"
        )
    return np.stack(_common_dtype(high, low))  # [2, H, W]


def _pair_files(path: Path, tagged: tuple[str, str]) -> tuple[Path, Path]:
    name, tag = tagged
    other = ENERGIES[1 - ENERGIES.index(tag)]
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the spelling")
    # The partner usually shares the format and the tag's case, so those names are tried first;
    # only then is the folder listed, for any case of tag and extension.
    given_tag = path.stem.rpartition(".")[2]
    tags = dict.fromkeys([other.upper() if given_tag.isupper() else other, other])
    suffixes = dict.fromkeys([path.suffix, *PAIR_EXTENSIONS])
    candidates = [path.with_name(f"{name}.{t}{suffix}") for t in tags for suffix in suffixes]
    partner = next((candidate for candidate in candidates if candidate.is_file()), None)
    if partner is None:
        partner = next(
            (p for p in sorted(path.parent.iterdir()) if energy_tag(p) == (name, other) and p.is_file()),
            None,
        )
    if partner is None:
        raise DataError(_missing_partner_message(path))
    return (path, partner) if tag == "high" else (partner, path)


def _common_dtype(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if high.dtype == low.dtype:
        return high, low
    return high.astype(np.float32), low.astype(np.float32)


def _read_stacked(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".png":
        raise DataError(f"{path}: a PNG holds one energy; name the pair NAME.high.png and NAME.low.png")
    if suffix not in STACKED_EXTENSIONS:
        raise DataError(f"{path}: not an X-ray file; use .npy or .tif with both energies, or a pair")
    array = _squeeze_to(_read_npy(path) if suffix == ".npy" else _read_tiff(path), 3)
    if array.ndim == 3 and array.shape[0] != 2 and array.shape[-1] == 2:
        array = np.moveaxis(array, -1, 0)  # [H, W, 2] -> [2, H, W]
    if array.ndim != 3 or array.shape[0] != 2 or min(array.shape[1:]) < 1:
        raise DataError(
            f"{path}: shape {list(array.shape)} is not [2, H, W] or [H, W, 2]; "
            "store the high- and low-energy images together (high first)"
        )
    return _to_detector_units(np.ascontiguousarray(array), path)


def _read_single(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".png":
        array = _read_png(path)
    elif suffix == ".npy":
        array = _read_npy(path)
    else:
        array = _read_tiff(path)
    array = _squeeze_to(array, 2)
    if array.ndim != 2:
        raise DataError(
            f"{path}: shape {list(array.shape)} is not one [H, W] image; "
            "a side-by-side file holds a single energy"
        )
    return _to_detector_units(array, path)


def _squeeze_to(array: np.ndarray, ndim: int) -> np.ndarray:
    """Drop leading, then trailing, size-1 axes while `array` has more than `ndim` axes."""
    while array.ndim > ndim and array.shape[0] == 1:
        array = array[0]
    while array.ndim > ndim and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UnreadableImageError(path, _first_line(exc)) from exc
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: holds several arrays, not one; save a single [2, H, W] array with np.save")
    return array


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            array = tif.asarray()
            # Two pages written one by one (not as one [2, H, W] series) come back as two series.
            if array.ndim == 2 and len(tif.pages) == 2:
                array = np.stack([page.asarray() for page in tif.pages])
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise UnreadableImageError(path, _first_line(exc)) from exc
    return np.asarray(array)


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise UnreadableImageError(path, f"{image.width}x{image.height} pixels is too large")
            image.load()
            if image.mode.startswith("I;16") or image.mode in {"I", "F"}:
                return np.asarray(image)
            # An 8-bit file: gray it here, `_to_detector_units` scales it up and warns.
            return np.asarray(image.convert("L"))
    except UnreadableImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(path, _first_line(exc)) from exc


def _to_detector_units(array: np.ndarray, path: Path) -> np.ndarray:
    """uint16 or float32 detector values; 8-bit data scaled to the 16-bit range."""
    if array.dtype == np.uint8:
        warnings.warn(
            f"{path}: 8-bit image where 16-bit X-ray data was expected; scaled by 257 to the 16-bit "
            "range, but its lost precision cannot come back: export 16-bit PNG, TIFF or .npy",
            EightBitXrayWarning,
            stacklevel=2,
        )
        return array.astype(np.uint16) * np.uint16(257)
    if np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.bool_):
        if array.size and (int(array.min()) < 0 or int(array.max()) > 65535):
            raise DataError(
                f"{path}: values {int(array.min())}..{int(array.max())} are outside 0..65535; "
                "store detector counts as uint16"
            )
        return array.astype(np.uint16)
    if np.issubdtype(array.dtype, np.floating):
        as_float = array.astype(np.float32)
        if not np.isfinite(as_float).all():
            raise DataError(f"{path}: holds NaN or infinite values; replace them before reading")
        return as_float
    raise DataError(f"{path}: pixel type {array.dtype} is not a number type; store uint16 or float")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Preprocessing


def preprocess_xray(
    raw: np.ndarray,
    *,
    dark: ArrayLike = 0.0,
    flat: ArrayLike | None = None,
    air: ArrayLike | None = None,
    air_percentile: float = DEFAULT_AIR_PERCENTILE,
    max_attenuation: float = MAX_ATTENUATION,
) -> np.ndarray:
    """Turn raw dual-energy values into the model's three channels (high, low, mean) in [0, 1].

    Transmission T = (raw - dark) / (bright - dark), where bright is the flat field if given,
    else the air level; T is clipped to [MIN_TRANSMISSION, 1] and each channel is
    -ln(T) / max_attenuation. The mean channel is the mean of the two attenuation channels.
    Offset or gain references may be scalars, one value per energy ([2]), or arrays that broadcast
    to [2, H, W] (e.g. [H, W], or [2, 1, W] for a line detector).

    Args:
        raw: [2, H, W] detector values (high, low), e.g. from `read_xray`.
        dark: offset (dark-current) reference, in the same units as `raw`.
        flat: gain (bright-field, air-only) reference scan; replaces the air level.
        air: air level per energy in raw units; None estimates it as the `air_percentile`
            percentile of each offset-corrected energy image (needs some air in the scan).
        air_percentile: percentile used when neither `flat` nor `air` is given.
        max_attenuation: attenuation mapped to 1; keep the default so all scans share one scale.

    Returns:
        float32 array [3, H, W] in [0, 1]; 0 is air.

    Raises:
        ValueError: wrong shapes, both `flat` and `air`, or a bright level not above the offset.
    """
    values = np.asarray(raw)
    if values.ndim != 3 or values.shape[0] != 2:
        raise ValueError(f"raw must be [2, H, W] (high, low), got shape {list(values.shape)}")
    if flat is not None and air is not None:
        raise ValueError("give a flat-field scan or an air level, not both")
    if max_attenuation <= 0:
        raise ValueError(f"max_attenuation must be positive, got {max_attenuation}")
    # float64 keeps a 1-count step of a 65535 reading (1.5e-5 relative) well clear of rounding.
    offset = _per_energy(dark, values.shape, "dark")
    corrected = values.astype(np.float64) - offset  # [2, H, W]
    if flat is not None:
        bright = _per_energy(flat, values.shape, "flat") - offset
    elif air is not None:
        bright = _per_energy(air, values.shape, "air") - offset
    else:
        levels = [np.percentile(channel, air_percentile) for channel in corrected]
        bright = np.asarray(levels, dtype=np.float64).reshape(2, 1, 1)
    if not np.all(bright > 0):
        raise ValueError(
            "the bright (air or flat) level must be above the offset in every energy; "
            "pass air= or flat= for scans without air"
        )
    transmission = np.clip(corrected / bright, MIN_TRANSMISSION, 1.0)
    # 0.0 - x rather than -x: air becomes +0.0, not -0.0.
    attenuation = (0.0 - np.log(transmission)) / max_attenuation  # [2, H, W]
    channels = np.concatenate([attenuation, attenuation.mean(axis=0, keepdims=True)])  # [3, H, W]
    return np.clip(channels, 0.0, 1.0).astype(np.float32)


def _per_energy(value: ArrayLike, shape: tuple[int, ...], name: str) -> np.ndarray:
    """`value` as float64 broadcastable to `shape`; a length-2 vector means one value per energy."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape == (2,):
        array = array.reshape(2, 1, 1)
    try:
        return np.broadcast_to(array, shape)
    except ValueError:
        raise ValueError(
            f"{name} has shape {list(array.shape)}, which does not broadcast to {list(shape)}"
        ) from None


# --------------------------------------------------------------------------------------------
# Model input and previews


def xray_to_tensor(channels: np.ndarray, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """The preprocessed channels as a float32 tensor [3, H, W], optionally resized, without Pillow.

    Args:
        channels: [3, H, W] float array from `preprocess_xray`.
        size: output (height, width), or one side for a square; None keeps the size. Resizing is
            antialiased bilinear on the float values, so no precision is lost on the way.

    Returns:
        A tensor in [0, 1] in the repository's image convention (CHW, float).
    """
    import torch
    import torch.nn.functional as F

    array = np.asarray(channels)
    if array.ndim != 3 or array.shape[0] != len(XRAY_CHANNELS) or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"channels must be a float [3, H, W] array, got {array.dtype} {list(array.shape)}")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))  # [3, H, W]
    if size is None:
        return tensor
    target = (size, size) if isinstance(size, int) else tuple(size)
    resized = F.interpolate(tensor[None], size=target, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].clamp_(0.0, 1.0)  # [3, h, w]


def load_xray_array(
    source: Path | str | XraySample,
    *,
    dark: ArrayLike = 0.0,
    flat: ArrayLike | None = None,
    air: ArrayLike | None = None,
) -> np.ndarray:
    """Read and preprocess one scan at full resolution: float32 [3, H, W] in [0, 1], numpy only.

    Args:
        source: as for `read_xray`.
        dark: as for `preprocess_xray`.
        flat: as for `preprocess_xray`.
        air: as for `preprocess_xray`.
    """
    return preprocess_xray(read_xray(source), dark=dark, flat=flat, air=air)


def load_xray_tensor(
    source: Path | str | XraySample,
    size: int | tuple[int, int] | None = None,
    *,
    dark: ArrayLike = 0.0,
    flat: ArrayLike | None = None,
    air: ArrayLike | None = None,
) -> torch.Tensor:
    """Read, preprocess and convert one scan: `load_xray_array` as a [3, H, W] tensor.

    Args:
        source: as for `read_xray`.
        size: as for `xray_to_tensor`.
        dark: as for `preprocess_xray`.
        flat: as for `preprocess_xray`.
        air: as for `preprocess_xray`.
    """
    return xray_to_tensor(load_xray_array(source, dark=dark, flat=flat, air=air), size)


def xray_preview(channels: np.ndarray | torch.Tensor, display_max: float = 0.3) -> Image.Image:
    """An 8-bit RGB picture of preprocessed channels, for people only (never model input).

    Channels map to red, green and blue in model order (high, low, mean), inverted so air is white
    and dense parts dark, like a radiograph. Materials that absorb much more at low than at high
    energy (copper, tin, ferrite) come out magenta; light plastics stay nearly grey.

    Args:
        channels: [3, H, W] values from `preprocess_xray` or `xray_to_tensor`.
        display_max: channel value shown as black; 0.3 (transmission ~ 3.6 %) suits boards.

    Returns:
        An RGB image.
    """
    # A tensor is recognised by its methods, so that previews of numpy arrays never import torch.
    array = channels.detach().cpu().numpy() if hasattr(channels, "detach") else np.asarray(channels)
    if array.ndim != 3 or array.shape[0] != len(XRAY_CHANNELS):
        raise ValueError(f"channels must be [3, H, W], got shape {list(array.shape)}")
    if display_max <= 0:
        raise ValueError(f"display_max must be positive, got {display_max}")
    shade = 1.0 - np.clip(array.astype(np.float32) / display_max, 0.0, 1.0)  # [3, H, W]
    return Image.fromarray(np.round(np.moveaxis(shade, 0, -1) * 255).astype(np.uint8), mode="RGB")
