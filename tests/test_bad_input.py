"""Bad input: one line naming the file and what to do, a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ewaste_vision.cli import main


def _fails_cleanly(args: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for fragment in expected:
        assert fragment in err, (fragment, err)
    return err


def test_missing_dataset(tmp_path: Path, capsys):
    _fails_cleanly(
        ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "run")], capsys, "nope", "not found"
    )


def test_single_class_dataset(tmp_path: Path, make_image, capsys):
    for i in range(3):
        make_image(tmp_path / "data" / "only" / f"{i}.png", seed=i)
    _fails_cleanly(["train", str(tmp_path / "data"), "--out", str(tmp_path / "run")], capsys, "two classes")


def test_empty_dataset(tmp_path: Path, capsys):
    (tmp_path / "data" / "a").mkdir(parents=True)
    _fails_cleanly(["train", str(tmp_path / "data"), "--out", str(tmp_path / "run")], capsys, "data")


def test_missing_run(tmp_path: Path, capsys):
    _fails_cleanly(["evaluate", str(tmp_path / "norun")], capsys, "norun", "ewaste train")


def test_corrupt_checkpoint(tmp_path: Path, capsys):
    (tmp_path / "model.pt").write_bytes(b"\x00garbage" * 10)
    _fails_cleanly(["predict", str(tmp_path), str(tmp_path)], capsys, "model.pt", "corrupt")


def test_foreign_checkpoint(tmp_path: Path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "model.pt")
    _fails_cleanly(["predict", str(tmp_path), str(tmp_path)], capsys, "model.pt", "foreign")


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path, capsys):
    # weights_only=True refuses arbitrary objects: loading must not execute or accept them.
    torch.save(
        {"format": "ewaste-vision-model/1", "meta": Path("x"), "state_dict": {}}, tmp_path / "model.pt"
    )
    _fails_cleanly(["predict", str(tmp_path), str(tmp_path)], capsys, "model.pt")


def test_run_of_another_task(tmp_path: Path, capsys):
    meta = {
        "task": "detect",
        "class_names": ["a", "b"],
        "backbone": "tiny",
        "image_size": 32,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    torch.save({"format": "ewaste-vision-model/1", "meta": meta, "state_dict": {}}, tmp_path / "model.pt")
    _fails_cleanly(["explain", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o")], capsys, "detect")
    # Weights that do not fit the network the metadata describes: one line, no traceback.
    _fails_cleanly(["evaluate", str(tmp_path)], capsys, "damaged")


def test_unknown_backbone_and_bad_config(tmp_path: Path, make_image, capsys):
    for name in ("a", "b"):
        make_image(tmp_path / "data" / name / "0.png", seed=ord(name))
    _fails_cleanly(
        ["train", str(tmp_path / "data"), "--out", str(tmp_path / "r1"), "--backbone", "vgg"],
        capsys,
        "vgg",
        "ewaste models",
    )
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("backbone: tiny\nlearning_rate: 3\n")
    _fails_cleanly(
        ["train", str(tmp_path / "data"), "--out", str(tmp_path / "r2"), "--config", str(recipe)],
        capsys,
        "bad.yaml",
        "learning_rate",
    )
    recipe.write_text("backbone: [tiny\n")
    _fails_cleanly(
        ["train", str(tmp_path / "data"), "--out", str(tmp_path / "r3"), "--config", str(recipe)],
        capsys,
        "bad.yaml:",
    )


def test_unreadable_image_is_skipped_counted_and_reported(tmp_path: Path, make_image):
    data = tmp_path / "data"
    for name in ("a", "b"):
        for i in range(12):
            make_image(data / name / f"{i}.png", seed=hash((name, i)) % 10_000)
    (data / "a" / "broken.jpg").write_bytes(b"not really a jpeg")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(data),
                "--out",
                str(run),
                "--backbone",
                "tiny",
                "--image-size",
                "32",
                "--max-epochs",
                "1",
                "--head-epochs",
                "2",
            ]
        )
        == 0
    )
    report = (run / "report.md").read_text()
    assert "broken.jpg" in report
    assert "broken.jpg" not in (run / "split.csv").read_text()


def test_command_line_has_no_traceback_on_bad_input(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "ewaste_vision.cli", "predict", str(tmp_path / "x"), "y.png"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
