"""Dual-energy X-ray input: storage conventions, preprocessing with known answers, synthetic boards."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image

from ewaste_vision.data.synth import COMPONENT_CLASSES
from ewaste_vision.data.synth_xray import (
    MATERIALS,
    XRAY_RECIPES,
    beer_lambert,
    render_xray_board,
    write_synthetic_xray_boards,
)
from ewaste_vision.data.xray import (
    MAX_ATTENUATION,
    XraySample,
    find_xray_samples,
    load_xray_tensor,
    preprocess_xray,
    read_xray,
    xray_preview,
    xray_to_tensor,
)
from ewaste_vision.data.yolo import read_yolo_dataset
from ewaste_vision.errors import DataError, UserError

AIR = 60000.0


def _scan(height: int = 12, width: int = 16, seed: int = 0) -> np.ndarray:
    """Random uint16 [2, H, W] values spanning the 16-bit range."""
    return np.random.default_rng(seed).integers(0, 65536, size=(2, height, width), dtype=np.uint16)


# --------------------------------------------------------------------------------------------
# Preprocessing


def test_uniform_attenuator_gives_mu_times_thickness_and_air_gives_zero() -> None:
    copper = MATERIALS["copper"]
    thickness = 0.8
    raw = np.full((2, 20, 20), AIR)
    raw[0, 5:15, 5:15] = AIR * math.exp(-copper.high * thickness)
    raw[1, 5:15, 5:15] = AIR * math.exp(-copper.low * thickness)
    for channels in (preprocess_xray(raw), preprocess_xray(raw, air=AIR)):  # estimated and given air
        assert channels.shape == (3, 20, 20) and channels.dtype == np.float32
        attenuation = channels * MAX_ATTENUATION  # back to -ln(T)
        assert attenuation[0, 10, 10] == pytest.approx(copper.high * thickness, rel=1e-5)
        assert attenuation[1, 10, 10] == pytest.approx(copper.low * thickness, rel=1e-5)
        assert (channels[:, 0, :] == 0).all()  # air
        assert np.allclose(channels[2], (channels[0] + channels[1]) / 2, atol=1e-7)


def test_offset_and_flat_field_remove_detector_stripes() -> None:
    transmission = np.linspace(0.05, 1.0, 30).reshape(1, 1, 30).repeat(2, axis=1).repeat(2, axis=0)
    dark = np.array([100.0, 300.0])  # one offset per energy
    column_gain = np.linspace(0.8, 1.2, 30).reshape(1, 1, 30)  # a line detector's pixels differ
    flat = dark.reshape(2, 1, 1) + 50000.0 * column_gain  # [2, 1, 30]
    raw = dark.reshape(2, 1, 1) + (flat - dark.reshape(2, 1, 1)) * transmission  # [2, 2, 30]
    channels = preprocess_xray(raw, dark=dark, flat=flat)
    expected = -np.log(transmission) / MAX_ATTENUATION
    assert np.allclose(channels[:2], expected, atol=1e-6)
    uncorrected = preprocess_xray(raw, air=flat.max(axis=(1, 2)))
    assert not np.allclose(uncorrected[:2], expected, atol=1e-3)  # the correction mattered


def test_one_count_apart_stays_apart_so_there_is_no_8_bit_step() -> None:
    ramp = np.arange(30000, 30512, dtype=np.uint16)  # 512 consecutive 16-bit values
    raw = np.stack([ramp, ramp]).reshape(2, 1, -1)
    channels = preprocess_xray(raw, air=60000)
    for channel in channels:
        assert np.all(np.diff(channel) < 0)  # strictly decreasing: every count is its own value
    assert len(np.unique(channels[0])) == 512  # an 8-bit step would leave at most 2 or 3


def test_values_stay_in_unit_range_even_for_zero_counts_and_hot_pixels() -> None:
    raw = np.array([[[0, 65535, 1]], [[0, 65535, 2]]], dtype=np.uint16)
    channels = preprocess_xray(raw, air=30000)
    assert channels.min() >= 0.0 and channels.max() == 1.0  # 0 counts -> clipped, not log 0
    assert channels[0, 0, 1] == 0.0  # brighter than air is air


def test_preprocess_rejects_wrong_shapes_and_conflicting_references() -> None:
    with pytest.raises(ValueError, match=r"\[2, H, W\]"):
        preprocess_xray(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="not both"):
        preprocess_xray(np.ones((2, 4, 4)), flat=np.ones((2, 4, 4)), air=1.0)
    with pytest.raises(ValueError, match="broadcast"):
        preprocess_xray(np.ones((2, 4, 4)), dark=np.zeros((3, 3)))


def test_tensor_preview_and_resize() -> None:
    raw = np.full((2, 32, 48), AIR)
    raw[:, 8:24, 8:24] = AIR * 0.01
    channels = preprocess_xray(raw)
    tensor = xray_to_tensor(channels)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 32, 48)
    assert torch.equal(tensor, torch.from_numpy(channels))
    small = xray_to_tensor(channels, 16)
    assert small.shape == (3, 16, 16) and float(small.min()) >= 0.0 and float(small.max()) <= 1.0
    preview = xray_preview(tensor)
    assert preview.mode == "RGB" and preview.size == (48, 32)
    assert preview.getpixel((0, 0)) == (255, 255, 255)  # air is white
    assert max(preview.getpixel((16, 16))) < 60  # 1 % transmission is dark
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        xray_to_tensor(channels[:2])


# --------------------------------------------------------------------------------------------
# Storage conventions


def _save_png(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path)


def _save_tif(path: Path, image: np.ndarray) -> None:
    tifffile.imwrite(path, image)


def _save_npy(path: Path, image: np.ndarray) -> None:
    np.save(path, image)


def _pages_one_by_one(path: Path, scan: np.ndarray) -> None:
    with tifffile.TiffWriter(path) as writer:
        writer.write(scan[0])
        writer.write(scan[1])


STACKED: dict[str, tuple[str, Callable[[Path, np.ndarray], None]]] = {
    "npy [2,H,W]": ("s.npy", lambda path, scan: np.save(path, scan)),
    "tif [2,H,W]": ("s.tif", lambda path, scan: tifffile.imwrite(path, scan, photometric="minisblack")),
    "tif two pages": ("s.tiff", _pages_one_by_one),
    "tif [H,W,2]": ("s.tif", lambda path, scan: tifffile.imwrite(path, np.moveaxis(scan, 0, -1))),
    "npy float": ("s.npy", lambda path, scan: np.save(path, scan.astype(np.float32))),
}


@pytest.mark.parametrize("kind", list(STACKED))
def test_stacked_files_round_trip(tmp_path: Path, kind: str) -> None:
    name, save = STACKED[kind]
    scan = _scan()
    save(tmp_path / name, scan)
    raw = read_xray(tmp_path / name)
    assert raw.shape == (2, 12, 16)
    assert raw.dtype == (np.float32 if "float" in kind else np.uint16)
    assert np.array_equal(raw, scan)
    assert find_xray_samples(tmp_path) == [XraySample("s", (tmp_path / name,))]


@pytest.mark.parametrize(
    ("high_ext", "low_ext"), [(".png", ".png"), (".tif", ".tif"), (".npy", ".npy"), (".png", ".npy")]
)
def test_side_by_side_pairs_round_trip_from_either_file(tmp_path: Path, high_ext: str, low_ext: str) -> None:
    savers = {".png": _save_png, ".tif": _save_tif, ".npy": _save_npy}
    scan = _scan()
    savers[high_ext](tmp_path / f"board 1.HIGH{high_ext}", scan[0])
    savers[low_ext](tmp_path / f"board 1.low{low_ext}", scan[1])
    if high_ext == ".png":
        with Image.open(tmp_path / f"board 1.HIGH{high_ext}") as opened:
            assert opened.mode.startswith("I")  # really a 16-bit PNG
    for either in (f"board 1.HIGH{high_ext}", f"board 1.low{low_ext}"):
        raw = read_xray(tmp_path / either)
        assert raw.dtype == np.uint16 and np.array_equal(raw, scan)  # high first whichever was given
    (sample,) = find_xray_samples(tmp_path)
    assert sample.name == "board 1" and sample.is_pair
    assert np.array_equal(read_xray(sample), scan)
    assert load_xray_tensor(sample).shape == (3, 12, 16)


def test_find_groups_pairs_per_folder_and_skips_other_files(tmp_path: Path) -> None:
    scan = _scan()
    for folder in (tmp_path, tmp_path / "sub"):
        folder.mkdir(exist_ok=True)
        _save_png(folder / "a.high.png", scan[0])
        _save_png(folder / "a.low.png", scan[1])
    np.save(tmp_path / "b.npy", scan)
    _save_png(tmp_path / "photo.png", scan[0])  # an untagged PNG is not a scan
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    samples = find_xray_samples(tmp_path)
    assert [(s.files[0].parent.name, s.name, len(s.files)) for s in samples] == [
        (tmp_path.name, "a", 2),
        (tmp_path.name, "b", 1),
        ("sub", "a", 2),
    ]
    assert [s.name for s in find_xray_samples(tmp_path, recursive=False)] == ["a", "b"]


# --------------------------------------------------------------------------------------------
# Bad input


def test_missing_partner_is_a_user_error_naming_the_file(tmp_path: Path) -> None:
    _save_png(tmp_path / "lonely.high.png", _scan()[0])
    for call in (lambda: read_xray(tmp_path / "lonely.high.png"), lambda: find_xray_samples(tmp_path)):
        with pytest.raises(UserError) as caught:
            call()
        message = str(caught.value)
        assert "lonely.high.png" in message and "lonely.low." in message and "\n" not in message


def test_partners_of_different_sizes_are_rejected(tmp_path: Path) -> None:
    _save_npy(tmp_path / "x.high.npy", _scan(12, 16)[0])
    _save_npy(tmp_path / "x.low.npy", _scan(12, 15)[1])
    with pytest.raises(DataError, match=r"x\.low\.npy.*same scan"):
        read_xray(tmp_path / "x.high.npy")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("three.npy", np.zeros((3, 4, 4), dtype=np.uint16), r"not \[2, H, W\]"),
        ("flat.npy", np.zeros((4, 4), dtype=np.uint16), r"not \[2, H, W\]"),
        ("neg.npy", np.full((2, 4, 4), -5, dtype=np.int32), "outside 0..65535"),
        ("nan.npy", np.full((2, 4, 4), np.nan, dtype=np.float32), "NaN"),
        ("rgb.tif", np.zeros((4, 4, 3), dtype=np.uint16), r"not \[2, H, W\]"),
    ],
)
def test_wrong_shapes_and_values_name_the_file(
    tmp_path: Path, name: str, content: np.ndarray, expected: str
) -> None:
    path = tmp_path / name
    np.save(path, content) if name.endswith(".npy") else tifffile.imwrite(path, content)
    with pytest.raises(DataError, match=expected) as caught:
        read_xray(path)
    assert name in str(caught.value)


@pytest.mark.parametrize("name", ["junk.npy", "junk.tif", "junk.high.png"])
def test_unreadable_files_are_user_errors(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"not an image at all")
    (tmp_path / "junk.low.png").write_bytes(b"also not an image")
    with pytest.raises(UserError, match=name.replace(".", r"\.")):
        read_xray(tmp_path / name)


def test_pickled_npy_is_refused_not_unpickled(tmp_path: Path) -> None:
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match=r"evil\.npy"):
        read_xray(tmp_path / "evil.npy")


# --------------------------------------------------------------------------------------------
# Synthetic boards


def test_every_component_class_has_a_recipe_and_metals_absorb_more_at_low_energy() -> None:
    assert set(XRAY_RECIPES) == set(COMPONENT_CLASSES)
    assert all(mu.low > mu.high > 0 for mu in MATERIALS.values())
    assert MATERIALS["gold"].low > MATERIALS["copper"].low > MATERIALS["fr4"].low


def test_beer_lambert_adds_materials_in_the_exponent() -> None:
    ones = np.ones((2, 3))
    transmission = beer_lambert({"copper": ones * 0.5, "fr4": ones * 1.6})  # [2, 2, 3]
    copper, fr4 = MATERIALS["copper"], MATERIALS["fr4"]
    assert transmission[0, 0, 0] == pytest.approx(math.exp(-(0.5 * copper.high + 1.6 * fr4.high)))
    assert transmission[1, 1, 2] == pytest.approx(math.exp(-(0.5 * copper.low + 1.6 * fr4.low)))
    with pytest.raises(ValueError, match="unknown materials"):
        beer_lambert({"kryptonite": ones})


def test_rendered_board_is_16_bit_deterministic_and_darker_at_low_energy() -> None:
    raw, boxes = render_xray_board(np.random.default_rng(3), 96)
    again, again_boxes = render_xray_board(np.random.default_rng(3), 96)
    assert raw.dtype == np.uint16 and raw.shape == (2, 96, 96)
    assert np.array_equal(raw, again) and boxes == again_boxes
    assert len(np.unique(raw)) > 1000  # real 16-bit data, not 256 levels
    assert boxes and all(b.cx - b.w / 2 >= 0 and b.cx + b.w / 2 <= 1 for b in boxes)
    air = np.percentile(raw.reshape(2, -1), 99.5, axis=1).reshape(2, 1, 1)
    transmission = raw / air  # [2, H, W]
    for box in boxes:
        left, top, right, bottom = (round(v) for v in box.to_pixels(96, 96))
        high, low = transmission[:, top:bottom, left:right].reshape(2, -1).mean(axis=1)
        assert low < high, box.class_name  # every material absorbs more at low energy
        assert high < 0.97, box.class_name  # and the component shows at all


def test_written_boards_are_read_by_the_yolo_reader_and_the_xray_reader(tmp_path: Path) -> None:
    yaml_path = write_synthetic_xray_boards(tmp_path / "ds", 4, seed=1, size=64, splits=(0.5, 0.25, 0.25))
    spec = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    assert spec["modality"] == "xray_dual_energy" and spec["names"] == list(COMPONENT_CLASSES)
    dataset = read_yolo_dataset(yaml_path)
    assert len(dataset.records) == 4 and {r.split for r in dataset.records} == {"train", "val", "test"}
    assert not dataset.skipped
    for record in dataset.records:
        assert record.path.suffix == ".tif" and record.boxes
        raw = read_xray(record.path)
        assert raw.dtype == np.uint16 and raw.shape == (2, 64, 64)
        assert load_xray_tensor(record.path).shape == (3, 64, 64)
    npy_yaml = write_synthetic_xray_boards(tmp_path / "npy", 1, seed=1, size=64, image_format="npy")
    (npy_file,) = npy_yaml.parent.rglob("xray_*.npy")
    assert np.array_equal(read_xray(npy_file), read_xray(next((tmp_path / "ds").rglob("xray_00000.tif"))))
