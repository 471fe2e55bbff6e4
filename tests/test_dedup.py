"""Duplicate finding groups copies and near-copies of a photo, and nothing else."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ewaste_vision.data import dedup
from ewaste_vision.data.dedup import (
    Fingerprint,
    duplicate_groups,
    fingerprints_cached,
    group_duplicates,
    image_fingerprints,
)

MakeImage = Callable[..., Path]


@pytest.fixture
def photos(tmp_path: Path, make_image: MakeImage) -> dict[str, Path]:
    """An original, an exact copy, a resized JPEG re-encode, a different image and a broken file."""
    original = make_image(tmp_path / "original.png", 1, size=(96, 96))
    copy = tmp_path / "copy.png"
    shutil.copy(original, copy)
    recompressed = tmp_path / "recompressed.jpg"
    Image.open(original).resize((80, 80), Image.Resampling.BILINEAR).save(recompressed, quality=70)
    other = make_image(tmp_path / "other.png", 2, size=(96, 96))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    return {
        "original": original,
        "copy": copy,
        "recompressed": recompressed,
        "other": other,
        "broken": broken,
    }


def test_copies_grouped_different_image_apart_broken_none(photos: dict[str, Path]) -> None:
    names = list(photos)
    fingerprints = image_fingerprints([photos[name] for name in names])
    group = dict(zip(names, group_duplicates(fingerprints), strict=True))

    assert fingerprints[names.index("broken")] is None
    assert group["broken"] == -1
    assert group["original"] == group["copy"] == group["recompressed"]
    assert group["other"] != group["original"]
    found = duplicate_groups(fingerprints, list(group.values()))
    assert [(g.members, g.exact) for g in found] == [((0, 1, 2), False)]


def test_exact_flag_only_for_byte_identical_groups(photos: dict[str, Path]) -> None:
    paths = [photos["original"], photos["copy"], photos["other"]]
    fingerprints = image_fingerprints(paths)
    found = duplicate_groups(fingerprints, group_duplicates(fingerprints))
    assert [(g.members, g.exact) for g in found] == [((0, 1), True)]


@pytest.mark.parametrize(
    "transform", [Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90, Image.Transpose.TRANSVERSE]
)
def test_invariant_mode_groups_flips_and_rotations(
    tmp_path: Path, make_image: MakeImage, transform: Image.Transpose
) -> None:
    original = make_image(tmp_path / "original.png", 5, size=(96, 96))
    turned = tmp_path / "turned.jpg"
    Image.open(original).transpose(transform).save(turned, quality=90)
    other = make_image(tmp_path / "other.png", 6, size=(96, 96))
    paths = [original, turned, other]

    plain = group_duplicates(image_fingerprints(paths))
    invariant_prints = image_fingerprints(paths, invariant=True)
    invariant = group_duplicates(invariant_prints)

    assert plain[0] != plain[1]
    assert invariant[0] == invariant[1] != invariant[2]
    first = invariant_prints[0]
    assert first is not None and len(first.variants) == 8 and first.phash == min(first.variants)


def test_groups_close_transitively_and_by_md5() -> None:
    fingerprints: list[Fingerprint | None] = [
        Fingerprint("a", 0b0),
        Fingerprint("b", 0b111),  # 3 bits from the first
        Fingerprint("c", 0b111111),  # 3 bits from the second, 6 from the first
        Fingerprint("d", 2**64 - 1),
        None,
        Fingerprint("d", 0xFFFF_0000_FFFF_0000),  # same bytes as the fourth, whatever its hash says
    ]
    assert group_duplicates(fingerprints, max_distance=3) == [0, 0, 0, 1, -1, 1]
    assert group_duplicates(fingerprints, max_distance=2) == [0, 1, 2, 3, -1, 3]


def test_planted_near_copies_found_across_row_blocks() -> None:
    # 2550 hashes are compared in two row blocks; random 64-bit hashes are ~32 bits apart,
    # so the planted copies (3 bits off) are the only pairs within 4 bits.
    rng = np.random.default_rng(0)
    hashes = [int(value) for value in rng.integers(0, 2**63, size=2500, dtype=np.int64)]
    values = hashes + [hashes[source] ^ 0b1011 for source in range(0, 2500, 50)]
    fingerprints: list[Fingerprint | None] = [Fingerprint(str(i), v) for i, v in enumerate(values)]

    groups = group_duplicates(fingerprints, max_distance=4)

    for planted, source in enumerate(range(0, 2500, 50)):
        assert groups[2500 + planted] == groups[source]
    assert len(set(groups)) == 2500


def test_cache_reuses_unchanged_files_and_refreshes_changed_ones(
    tmp_path: Path, photos: dict[str, Path], make_image: MakeImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [photos["original"], photos["other"], photos["broken"]]
    cache = tmp_path / "cache" / "fingerprints.json"
    first = fingerprints_cached(paths, cache)
    assert first == image_fingerprints(paths)
    assert json.loads(cache.read_text())["version"] == 1

    def fail(path: Path, invariant: bool = False) -> Fingerprint:
        raise AssertionError(f"{path} fingerprinted again")

    with monkeypatch.context() as patched:
        patched.setattr(dedup, "fingerprint_file", fail)
        assert fingerprints_cached(paths, cache) == first

    make_image(photos["other"], 7, size=(96, 96))
    os.utime(photos["other"], ns=(1, 1))  # a new mtime even on coarse file-system clocks
    second = fingerprints_cached(paths, cache)
    assert second[0] == first[0] and second[1] != first[1]

    cache.write_text("{ not json")
    assert fingerprints_cached(paths, cache) == second
    assert fingerprints_cached(paths, cache, invariant=True)[0] != second[0]


def test_no_cache_file_means_no_cache(photos: dict[str, Path]) -> None:
    paths = [photos["original"]]
    assert fingerprints_cached(paths, None) == image_fingerprints(paths)
