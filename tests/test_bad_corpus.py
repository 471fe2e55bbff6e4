"""Every command that takes an input, run over a corpus of bad ones (tests/bad_corpus.py).

The rule for each: no traceback; a bad item inside a job (an image, a label line) is skipped and
named on its own line while the job goes on (exit 0); a bad file the whole job depends on (data.yaml,
a price table, a config, a model) stops it with one `error: ` line naming the file (exit 2).
Commands run in-process through `ewaste_vision.cli.main` (fast), and a few as real subprocesses, to
prove no traceback reaches a user's terminal.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import traceback
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bad_corpus import (
    BAD_CONFIGS,
    BAD_DATA_YAML,
    BAD_IMAGES,
    BAD_LABEL_LINES,
    BAD_MODELS,
    BAD_ONNX,
    BAD_PRICES,
    case_count,
    write_bad_images,
)
from ewaste_vision.cli import main
from ewaste_vision.config import load_config_file
from ewaste_vision.data.synth import write_component_crops, write_synthetic_boards

pytestmark = pytest.mark.slow  # trains a tiny classifier and a tiny detector once for the module

TINY = ["--backbone", "tiny", "--no-pretrained"]
SHIPPED_PRICES = (
    Path(__file__).resolve().parents[1] / "src" / "ewaste_vision" / "value" / "default_prices.yaml"
)
UNREADABLE = [file_name for file_name, _, readable in BAD_IMAGES.values() if not readable]


def _run(args: Sequence[object]) -> tuple[int, str, str]:
    """`ewaste ARGS` in-process: (exit code, stdout, stderr); a traceback fails the test."""
    out, err = StringIO(), StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main([str(arg) for arg in args])
    except BaseException:
        pytest.fail(f"ewaste {' '.join(map(str, args))} raised:\n{traceback.format_exc()}")
    assert "Traceback" not in out.getvalue() + err.getvalue()
    return code, out.getvalue(), err.getvalue()


def _fails_with_one_line(args: Sequence[object], *named: str) -> str:
    code, out, err = _run(args)
    lines = err.strip().splitlines()
    assert code == 2, (args, code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in named:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny classify run, a tiny detect run, and the folder of bad images."""
    root = tmp_path_factory.mktemp("corpus")
    crops = write_component_crops(root / "crops", n_per_class=5, seed=1, size=40)
    boards = write_synthetic_boards(root / "boards", n=12, seed=2, size=96).parent
    linear = ["--image-size", "32", "--strategy", "linear", "--head-epochs", "1"]
    assert main(["train", str(crops), "--out", str(root / "classify"), *TINY, *linear]) == 0
    detect = ["--task", "detect", "--image-size", "96", "--max-epochs", "1", "--batch-size", "4"]
    assert (
        main(["train", str(boards), "--out", str(root / "detect"), *TINY, *detect, "--no-box-classifier"])
        == 0
    )
    return {
        "root": root,
        "crops": crops,
        "boards": boards,
        "classify": root / "classify",
        "detect": root / "detect",
        "bad": write_bad_images(root / "bad").popitem()[1].parent,
    }


def test_the_corpus_is_counted_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"{case_count()} bad inputs" in readme


def test_bad_images_are_skipped_and_named_by_every_image_command(corpus: dict[str, Path]):
    bad, root = corpus["bad"], corpus["root"]
    classes = root / "classes-with-bad-images"
    shutil.copytree(corpus["crops"], classes)
    for image in bad.iterdir():
        shutil.copy(image, classes / "ic" / image.name)
    predictions = root / "predictions.csv"
    commands = {
        "predict": ["predict", corpus["classify"], bad, "--out", predictions],
        "explain": ["explain", corpus["classify"], bad, "--out", root / "heatmaps"],
        "value": ["value", corpus["detect"], bad, "--out", root / "lot"],
        "data check": ["data", "check", classes],
        "evaluate": ["evaluate", corpus["classify"], "--data", classes, "--split", "all"],
        "train": [
            "train",
            classes,
            "--out",
            root / "with-bad",
            *TINY,
            "--image-size",
            "32",
            "--strategy",
            "linear",
        ],
    }
    for name, args in commands.items():
        code, out, err = _run(args)
        assert code == 0, (name, err)
        for file_name in UNREADABLE:
            assert file_name in out + err, (name, file_name, out, err)
    # The readable odd ones (CMYK, 16-bit, animated, EXIF-rotated, 1x1, lying extension) are used.
    rows = predictions.read_text().splitlines()[1:]
    used = {Path(row.split(",")[0]).name for row in rows}
    assert used == {file_name for file_name, _, readable in BAD_IMAGES.values() if readable}


def test_bad_images_in_a_yolo_export_are_left_out_of_check_and_split(corpus: dict[str, Path]):
    root = corpus["root"] / "yolo-with-bad-images"
    (root / "train" / "labels").mkdir(parents=True)
    (root / "data.yaml").write_text("train: train/images\nval: train/images\nnames: [ic, led]\n")
    shutil.copytree(corpus["bad"], root / "train" / "images")
    for index in range(3):
        pixels = np.random.default_rng(index).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "train" / "images" / f"good{index}.png")
    for image in (root / "train" / "images").iterdir():
        (root / "train" / "labels" / f"{image.stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    report = corpus["root"] / "yolo-check.json"
    code, _, _ = _run(["data", "check", root, "--json", report])
    assert code == 0
    unreadable = {Path(item["file"]).name for item in json.loads(report.read_text())["unreadable"]}
    assert unreadable == set(UNREADABLE)
    split = corpus["root"] / "yolo-split"
    code, _, err = _run(["data", "split", root, "--out", split])
    assert code == 0
    assert all(f"{file_name}: cannot be read; left out" in err for file_name in UNREADABLE), err
    written = {path.name for path in split.rglob("*") if path.is_file()}
    assert not written & set(UNREADABLE)


def test_the_app_skips_bad_uploads_with_a_reason(corpus: dict[str, Path]):
    pytest.importorskip("gradio")
    from ewaste_vision.app.server import create_app

    app = create_app([corpus["classify"]])
    try:
        (name,) = app.catalog
        files = [str(path) for path in sorted(corpus["bad"].iterdir())]
        (outcome,) = app.dispatcher.run("classify", [name], [files])
    finally:
        app.close()
    skipped = {item["file"]: item["reason"] for item in outcome.result["skipped"]}
    assert set(skipped) == set(UNREADABLE)
    assert all(reason and "\n" not in reason and "/" not in reason for reason in skipped.values()), skipped
    used = {image["file"] for image in outcome.result["images"]}
    assert used == {file_name for file_name, _, readable in BAD_IMAGES.values() if readable}


@pytest.fixture(scope="module")
def bad_labels(corpus: dict[str, Path]) -> Path:
    """A YOLO export with one image per malformed label line (after one good line)."""
    root = corpus["root"] / "bad-labels"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    (root / "data.yaml").write_text("train: train/images\nval: train/images\nnames: [ic, led]\n")
    for index, (name, line) in enumerate(BAD_LABEL_LINES.items()):
        pixels = np.random.default_rng(index).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "train" / "images" / f"{name}.png")
        (root / "train" / "labels" / f"{name}.txt").write_bytes(
            ("0 0.5 0.5 0.2 0.2\n" + line).encode("latin-1")
        )
    return root


def test_every_malformed_label_line_is_reported_with_its_line(bad_labels: Path, tmp_path: Path):
    report = tmp_path / "check.json"
    code, _, _ = _run(["data", "check", bad_labels, "--json", report])
    assert code == 0
    problems = {item["file"]: item["reason"] for item in json.loads(report.read_text())["label_problems"]}
    for name in BAD_LABEL_LINES:
        label = f"train/labels/{name}.txt"
        assert label in problems and f"{name}.txt:2:" in problems[label], (name, problems.get(label))
    for args in (
        ["data", "yolo2multilabel", bad_labels, "--out", tmp_path / "labels.csv"],
        ["data", "split", bad_labels, "--out", tmp_path / "split"],
    ):
        code, _, err = _run(args)
        assert code == 0 and "skipped" in err, (args, err)


@pytest.mark.parametrize("case", sorted(BAD_DATA_YAML))
def test_a_bad_data_yaml_stops_every_command_with_one_line(case: str, tmp_path: Path):
    root = tmp_path / "export"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(root / "train" / "images" / "a.png")
    (root / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_bytes(BAD_DATA_YAML[case].encode("latin-1"))
    for args in (
        ["data", "check", root],
        ["data", "yolo2multilabel", root, "--out", tmp_path / "labels.csv"],
        ["data", "split", root, "--out", tmp_path / "split"],
        ["train", root, "--task", "detect", "--out", tmp_path / "run", *TINY],
    ):
        _fails_with_one_line(args, "data.yaml")


@pytest.mark.parametrize("case", sorted(BAD_PRICES))
def test_a_bad_price_table_stops_value_with_one_line(case: str, corpus: dict[str, Path], tmp_path: Path):
    prices = tmp_path / f"{case}.yaml"
    prices.write_bytes(BAD_PRICES[case](SHIPPED_PRICES.read_text(encoding="utf-8")).encode("latin-1"))
    board = corpus["bad"] / "tiny.png"
    _fails_with_one_line(
        ["value", corpus["detect"], board, "--out", tmp_path / "lot", "--prices", prices], prices.name
    )


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_stops_train_with_one_line(case: str, corpus: dict[str, Path], tmp_path: Path):
    config = tmp_path / f"{case}.yaml"
    config.write_bytes(BAD_CONFIGS[case].encode("latin-1"))
    if case == "empty_is_fine":
        assert load_config_file(config) == {}
        return
    _fails_with_one_line(
        ["train", corpus["crops"], "--out", tmp_path / "run", "--config", config], config.name
    )


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_a_bad_model_file_stops_every_run_command_with_one_line(
    case: str, corpus: dict[str, Path], tmp_path: Path
):
    image = corpus["bad"] / "tiny.png"
    for task in ("classify", "detect"):
        run = tmp_path / task
        shutil.copytree(corpus[task], run)
        BAD_MODELS[case](run / "model.pt")
        commands = [
            ["predict", run, image, "--out", tmp_path / "p.csv"],
            ["evaluate", run],
            ["explain", run, image, "--out", tmp_path / "heatmaps"],
            ["export", run],
        ]
        if task == "detect":
            commands.append(["value", run, image, "--out", tmp_path / "lot"])
        for args in commands:
            _fails_with_one_line(args, "model.pt")


@pytest.mark.parametrize("case", sorted(BAD_ONNX))
def test_a_bad_onnx_file_stops_predict_with_one_line(case: str, corpus: dict[str, Path], tmp_path: Path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = tmp_path / f"{case}.onnx"
    BAD_ONNX[case](model)
    _fails_with_one_line(
        ["predict", model, corpus["bad"] / "tiny.png", "--out", tmp_path / "p.csv"], model.name
    )


def test_no_traceback_reaches_the_terminal(corpus: dict[str, Path], tmp_path: Path):
    broken = tmp_path / "broken-run"
    shutil.copytree(corpus["classify"], broken)
    BAD_MODELS["truncated_zip"](broken / "model.pt")
    prices = tmp_path / "prices.yaml"
    prices.write_text(BAD_PRICES["not_yaml"](SHIPPED_PRICES.read_text(encoding="utf-8")))
    for args in (
        ["predict", str(broken), str(corpus["bad"])],
        [
            "value",
            str(corpus["detect"]),
            str(corpus["bad"]),
            "--out",
            str(tmp_path / "lot"),
            "--prices",
            str(prices),
        ],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "ewaste_vision.cli", *args], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and result.stderr.startswith("error: "), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
