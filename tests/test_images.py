"""`load_rgb` turns every image mode and file quirk users bring into upright 8-bit RGB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ewaste_vision.data.images import is_image_file, load_rgb, resize_side, shrink_for_cache
from ewaste_vision.errors import DataError, UnreadableImageError


def test_rgba_transparent_pixels_become_white(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[:, :2] = (200, 0, 0, 255)  # opaque red left half, fully transparent right half
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_rgb(tmp_path / "a.png")
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (200, 0, 0)
    assert image.getpixel((3, 0)) == (255, 255, 255)


def test_palette_with_transparency_becomes_white(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    loaded = load_rgb(tmp_path / "p.png")
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 1)) == (0, 0, 255)


def test_grayscale_keeps_values_in_all_channels(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8)).save(tmp_path / "l.png")
    loaded = np.asarray(load_rgb(tmp_path / "l.png"))
    assert loaded.shape == (1, 3, 3)
    assert loaded[0, :, 0].tolist() == [0, 77, 255]
    assert (loaded == loaded[..., :1]).all()


def test_16_bit_gradient_neither_clips_nor_wraps(tmp_path: Path) -> None:
    gradient = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (2, 1))
    Image.fromarray(gradient).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as opened:
        assert opened.mode.startswith("I")  # the file really is 16-bit
    row = np.asarray(load_rgb(tmp_path / "deep.png"))[0, :, 0].astype(int)
    assert (np.diff(row) >= 0).all()
    assert row[0] <= 1 and row[-1] >= 254
    assert len(np.unique(row)) > 200


def test_cmyk_jpeg_comes_out_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # cyan-free: red
    loaded = load_rgb(tmp_path / "cmyk.jpg")
    red, green, blue = loaded.getpixel((4, 4))
    assert loaded.mode == "RGB"
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # red top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    loaded = load_rgb(tmp_path / "phone.jpg")
    assert loaded.size == (20, 40)
    red, _, blue = loaded.getpixel((15, 4))  # a clockwise turn takes top-left to top-right
    assert red > 200 and blue < 60
    red, _, blue = loaded.getpixel((4, 4))
    assert blue > 200 and red < 60


def test_png_name_with_jpeg_bytes_is_read(tmp_path: Path) -> None:
    Image.new("RGB", (12, 7), (0, 128, 0)).save(tmp_path / "liar.png", format="JPEG")
    assert (tmp_path / "liar.png").read_bytes()[:2] == b"\xff\xd8"
    loaded = load_rgb(tmp_path / "liar.png")
    assert loaded.size == (12, 7)


@pytest.mark.parametrize("content", ["truncated", "garbage", "empty"])
def test_broken_file_raises_with_the_file_name(tmp_path: Path, content: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    data = {"truncated": buffer.getvalue()[:600], "garbage": b"not an image at all", "empty": b""}[content]
    path = tmp_path / f"broken_{content}.png"
    path.write_bytes(data)
    with pytest.raises(UnreadableImageError) as raised:
        load_rgb(path)
    assert isinstance(raised.value, DataError)
    assert path.name in str(raised.value)
    assert "\n" not in str(raised.value)


def test_is_image_file_looks_at_visible_files_with_image_extensions(tmp_path: Path) -> None:
    for name in ["a.JPG", "b.webp", ".hidden.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    found = sorted(path.name for path in tmp_path.iterdir() if is_image_file(path))
    assert found == ["a.JPG", "b.webp"]


def test_cached_copy_is_what_the_transform_needs() -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    # A cropping transform keeps a margin above S on the short side; the aspect ratio is kept.
    with_margin = shrink_for_cache(photo, 100, crops=True)
    assert with_margin.size == (round(resize_side(100) * 4 / 3), resize_side(100))
    # A whole-image transform gets S x S in one resize, not a blurrier second resize of the margin.
    square = shrink_for_cache(photo, 100, crops=False)
    assert square.size == (100, 100)
    once = np.asarray(photo.resize((100, 100), Image.Resampling.BILINEAR))
    twice = np.asarray(with_margin.resize((100, 100), Image.Resampling.BILINEAR))
    assert np.array_equal(np.asarray(square), once)
    assert not np.array_equal(once, twice)
    # Already small enough: the cropping cache keeps the image as it is.
    small = photo.resize((40, 30))
    assert shrink_for_cache(small, 100, crops=True) is small
