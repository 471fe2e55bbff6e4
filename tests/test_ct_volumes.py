"""Reading CT volumes (`ct.volume`), and `ewaste data check` on a folder of them (`ct.check`).

Every format is written here, in `tmp_path`, by the library that owns it (SimpleITK, tifffile,
numpy), read back, and compared voxel for voxel and spacing for spacing. The volume's three
sides and three spacings all differ, so a swapped axis cannot pass.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from ewaste_vision.cli import main
from ewaste_vision.ct.check import check_volumes, format_volume_report, holds_volumes
from ewaste_vision.ct.volume import Volume, find_volumes, read_volume
from ewaste_vision.errors import DataError, UserError

SHAPE = (5, 6, 7)  # D, H, W
SPACING = (2.0, 0.5, 0.75)  # mm along D, H, W


def _voxels(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 3000, size=SHAPE).astype(np.int16)


def _sitk_image(voxels: np.ndarray, spacing: tuple[float, float, float] = SPACING) -> sitk.Image:
    image = sitk.GetImageFromArray(voxels)  # [D, H, W] -> x = W, y = H, z = D
    image.SetSpacing(tuple(reversed(spacing)))
    return image


def write_sitk(path: Path, voxels: np.ndarray, spacing: tuple[float, float, float] = SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_sitk_image(voxels, spacing), str(path))
    return path


def write_dicom_series(
    folder: Path, voxels: np.ndarray, spacing=SPACING, series_uid="1.2.826.0.1.3680043.2.1125.1"
) -> Path:
    """One .dcm per slice, with the tags GDCM sorts and spaces a series by."""
    folder.mkdir(parents=True, exist_ok=True)
    image = _sitk_image(voxels, spacing)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        piece = image[:, :, z]
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{z + 1}",
            "0020|0013": str(z + 1),
            "0020|0032": f"0\\0\\{z * spacing[0]}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[2]}",  # row spacing (H), column spacing (W)
            "0018|0050": str(spacing[0]),
        }
        for key, value in tags.items():
            piece.SetMetaData(key, value)
        # Slices written in reverse order: the reader must sort them by position, not by name.
        writer.SetFileName(str(folder / f"slice_{image.GetDepth() - z:03d}.dcm"))
        writer.Execute(piece)
    return folder


def write_stack(path: Path, voxels: np.ndarray, spacing: tuple[float, ...] | None = SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, voxels)
    else:
        tifffile.imwrite(path, voxels)
    if spacing is not None:
        path.with_suffix(".json").write_text(json.dumps({"spacing": list(spacing)}))
    return path


FORMATS = {
    "nrrd": lambda tmp, v: write_sitk(tmp / "scan.nrrd", v),
    "nhdr": lambda tmp, v: write_sitk(tmp / "scan.nhdr", v),
    "nii": lambda tmp, v: write_sitk(tmp / "scan.nii", v),
    "nii.gz": lambda tmp, v: write_sitk(tmp / "scan.nii.gz", v),
    "mha": lambda tmp, v: write_sitk(tmp / "scan.mha", v),
    "dicom_series": lambda tmp, v: write_dicom_series(tmp / "scan", v),
    "dicom_multiframe": lambda tmp, v: write_sitk(tmp / "scan.dcm", v),  # one multi-frame file
    "tiff": lambda tmp, v: write_stack(tmp / "scan.tif", v),
    "npy": lambda tmp, v: write_stack(tmp / "scan.npy", v),
}


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_round_trips_voxels_and_spacing(tmp_path: Path, kind: str):
    voxels = _voxels()
    if kind == "dicom_multiframe":  # GDCM writes a 3-D image to one file only unsigned
        voxels = (voxels.astype(np.int32) + 1000).astype(np.uint16)
    volume = read_volume(FORMATS[kind](tmp_path, voxels))
    assert volume.voxels.dtype == np.float32
    assert volume.shape == SHAPE
    np.testing.assert_array_equal(volume.voxels, voxels.astype(np.float32))
    assert volume.spacing == pytest.approx(SPACING, rel=1e-5)
    assert volume.spacing_known


def test_dicom_spacing_between_slices_comes_from_positions(tmp_path: Path):
    # Slice thickness says 2 mm, but the slices are 3 mm apart: the gap is what a render needs.
    folder = write_dicom_series(tmp_path / "scan", _voxels(), spacing=(3.0, 0.5, 0.75))
    assert read_volume(folder).spacing == pytest.approx((3.0, 0.5, 0.75))


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_stack_without_sidecar_assumes_1mm_and_warns(tmp_path: Path, suffix: str, caplog):
    path = write_stack(tmp_path / f"scan{suffix}", _voxels(), spacing=None)
    with caplog.at_level(logging.WARNING):
        volume = read_volume(path)
    assert volume.spacing == (1.0, 1.0, 1.0) and not volume.spacing_known
    assert "scan.json" in caplog.text and str(path) in caplog.text


def test_volume_checks_its_own_fields():
    with pytest.raises(ValueError, match="spacing"):
        Volume(np.zeros(SHAPE, np.float32), (1.0, 0.0, 1.0), Path("x"))
    with pytest.raises(ValueError, match="D, H, W"):
        Volume(np.zeros((4, 4), np.float32), (1.0, 1.0, 1.0), Path("x"))


def _nrrd_with_header(path: Path, fields: str, data: bytes | None = None) -> Path:
    """A hand-made NRRD: the only way to get a header SimpleITK itself refuses to write."""
    raw = np.arange(60, dtype=np.int16).tobytes() if data is None else data
    header = f"NRRD0004\ntype: short\ndimension: 3\nsizes: 5 4 3\n{fields}endian: little\nencoding: raw\n\n"
    path.write_bytes(header.encode() + raw)
    return path


def _nifti_with_pixdim(path: Path, value: float) -> Path:
    write_sitk(path, _voxels())
    header = bytearray(path.read_bytes())
    header[80:84] = struct.pack("<f", value)  # pixdim[1]: NIfTI-1 header offset 76 + 4
    path.write_bytes(bytes(header))
    return path


def _damaged_deflate_tiff(path: Path) -> Path:
    tifffile.imwrite(path, _voxels(), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        start = tif.pages[0].dataoffsets[0]
    data = bytearray(path.read_bytes())
    data[start + 2 : start + 40] = bytes(38)  # the deflate stream no longer decodes
    path.write_bytes(bytes(data))
    return path


def _pickled_npy(path: Path) -> Path:
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return path


BAD_INPUTS = {
    "garbage nrrd": (lambda tmp: _write(tmp / "bad.nrrd", b"this is not a volume"), "cannot read"),
    "truncated nrrd": (
        lambda tmp: _nrrd_with_header(tmp / "short.nrrd", "spacings: 1 1 1\n", data=b"\x00\x01" * 7),
        "cannot read",
    ),
    "garbage nifti": (lambda tmp: _write(tmp / "bad.nii.gz", b"\x1f\x8b rubbish"), "cannot read"),
    "garbage tiff": (lambda tmp: _write(tmp / "bad.tif", b"II*\x00 rubbish"), "cannot read"),
    "garbage npy": (lambda tmp: _write(tmp / "bad.npy", b"\x93NUMPY rubbish"), "cannot read"),
    "damaged deflate tiff": (lambda tmp: _damaged_deflate_tiff(tmp / "zip.tif"), "cannot read TIFF"),
    "npy header cut short": (  # numpy's own tokenizer raises for this one
        lambda tmp: _write(tmp / "cut.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<i2',"),
        "cannot read",
    ),
    "pickled npy": (lambda tmp: _pickled_npy(tmp / "obj.npy"), "cannot read"),
    "zero-sized axis": (lambda tmp: write_stack(tmp / "empty.npy", np.zeros((0, 4, 4), np.int16)), "empty"),
    "constant volume": (lambda tmp: write_sitk(tmp / "flat.nrrd", np.zeros(SHAPE, np.int16)), "empty"),
    "2-D nrrd": (lambda tmp: _write_2d(tmp / "flat2d.nrrd"), "2-D"),
    "2-D npy": (lambda tmp: write_stack(tmp / "slice.npy", np.ones((4, 4), np.int16)), "3-D"),
    "colour tiff": (lambda tmp: _colour_tiff(tmp / "photo.tif"), "colour"),
    "nan voxels": (lambda tmp: write_stack(tmp / "nan.npy", np.full(SHAPE, np.nan, np.float32)), "NaN"),
    "nrrd zero spacing": (lambda tmp: _nrrd_with_header(tmp / "z.nrrd", "spacings: 0 1 1\n"), "spacing"),
    "nrrd zero direction": (
        lambda tmp: _nrrd_with_header(
            tmp / "zd.nrrd", "space: left-posterior-superior\nspace directions: (0,0,0) (0,1,0) (0,0,2)\n"
        ),
        "spacing",
    ),
    "nrrd nan spacing": (lambda tmp: _nrrd_with_header(tmp / "n.nrrd", "spacings: nan 1 1\n"), "spacing"),
    "nifti zero pixdim": (lambda tmp: _nifti_with_pixdim(tmp / "z.nii", 0.0), "spacing"),
    "sidecar zero spacing": (lambda tmp: write_stack(tmp / "s0.npy", _voxels(), (0.0, 1.0, 1.0)), "spacing"),
    "sidecar negative spacing": (
        lambda tmp: write_stack(tmp / "sn.tif", _voxels(), (1.0, -1.0, 1.0)),
        "spacing",
    ),
    "sidecar nan spacing": (
        lambda tmp: write_stack(tmp / "snan.npy", _voxels(), (math.nan, 1.0, 1.0)),
        "spacing",
    ),
    "sidecar two values": (lambda tmp: write_stack(tmp / "s2.npy", _voxels(), (1.0, 1.0)), "spacing"),
    "sidecar not json": (lambda tmp: _bad_sidecar(tmp / "sj.npy"), "sidecar"),
    "single dicom slice": (
        lambda tmp: sorted(write_dicom_series(tmp / "s", _voxels()).iterdir())[0],
        "single slice",
    ),
    "single-slice npy": (lambda tmp: write_stack(tmp / "one.npy", _voxels()[:1]), "single slice"),
    "two dicom series": (lambda tmp: _two_series(tmp / "mixed"), "2 DICOM series"),
    "missing": (lambda tmp: tmp / "nowhere.nrrd", "not found"),
    "not a volume": (lambda tmp: _write(tmp / "notes.txt", b"hello"), "not a volume"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _write_2d(path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(12, dtype=np.int16).reshape(3, 4)), str(path))
    return path


def _colour_tiff(path: Path) -> Path:
    tifffile.imwrite(
        path, np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8), photometric="rgb"
    )
    return path


def _bad_sidecar(path: Path) -> Path:
    write_stack(path, _voxels(), spacing=None)
    path.with_suffix(".json").write_text("{spacing: oops")
    return path


def _two_series(folder: Path) -> Path:
    write_dicom_series(folder, _voxels(0), series_uid="1.2.826.0.1.3680043.2.1125.1")
    second = write_dicom_series(folder / "tmp", _voxels(1), series_uid="1.2.826.0.1.3680043.2.1125.2")
    for file in second.iterdir():
        file.rename(folder / f"b_{file.name}")
    second.rmdir()
    return folder


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_volumes_give_one_line_naming_the_file(tmp_path: Path, case: str):
    make, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(DataError) as caught:
        read_volume(path)
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert "\n" not in message
    assert path.name in message or path.with_suffix(".json").name in message
    assert expected in message


def test_pickled_npy_is_never_unpickled(tmp_path: Path, monkeypatch):
    path = _pickled_npy(tmp_path / "obj.npy")
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled a user file"))
    with pytest.raises(DataError):
        read_volume(path)


def test_oversized_volume_is_refused_before_reading(tmp_path: Path):
    path = write_sitk(tmp_path / "big.nrrd", _voxels())
    with pytest.raises(DataError, match="over the limit"):
        read_volume(path, max_voxels=100)
    with pytest.raises(DataError, match="over the limit"):
        read_volume(write_stack(tmp_path / "big.npy", _voxels()), max_voxels=100)


def _volume_tree(root: Path) -> Path:
    write_sitk(root / "phone_a" / "dev1.nrrd", _voxels(1))
    write_sitk(root / "phone_a" / "dev2.nii.gz", _voxels(2))
    write_dicom_series(root / "phone_a" / "dev3", _voxels(3))
    write_stack(root / "phone_b" / "dev1.npy", _voxels(4))  # its dev1.json is a sidecar, not junk
    write_stack(root / "phone_b" / "batch2" / "dev2.tif", _voxels(5), spacing=None)
    write_sitk(root / "phone_b" / "dev9.nrrd", np.zeros(SHAPE, np.int16))  # constant: unreadable
    (root / "phone_b" / "notes.txt").write_text("scanned on Tuesday")
    (root / "phone_b" / ".hidden.nrrd").write_bytes(b"editor swap file")
    (root / "README.md").write_text("volumes")
    (root / "empty_class").mkdir()
    return root


def test_find_volumes_lists_classes_devices_and_skipped_files(tmp_path: Path):
    root = _volume_tree(tmp_path / "ct")
    entries, skipped = find_volumes(root)
    assert [(e.class_name, e.device) for e in entries] == [
        ("phone_a", "dev1"),
        ("phone_a", "dev2"),
        ("phone_a", "dev3"),
        ("phone_b", "dev1"),
        ("phone_b", "dev2"),
        ("phone_b", "dev9"),
    ]
    assert entries[2].path == root / "phone_a" / "dev3"  # the DICOM folder is one volume
    reasons = {path.name: reason for path, reason in skipped}
    assert set(reasons) == {"notes.txt", "README.md", "empty_class"}
    assert "class folder" in reasons["README.md"]


def test_find_volumes_refuses_a_folder_without_volumes(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"png")
    with pytest.raises(DataError, match="no volumes"):
        find_volumes(tmp_path)


def test_check_volumes_reports_shape_spacing_range_and_problems(tmp_path: Path):
    root = _volume_tree(tmp_path / "ct")
    report = check_volumes(root)
    assert len(report.volumes) == 5
    assert [p.name for p, _ in report.unreadable] == ["dev9.nrrd"]
    first = report.volumes[0]
    assert first.shape == SHAPE and first.spacing == pytest.approx(SPACING)
    voxels = _voxels(1)
    assert (first.minimum, first.maximum) == (voxels.min(), voxels.max())
    assert first.p1 == pytest.approx(np.percentile(voxels, 1))
    assert report.devices_per_class() == {"phone_a": 3, "phone_b": 2}
    text = format_volume_report(report)
    assert "5 x 6 x 7" in text and "2 x 0.5 x 0.75" in text and "(assumed)" in text
    assert "dev9.nrrd" in text and "notes.txt" in text


def test_data_check_cli_on_volumes_and_json(tmp_path: Path, capsys):
    root = _volume_tree(tmp_path / "ct")
    assert main(["data", "check", str(root), "--json", str(tmp_path / "check.json")]) == 0
    out = capsys.readouterr().out
    assert "readable volumes" in out and "phone_a" in out and "spacing assumed 1 mm: 1 volumes" in out
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["kind"] == "volumes" and len(report["volumes"]) == 5
    assert report["volumes"][0]["spacing_mm"] == pytest.approx(list(SPACING))


def test_data_check_cli_exit_codes_on_bad_folders(tmp_path: Path, capsys):
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    write_sitk(tmp_path / "only" / "cls" / "flat.nrrd", np.zeros(SHAPE, np.int16))
    # A folder whose one volume is broken still reports, and says why.
    assert main(["data", "check", str(tmp_path / "only")]) == 0
    assert "empty volume" in capsys.readouterr().out


def test_holds_volumes_tells_volumes_from_images(tmp_path: Path, make_image):
    images = tmp_path / "images"
    make_image(images / "cat" / "0.png", seed=1)
    make_image(images / "dog" / "0.png", seed=2)
    dual_energy = tmp_path / "xray"
    for name in ("a", "b"):  # two pages per file: high and low energy, not a volume
        (dual_energy / name).mkdir(parents=True)
        tifffile.imwrite(dual_energy / name / "0.tif", np.ones((2, 8, 8), np.uint16))
    stacks = tmp_path / "stacks"
    write_stack(stacks / "cls" / "dev.tif", _voxels(), spacing=None)
    assert holds_volumes(_volume_tree(tmp_path / "ct"))
    assert holds_volumes(stacks)
    assert not holds_volumes(images)
    assert not holds_volumes(dual_energy)


def test_data_check_cli_on_images_is_unchanged(tmp_path: Path, make_image, capsys):
    for name in ("cats", "dogs"):
        for i in range(2):
            make_image(tmp_path / "data" / name / f"{i}.png", seed=hash((name, i)) % 1000)
    assert main(["data", "check", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "readable images" in out and "volumes" not in out


def test_dicom_slices_without_extension_and_detached_headers_are_found(tmp_path: Path):
    root = tmp_path / "ct"
    folder = write_dicom_series(root / "cls" / "scanner_export", _voxels(6))
    for file in folder.iterdir():
        file.rename(folder / file.stem.replace("slice_", "IM"))  # IM001, IM002, ...: no extension
    write_sitk(root / "cls" / "other.nhdr", _voxels(7))  # header + other.raw beside it
    entries, skipped = find_volumes(root)
    assert [e.device for e in entries] == ["other", "scanner_export"]
    assert skipped == []  # the .raw belongs to the .nhdr
    volume = read_volume(entries[1].path)
    np.testing.assert_array_equal(volume.voxels, _voxels(6).astype(np.float32))
    assert volume.spacing == pytest.approx(SPACING)
