"""16-bit where 8-bit is expected, and the reverse, is converted (x/257 or x*257), never clipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from ewaste_vision.data.images import load_rgb, to_rgb8
from ewaste_vision.data.xray import EightBitXrayWarning, read_xray

# Low values are where clipping or a missing /257 shows: 1000 must become 4, not 255.
VALUES16 = np.array([[0, 257, 1000, 32896, 51400, 65535]], dtype=np.uint16)
EXPECTED8 = np.round(VALUES16 / 257).astype(np.uint8)


def _all_channels(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.dtype == np.uint8
    assert (pixels == pixels[..., :1]).all()  # grey stays grey
    return pixels[..., 0]


def test_16_bit_grayscale_png_is_divided_by_257(tmp_path: Path) -> None:
    Image.fromarray(VALUES16).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as opened:
        assert opened.mode.startswith("I")  # the file really is 16-bit
    assert np.array_equal(_all_channels(load_rgb(tmp_path / "g16.png")), EXPECTED8)


def test_32_bit_integer_mode_is_divided_by_257() -> None:
    image = Image.fromarray(VALUES16.astype(np.int32), mode="I")
    assert np.array_equal(_all_channels(to_rgb8(image)), EXPECTED8)


def test_big_endian_16_bit_tiff_is_divided_by_257(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "be.tif", VALUES16.astype(">u2"), byteorder=">")
    assert np.array_equal(_all_channels(load_rgb(tmp_path / "be.tif")), EXPECTED8)


def test_dual_energy_tiff_opens_as_8_bit_picture_of_its_high_energy_page(tmp_path: Path) -> None:
    stack = np.stack([VALUES16, VALUES16[:, ::-1]])  # [2, 1, 6]
    tifffile.imwrite(tmp_path / "scan.tif", stack, photometric="minisblack", compression="zlib")
    assert np.array_equal(_all_channels(load_rgb(tmp_path / "scan.tif")), EXPECTED8)


def test_8_bit_file_given_to_xray_reader_is_scaled_by_257_with_a_warning(tmp_path: Path) -> None:
    values8 = np.array([[0, 1, 2, 128, 255]], dtype=np.uint8)
    Image.fromarray(values8).save(tmp_path / "a.high.png")
    Image.fromarray(values8[:, ::-1].copy()).save(tmp_path / "a.low.png")
    with pytest.warns(EightBitXrayWarning) as caught:
        raw = read_xray(tmp_path / "a.high.png")
    notes = sorted(str(warning.message) for warning in caught)
    assert len(notes) == 2 and "a.high.png" in notes[0] and "a.low.png" in notes[1]
    assert all("257" in note for note in notes)
    assert raw.dtype == np.uint16
    assert np.array_equal(raw[0], values8.astype(np.uint16) * 257)
    assert np.array_equal(raw[1], values8[:, ::-1].astype(np.uint16) * 257)
    assert raw.max() == 65535  # full range, not 255


def test_8_bit_stacked_npy_is_scaled_by_257(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.full((2, 3, 4), 200, dtype=np.uint8))
    with pytest.warns(EightBitXrayWarning):
        raw = read_xray(tmp_path / "s.npy")
    assert raw.dtype == np.uint16 and (raw == 200 * 257).all()
