"""Finding copies and near-copies of one photo, so they can be kept in one split.

Each image gets a fingerprint: the md5 of its bytes (exact copies) and a 64-bit perceptual hash
(resized, recompressed or lightly edited copies). Images whose hashes differ in at most a few
bits are put in one group; groups are closed under "is a copy of" with union-find.

Datasets built by augmentation also hold flipped and rotated copies. In invariant mode the
fingerprint keeps the hashes of all eight flips and quarter turns, and two images are compared
under the best of them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image

from ewaste_vision.data.images import load_rgb
from ewaste_vision.errors import UnreadableImageError
from ewaste_vision.io.atomic import write_json

DIHEDRAL = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)
"""The eight flips and quarter turns of a square; None is the image as it is."""

_HASH_INPUT_SIZE = 32
"""Side of the grayscale thumbnail `imagehash.phash` works on (hash size 8 x high-frequency factor 4)."""

_CACHE_VERSION = 1


@dataclass(frozen=True)
class Fingerprint:
    """What duplicate finding needs to know about one image file.

    Attributes:
        md5: hex digest of the file bytes; equal digests mean identical files.
        phash: 64-bit perceptual hash as an int. In invariant mode, the smallest of `variants`,
            so that it is the same for every flip and quarter turn of one image.
        variants: invariant mode only: the perceptual hashes of the image under each transform
            of `DIHEDRAL`, in that order; empty otherwise.
    """

    md5: str
    phash: int
    variants: tuple[int, ...] = ()


@dataclass(frozen=True)
class DuplicateGroup:
    """Two or more images that are copies of one photo.

    Attributes:
        group: the group id given by `group_duplicates`.
        members: indexes of the images, ascending.
        exact: True when all members are byte-identical files.
    """

    group: int
    members: tuple[int, ...]
    exact: bool


def fingerprint_file(path: Path, invariant: bool = False) -> Fingerprint:
    """Fingerprint one image file.

    Raises:
        UnreadableImageError: the file cannot be read or decoded.
    """
    try:
        md5 = hashlib.md5(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise UnreadableImageError(path, exc.strerror or type(exc).__name__) from exc
    # Thumbnail once; the transforms of a 32x32 thumbnail equal the thumbnails of the transforms.
    thumbnail = (
        load_rgb(path).convert("L").resize((_HASH_INPUT_SIZE, _HASH_INPUT_SIZE), Image.Resampling.LANCZOS)
    )
    if not invariant:
        return Fingerprint(md5=md5, phash=_phash_int(thumbnail))
    variants = tuple(
        _phash_int(thumbnail if transform is None else thumbnail.transpose(transform))
        for transform in DIHEDRAL
    )
    return Fingerprint(md5=md5, phash=min(variants), variants=variants)


def image_fingerprints(
    paths: Sequence[Path], progress: bool = False, invariant: bool = False
) -> list[Fingerprint | None]:
    """Fingerprint each image; None for files that cannot be read (see `unreadable_reason`).

    Args:
        paths: image files.
        progress: print a running count to stderr.
        invariant: make the comparison blind to flips and quarter turns (see `Fingerprint`).
    """
    fingerprints: list[Fingerprint | None] = []
    for index, path in enumerate(paths, start=1):
        try:
            fingerprints.append(fingerprint_file(path, invariant=invariant))
        except UnreadableImageError:
            fingerprints.append(None)
        if progress and (index % 50 == 0 or index == len(paths)):
            print(f"\rfingerprinting images {index}/{len(paths)}", end="", file=sys.stderr, flush=True)
    if progress and paths:
        print(file=sys.stderr)
    return fingerprints


def unreadable_reason(path: Path) -> str:
    """Why `path` cannot be fingerprinted, or "" when it can be read after all."""
    try:
        fingerprint_file(path)
    except UnreadableImageError as exc:
        return exc.reason
    return ""


def fingerprints_cached(
    paths: Sequence[Path], cache_file: Path | None, progress: bool = False, invariant: bool = False
) -> list[Fingerprint | None]:
    """`image_fingerprints`, reusing results stored in `cache_file` for unchanged files.

    A file counts as unchanged when its resolved path, size and modification time match.
    A missing, corrupt or other-mode cache is rebuilt; the cache is rewritten atomically with
    the entries for `paths` only.
    """
    if cache_file is None:
        return image_fingerprints(paths, progress=progress, invariant=invariant)
    cached = _read_cache(Path(cache_file), invariant)
    keys = [_cache_key(path) for path in paths]
    results: list[Fingerprint | None] = [None] * len(paths)
    missing: list[int] = []
    for index, key in enumerate(keys):
        entry = cached.get(key[0])
        try:
            if not (isinstance(entry, dict) and entry["size"] == key[1] and entry["mtime_ns"] == key[2]):
                raise KeyError(key[0])
            results[index] = _fingerprint_from_json(entry["fingerprint"])
        except (KeyError, ValueError, TypeError, AttributeError):
            # Absent, changed or mangled by hand: fingerprint the file again.
            missing.append(index)
    fresh = image_fingerprints([paths[index] for index in missing], progress=progress, invariant=invariant)
    for index, fingerprint in zip(missing, fresh, strict=True):
        results[index] = fingerprint
    if missing or len(cached) != len(keys):
        entries = {
            key[0]: {"size": key[1], "mtime_ns": key[2], "fingerprint": _fingerprint_to_json(fingerprint)}
            for key, fingerprint in zip(keys, results, strict=True)
        }
        write_json(cache_file, {"version": _CACHE_VERSION, "invariant": invariant, "entries": entries})
    return results


def union_find(size: int) -> tuple[Callable[[int], int], Callable[[int, int], None]]:
    """`find` and `union` over items 0..size-1; every group is named by its smallest member."""
    parent = list(range(size))

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(first: int, second: int) -> None:
        first_root, second_root = find(first), find(second)
        if first_root != second_root:
            parent[max(first_root, second_root)] = min(first_root, second_root)

    return find, union


def group_duplicates(fingerprints: Sequence[Fingerprint | None], max_distance: int = 4) -> list[int]:
    """Give copies of one photo the same group id.

    Two images are copies when their md5 digests are equal or their perceptual hashes differ in
    at most `max_distance` of 64 bits (under the best flip or quarter turn when both
    fingerprints are invariant). Groups are closed transitively.

    Returns:
        One id per fingerprint: 0, 1, 2, ... in order of first appearance; -1 for None.
    """
    valid = [index for index, fingerprint in enumerate(fingerprints) if fingerprint is not None]
    find, union = union_find(len(fingerprints))

    first_with_md5: dict[str, int] = {}
    for index in valid:
        fingerprint = fingerprints[index]
        assert fingerprint is not None
        union(index, first_with_md5.setdefault(fingerprint.md5, index))

    for first, second in _near_pairs([fingerprints[index] for index in valid], max_distance):
        union(valid[first], valid[second])

    ids: dict[int, int] = {}
    groups: list[int] = []
    for index, fingerprint in enumerate(fingerprints):
        groups.append(-1 if fingerprint is None else ids.setdefault(find(index), len(ids)))
    return groups


def duplicate_groups(
    fingerprints: Sequence[Fingerprint | None], groups: Sequence[int]
) -> list[DuplicateGroup]:
    """The groups of `group_duplicates` with more than one member, in order of group id."""
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        if group >= 0:
            members.setdefault(group, []).append(index)
    found = []
    for group, indexes in sorted(members.items()):
        if len(indexes) > 1:
            digests = {fingerprint.md5 for fingerprint in (fingerprints[i] for i in indexes) if fingerprint}
            found.append(DuplicateGroup(group=group, members=tuple(indexes), exact=len(digests) == 1))
    return found


def _near_pairs(fingerprints: Sequence[Fingerprint | None], max_distance: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose hashes are within `max_distance` bits, compared in row blocks."""
    count = len(fingerprints)
    if count < 2 or max_distance < 0:
        return []
    present = [fingerprint for fingerprint in fingerprints if fingerprint is not None]
    assert len(present) == count, "pass only readable images"
    # Column t holds each image's hash under transform t; plain fingerprints repeat their one hash.
    columns = len(DIHEDRAL) if any(fingerprint.variants for fingerprint in present) else 1
    table = np.array(
        [fingerprint.variants or (fingerprint.phash,) * columns for fingerprint in present], dtype=np.uint64
    )  # (count, columns)
    upright = table[:, 0]
    pairs: list[tuple[int, int]] = []
    block = max(1, 4_000_000 // (count * columns))  # bounds the (block, count, columns) array
    for start in range(0, count, block):
        rows = table[start : start + block]
        distance = _popcount(rows[:, None, :] ^ upright[None, :, None]).min(axis=2)  # (block, count)
        close = distance <= max_distance
        close &= np.arange(count)[None, :] > np.arange(start, start + len(rows))[:, None]
        first, second = np.nonzero(close)
        pairs += zip((first + start).tolist(), second.tolist(), strict=True)
    return pairs


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(values)
    as_bytes = values[..., None].view(np.uint8)
    return _BITS_IN_BYTE[as_bytes].sum(axis=-1)


_BITS_IN_BYTE = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _phash_int(thumbnail: Image.Image) -> int:
    bits = np.asarray(imagehash.phash(thumbnail).hash, dtype=bool).reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _cache_key(path: Path) -> tuple[str, int, int]:
    try:
        stat = Path(path).stat()
    except OSError:
        return str(Path(path).resolve()), -1, -1
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def _read_cache(cache_file: Path, invariant: bool) -> dict[str, dict[str, Any]]:
    """Cached entries by resolved path; empty when the cache is missing, corrupt or of the other mode."""
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("version") != _CACHE_VERSION
        or data.get("invariant") != invariant
    ):
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _fingerprint_to_json(fingerprint: Fingerprint | None) -> dict[str, Any] | None:
    if fingerprint is None:
        return None
    # Hex strings: JSON readers other than Python's lose precision on 64-bit integers.
    return {
        "md5": fingerprint.md5,
        "phash": f"{fingerprint.phash:016x}",
        "variants": [f"{value:016x}" for value in fingerprint.variants],
    }


def _fingerprint_from_json(entry: Any) -> Fingerprint | None:
    """The inverse of `_fingerprint_to_json`; raises KeyError, ValueError or TypeError when mangled."""
    if entry is None:
        return None
    return Fingerprint(
        md5=str(entry["md5"]),
        phash=int(entry["phash"], 16),
        variants=tuple(int(value, 16) for value in entry.get("variants", [])),
    )
