"""`ewaste data synth-xray`: output layout, manifest, resume, the keypoint filter and bad settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ewaste_vision.cli import main
from ewaste_vision.ct.randomise import (
    DRConfig,
    ImageSettings,
    KeypointSettings,
    load_dr_config,
)
from ewaste_vision.ct.render_job import MANIFEST, device_splits, synth_xray
from ewaste_vision.data.folders import read_class_folders
from ewaste_vision.errors import DataError, UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@dataclass(frozen=True)
class Phantom:
    voxels: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 2.0, 2.0)


@dataclass(frozen=True)
class Entry:
    path: Path
    class_name: str
    device: str


def phantom(seed: int, blank: bool = False) -> Phantom:
    """A flat 'device' in air: a slab with a few dense blocks in it (HU-like values)."""
    voxels = np.full((8, 24, 16), -1000.0, np.float32)
    if not blank:
        rng = np.random.default_rng(seed)
        voxels[2:6, 3:21, 3:13] = 200.0
        for _ in range(5):
            r, c = rng.integers(4, 18), rng.integers(4, 11)
            voxels[3:5, r : r + 3, c : c + 2] = 2500.0
    return Phantom(voxels)


SMALL = DRConfig(
    image=ImageSettings(size=32),
    keypoints=KeypointSettings(min_count=3, fast_threshold=10, max_attempts_per_render=2),
)


def entries_and_loader(blank: set[str] = frozenset()) -> tuple[list[Entry], dict[Path, Phantom]]:
    entries, volumes = [], {}
    for c, name in enumerate(("phone_a", "phone_b")):
        for d in range(3):
            entry = Entry(Path(f"vol/{name}/dev{d}.nrrd"), name, f"dev{d}")
            entries.append(entry)
            volumes[entry.path] = phantom(10 * c + d, blank=entry.device in blank and c == 0)
    return entries, volumes


def run(out: Path, n: int = 2, config: DRConfig = SMALL, **kwargs):
    entries, volumes = entries_and_loader(kwargs.pop("blank", set()))
    return synth_xray(entries, out, n, config, load=volumes.__getitem__, progress=False, **kwargs)


def test_renders_16_bit_class_folders_with_a_full_manifest(tmp_path):
    summary = run(tmp_path / "out", n=2)
    assert summary.accepted == 12
    files = sorted((tmp_path / "out").rglob("*.png"))
    assert len(files) == 12
    with Image.open(files[0]) as image:
        assert image.mode in ("I;16", "I") and image.size == (32, 32)
        pixels = np.asarray(image)
    assert pixels.max() > 255  # really 16-bit, not 8-bit values in a 16-bit file
    dataset = read_class_folders(tmp_path / "out")
    assert dataset.class_names == ["phone_a", "phone_b"] and len(dataset.records) == 12

    records = [json.loads(line) for line in (tmp_path / "out" / MANIFEST).read_text().splitlines()]
    assert len(records) == summary.accepted + summary.rejected
    for key in (
        "volume", "class", "device", "seed", "rotation_deg", "source_to_isocentre_mm",
        "source_to_detector_mm", "detector_offset_mm", "pixel_mm", "transfer_points",
        "transfer_seed", "noise_sigma", "background_level", "background_gradient", "keypoints",
        "accepted", "file",
    ):  # fmt: skip
        assert key in records[0], key
    assert len({r["seed"] for r in records}) == len(records)  # every render its own seed
    assert len({tuple(r["rotation_deg"]) for r in records}) == len(records)  # poses really vary
    accepted = [r for r in records if r["accepted"]]
    assert all((tmp_path / "out" / r["file"]).is_file() for r in accepted)


def test_resume_and_batch_size_give_the_same_files(tmp_path):
    run(tmp_path / "a", n=3, batch_size=4)
    run(tmp_path / "b", n=3, batch_size=1)

    def contents(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}

    first = contents(tmp_path / "a")
    assert first == contents(tmp_path / "b")

    # Interrupt: one image lost, the manifest's last line torn mid-write.
    lost = sorted((tmp_path / "a").rglob("*.png"))[4]
    lost.unlink()
    manifest = tmp_path / "a" / MANIFEST
    text = manifest.read_text()
    manifest.write_text(text[: len(text) - 40])
    summary = run(tmp_path / "a", n=3, batch_size=4)
    assert contents(tmp_path / "a") == first
    assert summary.accepted == 18
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.endswith("}")]
    keys = [(r["class"], r["device"], r["attempt"]) for r in records]
    assert len(set(keys)) == summary.accepted + summary.rejected

    with pytest.raises(UserError, match="other settings"):
        run(tmp_path / "a", n=3, seed=1)
    with pytest.raises(UserError, match="up to 3 renders per volume"):
        run(tmp_path / "a", n=2)  # would leave a third image per volume behind
    assert run(tmp_path / "a", n=4).accepted == 24  # more extends the folder


def test_a_volume_every_render_of_which_is_rejected_is_named(tmp_path):
    summary = run(tmp_path / "out", n=2, blank={"dev1"})
    assert [v.device for v in summary.all_rejected] == ["dev1"]
    assert summary.all_rejected[0].rejected == 4  # n x max_attempts_per_render tries
    assert summary.accepted == 10  # the job went on with the others
    lines = summary.describe(SMALL.keypoints.min_count)
    assert any("vol/phone_a/dev1.nrrd: every render (4) rejected" in line for line in lines)
    assert not list((tmp_path / "out" / "phone_a").glob("dev1__*"))

    none_pass = replace(SMALL, keypoints=replace(SMALL.keypoints, min_count=10_000))
    with pytest.raises(UserError, match="no render passed the keypoint filter"):
        run(tmp_path / "none", n=1, config=none_pass)


def test_an_unreadable_volume_is_skipped(tmp_path):
    entries, volumes = entries_and_loader()

    def load(path: Path) -> Phantom:
        if path.name == "dev2.nrrd":
            raise DataError(f"{path}: cannot read volume (truncated); replace or re-export the file")
        return volumes[path]

    summary = synth_xray(entries, tmp_path / "out", 1, SMALL, load=load, progress=False)
    assert summary.accepted == 4
    assert any("truncated" in line and "skipped" in line for line in summary.describe(3))


def test_split_by_device_keeps_each_device_in_one_split(tmp_path):
    entries, _ = entries_and_loader()
    split_of = device_splits(entries, seed=0)
    for name in ("phone_a", "phone_b"):
        assert sorted(s for (c, _), s in split_of.items() if c == name) == ["test", "train", "val"]
    run(tmp_path / "out", n=1, split_of=split_of)
    dataset = read_class_folders(tmp_path / "out")
    assert dataset.has_split
    for record in dataset.records:
        device = record.path.name.split("__")[0]
        assert record.split == split_of[(record.path.parent.name, device)]


def test_default_yaml_is_the_built_in_default():
    assert load_dr_config(REPO / "configs" / "xray" / "dr_default.yaml") == DRConfig()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("noise:\n  sigma: -5\n", "noise.sigma"),
        ("pose:\n  source_to_isocentre_mm: [0, 600]\n", "pose.source_to_isocentre_mm"),
        ("pose:\n  source_to_isocentre_mm: [700, 500]\n", "pose.source_to_isocentre_mm"),
        ("pose:\n  source_to_detector_mm: [500, 900]\n", "pose.source_to_detector_mm"),
        ("keypoints:\n  min_count: -1\n", "keypoints.min_count"),
        ("keypoints:\n  min_count: 2.5\n", "keypoints.min_count"),
        ("background:\n  level: [1000, 70000]\n", "background.level"),
        ("pose:\n  tilt: 5\n", "pose.tilt"),
        ("lighting:\n  colour: red\n", "lighting"),
        ("transfer:\n  seeds: [[[0, 0.1], [0, 0.2]]]\n", "transfer.seeds"),
        ("image:\n  projector: siddon\n", "image.projector"),
    ],
)
def test_impossible_settings_name_the_file_and_key(tmp_path, text, key):
    path = tmp_path / "dr.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        load_dr_config(path)
    message = str(error.value)
    assert str(path) in message and f"'{key}" in message and "\n" not in message


def test_a_source_inside_the_volume_is_refused(tmp_path):
    config = replace(SMALL, pose=replace(SMALL.pose, source_to_isocentre_mm=(20.0, 30.0)))
    with pytest.raises(UserError, match=r"pose\.source_to_isocentre_mm.*inside"):
        run(tmp_path / "out", n=1, config=config)


def test_cli_renders_synthetic_ct_volumes(tmp_path, capsys):
    from ewaste_vision.ct.synth_ct import write_synthetic_ct

    write_synthetic_ct(tmp_path / "ct", classes=2, devices_per_class=1, size=32, photos_per_device=0)
    config = tmp_path / "dr.yaml"
    config.write_text("image:\n  size: 48\nkeypoints:\n  min_count: 5\n")
    code = main(["data", "synth-xray", str(tmp_path / "ct"), "--out", str(tmp_path / "x"), "-n", "2",
                 "--config", str(config)])  # fmt: skip
    assert code == 0
    assert "wrote 4 renders of 2 volumes" in capsys.readouterr().out
    assert len(list((tmp_path / "x").rglob("*.png"))) == 4

    # A source inside the volumes: the error names the YAML, the key and a volume; fixing the YAML
    # and running again into the same folder works (no render was recorded with the bad one).
    config.write_text("image:\n  size: 48\nkeypoints:\n  min_count: 5\npose:\n  source_to_isocentre_mm: 30\n")
    again = ["data", "synth-xray", str(tmp_path / "ct"), "--out", str(tmp_path / "z"), "-n", "1"]
    assert main([*again, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "pose.source_to_isocentre_mm" in err and "dev01.nrrd" in err
    config.write_text("image:\n  size: 48\nkeypoints:\n  min_count: 5\n")
    assert main([*again, "--config", str(config)]) == 0
    capsys.readouterr()

    config.write_text("noise:\n  sigma: [100, 10]\n")
    code = main(["data", "synth-xray", str(tmp_path / "ct"), "--out", str(tmp_path / "y"),
                 "--config", str(config)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and str(config) in err and "noise.sigma" in err and "Traceback" not in err
