"""A corpus of bad inputs, generated into a folder at test time (nothing large is committed).

Each maker writes one file (or folder) and returns its path; `BAD_IMAGES`, `BAD_LABEL_LINES`,
`BAD_DATA_YAML`, `BAD_PRICES`, `BAD_CONFIGS`, `BAD_MODELS` and `BAD_ONNX` name every case, so the
tests can count them and run every command that takes them over each.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _noise(side: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def _jpeg_bytes(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_jpeg(path: Path) -> None:
    data = _jpeg_bytes(_noise())
    path.write_bytes(data[: len(data) // 3])


def truncated_png(path: Path) -> None:
    data = _png_bytes(_noise())
    path.write_bytes(data[: len(data) // 2])


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def text_named_png(path: Path) -> None:
    path.write_text("this is not a picture\n")


def jpeg_named_png(path: Path) -> None:
    """A lying extension that still decodes: readable, not an error."""
    path.write_bytes(_jpeg_bytes(_noise(seed=1)))


def one_pixel(path: Path) -> None:
    Image.new("RGB", (1, 1), (200, 10, 10)).save(path)


def hundred_megapixels(path: Path) -> None:
    """10,000 x 10,000 pixels of one gray: a few hundred kB of PNG that would be 300 MB decoded."""
    Image.new("L", (10_000, 10_000), 90).save(path, optimize=False, compress_level=9)


def cmyk_jpeg(path: Path) -> None:
    path.write_bytes(_jpeg_bytes(_noise(seed=2).convert("CMYK")))


def sixteen_bit_png(path: Path) -> None:
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 65535, (48, 48), dtype=np.uint16)).save(path)


def animated_gif(path: Path) -> None:
    frames = [_noise(seed=seed).convert("P") for seed in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated_jpeg(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path.write_bytes(_jpeg_bytes(_noise(seed=4).resize((64, 32)), exif=exif.tobytes()))


def garbage_bytes_jpg(path: Path) -> None:
    path.write_bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())


BAD_IMAGES: dict[str, tuple[str, Callable[[Path], None], bool]] = {
    # name: (file name, maker, readable: True where the toolkit must cope and use the image)
    "truncated_jpeg": ("truncated.jpg", truncated_jpeg, False),
    "truncated_png": ("truncated.png", truncated_png, False),
    "zero_bytes": ("empty.jpg", zero_bytes, False),
    "text_named_png": ("notes.png", text_named_png, False),
    "garbage_named_jpg": ("garbage.jpg", garbage_bytes_jpg, False),
    "jpeg_named_png": ("lying.png", jpeg_named_png, True),
    "one_pixel": ("tiny.png", one_pixel, True),
    "hundred_megapixels": ("huge.png", hundred_megapixels, False),
    "cmyk_jpeg": ("cmyk.jpg", cmyk_jpeg, True),
    "sixteen_bit_png": ("deep.png", sixteen_bit_png, True),
    "animated_gif": ("animated.gif", animated_gif, True),
    "exif_rotated_jpeg": ("rotated.jpg", exif_rotated_jpeg, True),
}
"""Bad or odd images. Unreadable ones are skipped, counted and named; readable ones are used."""

BAD_LABEL_LINES: dict[str, str] = {
    "too_few_fields": "0 0.5 0.5 0.2\n",
    "too_many_odd_fields": "0 0.1 0.1 0.2 0.2 0.3\n",
    "not_a_number": "0 half 0.5 0.2 0.2\n",
    "class_not_an_integer": "1.5 0.5 0.5 0.2 0.2\n",
    "negative_class": "-1 0.5 0.5 0.2 0.2\n",
    "class_out_of_range": "99 0.5 0.5 0.2 0.2\n",
    "centre_outside_image": "0 1.7 0.5 0.2 0.2\n",
    "negative_size": "0 0.5 0.5 -0.2 0.2\n",
    "zero_size": "0 0.5 0.5 0 0\n",
    "nan": "0 nan 0.5 0.2 0.2\n",
    "infinite": "0 0.5 inf 0.2 0.2\n",
    "polygon_with_even_fields": "0 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n",
    "binary_garbage": "\x00\x01\x02\xff\n",
}
"""One malformed line each (written after one good line, so the file is not just empty)."""

BAD_DATA_YAML: dict[str, str] = {
    "empty": "",
    "not_yaml": "names: [ic, led\ntrain: :\n",
    "a_list": "- ic\n- led\n",
    "no_names": "train: train/images\nval: valid/images\n",
    "names_a_number": "names: 7\ntrain: train/images\n",
    "nc_mismatch": "nc: 5\nnames: [ic, led]\ntrain: train/images\n",
    "missing_split_folder": "names: [ic, led]\ntrain: nowhere/images\n",
    "binary": "\x00\x9f\x92\x96\n",
}

BAD_PRICES: dict[str, Callable[[str], str]] = {
    # Each case edits the shipped table (its text is the argument) in one place.
    "empty": lambda table: "",
    "not_yaml": lambda table: table.replace("currency: EUR", "currency: [EUR"),
    "a_list": lambda table: "- 1\n- 2\n",
    "price_not_a_number": lambda table: table.replace("price: 1820", "price: lots"),
    "negative_price": lambda table: table.replace("price: 1820", "price: -1820"),
    "unknown_unit": lambda table: table.replace("unit: EUR/troy_oz", "unit: EUR/parsec"),
    "other_currency": lambda table: table.replace("unit: EUR/troy_oz", "unit: USD/troy_oz"),
    "negative_content": lambda table: table.replace("amount: 0.457", "amount: -0.457"),
    "yield_above_one": lambda table: table.replace("recovery_yield: 1.0", "recovery_yield: 7", 1),
    "missing_currency": lambda table: table.replace("currency: EUR", ""),
    "binary": lambda table: "\x00\x9f\x92\x96\n",
}
"""Bad price tables, each made from the shipped one."""

BAD_CONFIGS: dict[str, str] = {
    "empty_is_fine": "",
    "not_yaml": "max_epochs: [3\n",
    "a_list": "- 3\n",
    "unknown_field": "max_epoch: 3\n",
    "wrong_type": "max_epochs: many\n",
    "negative": "batch_size: -4\n",
    "binary": "\x00\x9f\x92\x96\n",
}


def corrupt_model(path: Path) -> None:
    path.write_bytes(b"\x00garbage" * 10)


def zero_byte_model(path: Path) -> None:
    path.write_bytes(b"")


def foreign_model(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)


def pickled_code_model(path: Path) -> None:
    torch.save({"format": "ewaste-vision-model/1", "meta": Path("x"), "state_dict": {}}, path)


def truncated_zip_model(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, buffer)
    path.write_bytes(buffer.getvalue()[:300])


def zip_of_text_model(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", "not a pickle")


BAD_MODELS: dict[str, Callable[[Path], None]] = {
    "corrupt": corrupt_model,
    "zero_bytes": zero_byte_model,
    "foreign": foreign_model,
    "pickled_code": pickled_code_model,
    "truncated_zip": truncated_zip_model,
    "zip_of_text": zip_of_text_model,
}
"""Bad `model.pt` files of a run directory."""


def garbage_onnx(path: Path) -> None:
    path.write_bytes(b"\x08\x07garbage" * 20)


def zero_byte_onnx(path: Path) -> None:
    path.write_bytes(b"")


def foreign_onnx(path: Path) -> None:
    """A valid ONNX graph (an identity) with none of ewaste-vision's metadata."""
    import onnx
    from onnx import TensorProto, helper

    tensor_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    tensor_out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "foreign", [tensor_in], [tensor_out]
    )
    onnx.save(helper.make_model(graph), path)


BAD_ONNX: dict[str, Callable[[Path], None]] = {
    "garbage": garbage_onnx,
    "zero_bytes": zero_byte_onnx,
    "foreign": foreign_onnx,
}


def write_bad_images(folder: Path) -> dict[str, Path]:
    """Every image of `BAD_IMAGES` in `folder`, by case name."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, (file_name, maker, _) in BAD_IMAGES.items():
        maker(folder / file_name)
        made[name] = folder / file_name
    return made


def case_count() -> int:
    """How many bad inputs the corpus holds."""
    return sum(
        len(cases)
        for cases in (
            BAD_IMAGES,
            BAD_LABEL_LINES,
            BAD_DATA_YAML,
            BAD_PRICES,
            BAD_CONFIGS,
            BAD_MODELS,
            BAD_ONNX,
        )
    )
