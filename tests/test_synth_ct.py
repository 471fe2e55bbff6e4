"""Synthetic device CT volumes and photos (`ct.synth_ct`, `ewaste data synth-ct`).

What the renderer and fusion tasks rely on: classes differ inside so that a held-out device is
recognised, the outside is shared by the two classes of a family, files are deterministic,
HU-like, readable by `read_volume` with their spacing, and an interrupted run resumes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ewaste_vision.cli import main
from ewaste_vision.ct.synth_ct import (
    FAMILY_SIZE,
    PHONE_Z0,
    device_photo,
    device_volume,
    exterior_design,
    write_synthetic_ct,
)
from ewaste_vision.ct.volume import find_volumes, read_volume
from ewaste_vision.errors import UserError

CLASSES, DEVICES, SIZE = 6, 3, 48


def _pooled(voxels: np.ndarray, factor: int = 2) -> np.ndarray:
    """Average-pool H and W by `factor`: a coarse map a nearest-centroid can compare."""
    d, h, w = voxels.shape
    trimmed = voxels[:, : h // factor * factor, : w // factor * factor]
    return trimmed.reshape(d, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def _held_out_device_accuracy(features: dict[tuple[int, int], np.ndarray]) -> float:
    """Nearest class centroid, each device classified by centroids of the *other* devices."""
    correct = 0
    for (label, device), feature in features.items():
        centroids = {
            c: np.mean([features[c, d] for d in range(DEVICES) if d != device], axis=0)
            for c in range(CLASSES)
        }
        predicted = min(centroids, key=lambda c: np.linalg.norm(feature - centroids[c]))
        correct += predicted == label
    return correct / len(features)


@pytest.fixture(scope="module")
def volumes():
    return {(c, d): device_volume(c, d, size=SIZE, seed=0) for c in range(CLASSES) for d in range(DEVICES)}


def test_classes_differ_inside_across_devices(volumes):
    # Through the whole device (what an X-ray sees): held-out devices are recognised.
    whole = {key: _pooled(v.voxels).sum(axis=0).ravel() for key, v in volumes.items()}
    accuracy = _held_out_device_accuracy(whole)
    assert accuracy >= 0.85, accuracy  # chance is 1/6


def test_outside_is_only_subtly_different(volumes):
    # Only the back of the shell and the camera bump (what a photo of the back sees).
    def back(volume):
        z = (np.arange(volume.shape[0]) + 0.5) * volume.spacing[0]
        return _pooled(volume.voxels)[z < PHONE_Z0 + 0.8].sum(axis=0).ravel()

    whole = {key: _pooled(v.voxels).sum(axis=0).ravel() for key, v in volumes.items()}
    outside = {key: back(v) for key, v in volumes.items()}
    assert _held_out_device_accuracy(outside) <= _held_out_device_accuracy(whole) - 0.3


def test_family_shares_its_exterior_and_families_differ():
    first, second = exterior_design(0, 0, seed=0), exterior_design(0, 1, seed=0)
    assert (first.lenses, first.bump_centre, first.bump_size, first.logo_glyph) == (
        second.lenses,
        second.bump_centre,
        second.bump_size,
        second.logo_glyph,
    )
    assert 0 < abs(first.lens_radius - second.lens_radius) < 0.2  # the one subtle difference
    others = [exterior_design(f, f * FAMILY_SIZE, seed=0) for f in range(1, 4)]
    assert all(
        (o.lenses, o.bump_centre, o.logo_glyph) != (first.lenses, first.bump_centre, first.logo_glyph)
        for o in others
    )


def test_devices_of_a_class_are_not_identical(volumes):
    a, b = volumes[0, 0].voxels, volumes[0, 1].voxels
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert np.mean(np.abs(a - b) > 200) > 0.005  # parts moved, not just noise


def test_volume_is_hu_like_with_air_around(volumes):
    voxels = volumes[0, 0].voxels
    assert np.median(voxels[:, :, :2]) == pytest.approx(-1000, abs=80)  # air at the sides
    assert voxels.max() > 3000  # screws and shield cans
    assert np.any((voxels > 1200) & (voxels < 2000))  # battery


def test_photos_vary_per_shot_and_are_deterministic():
    photo = device_photo(0, 0, 0, seed=0)
    assert photo.shape == (128, 128, 3) and photo.dtype == np.uint8
    np.testing.assert_array_equal(photo, device_photo(0, 0, 0, seed=0))
    assert not np.array_equal(photo, device_photo(0, 0, 1, seed=0))


def test_write_reads_back_with_spacing_and_is_deterministic(tmp_path: Path):
    first = write_synthetic_ct(tmp_path / "a", classes=2, devices_per_class=2, size=40, photos_per_device=2)
    second = write_synthetic_ct(tmp_path / "b", classes=2, devices_per_class=2, size=40, photos_per_device=2)
    other_seed = write_synthetic_ct(tmp_path / "c", 2, 2, 40, 2, seed=1)
    assert [p.relative_to(tmp_path / "a") for p in first.volumes] == [
        Path("volumes/sp01/dev01.nrrd"),
        Path("volumes/sp01/dev02.nrrd"),
        Path("volumes/sp02/dev01.nrrd"),
        Path("volumes/sp02/dev02.nrrd"),
    ]
    assert len(first.photos) == 8 and first.photos[1].name == "dev01_01.png"
    for a, b in zip(first.volumes + first.photos, second.volumes + second.photos, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert first.volumes[0].read_bytes() != other_seed.volumes[0].read_bytes()

    manifest = json.loads((tmp_path / "a" / "synth_ct.json").read_text())
    volume = read_volume(first.volumes[0])
    assert list(volume.shape) == manifest["shape"]
    assert volume.spacing == pytest.approx(manifest["spacing_mm"])
    np.testing.assert_array_equal(volume.voxels, device_volume(0, 0, size=40, seed=0).voxels)
    assert manifest["exterior_family"] == {"sp01": 0, "sp02": 0}
    entries, skipped = find_volumes(tmp_path / "a" / "volumes")
    assert len(entries) == 4 and not skipped
    assert not list((tmp_path / "a").rglob("*.tmp"))


def test_rerun_resumes_and_refuses_other_settings(tmp_path: Path):
    result = write_synthetic_ct(tmp_path, classes=2, devices_per_class=1, size=32, photos_per_device=1)
    original = result.volumes[1].read_bytes()
    result.volumes[1].unlink()  # as if interrupted before this file
    kept = [result.volumes[0], result.photos[0]]
    for path in kept:
        os.utime(path, ns=(10**18, 10**18))  # a rewrite would give them a new time
    write_synthetic_ct(tmp_path, classes=2, devices_per_class=1, size=32, photos_per_device=1)
    assert result.volumes[1].read_bytes() == original
    assert [path.stat().st_mtime_ns for path in kept] == [10**18, 10**18]  # finished files kept
    with pytest.raises(UserError, match="other settings"):
        write_synthetic_ct(tmp_path, classes=3, devices_per_class=1, size=32, photos_per_device=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", "1"], "--classes"),
        (["--classes", "2", "--devices-per-class", "0"], "--devices-per-class"),
        (["--classes", "2", "--size", "8"], "--size"),
        (["--classes", "2", "--seed", "-1"], "--seed"),
    ],
)
def test_synth_ct_cli_refuses_bad_settings(tmp_path: Path, capsys, args: list[str], message: str):
    assert main(["data", "synth-ct", "--out", str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_synth_ct_cli_then_data_check(tmp_path: Path, capsys):
    out = tmp_path / "synth"
    args = ["data", "synth-ct", "--out", str(out), "--classes", "3", "--devices-per-class", "2"]
    assert main([*args, "--size", "32", "--photos-per-device", "1"]) == 0
    assert "wrote 6 CT volumes" in capsys.readouterr().out
    assert main(["data", "check", str(out / "volumes")]) == 0
    report = capsys.readouterr().out
    assert "3 classes, 6 readable volumes" in report and "sp03: 2 volumes, 2 devices" in report
    assert main(["data", "check", str(out / "rgb")]) == 0  # the photos are an ordinary image folder
    assert "6 readable images" in capsys.readouterr().out
