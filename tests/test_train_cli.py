"""End to end through the `ewaste` command on synthetic component crops with the tiny network."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml

from ewaste_vision.cli import main
from ewaste_vision.data.synth import COMPONENT_CLASSES, write_component_crops

FAST = ["--backbone", "tiny", "--image-size", "32", "--batch-size", "16", "--head-epochs", "3"]


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_component_crops(tmp_path_factory.mktemp("crops"), n_per_class=14, seed=3, size=48)


@pytest.fixture(scope="module")
def trained_run(crops: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "linear"
    assert main(["train", str(crops), "--out", str(run), *FAST, "--max-epochs", "3"]) == 0
    return run


def test_train_writes_a_complete_run(trained_run: Path):
    for name in (
        "config.yaml",
        "run.json",
        "split.csv",
        "model.pt",
        "metrics.json",
        "report.md",
        "logs/metrics.csv",
        "plots/confusion_matrix.png",
        "plots/learning_curves.png",
        "checkpoints/last.ckpt",
    ):
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in ("accuracy", "accuracy_ci95", "macro_f1", "per_class", "baseline_accuracy"):
        assert key in metrics
    low, high = metrics["accuracy_ci95"]
    assert 0 <= low <= metrics["accuracy"] <= high <= 1
    assert set(metrics["per_class"]) == set(COMPONENT_CLASSES)
    report = (trained_run / "report.md").read_text()
    assert "plots/confusion_matrix.png" in report
    # The checkpoint is plain tensors and values: it loads without unpickling objects.
    payload = torch.load(trained_run / "model.pt", weights_only=True)
    assert payload["meta"]["class_names"] == sorted(COMPONENT_CLASSES)
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert saved["backbone"] == "tiny" and saved["max_epochs"] == 3


def test_split_keeps_every_class_in_every_split(trained_run: Path):
    import csv

    by_split: dict[str, set[str]] = {}
    with (trained_run / "split.csv").open() as handle:
        for row in csv.DictReader(handle):
            by_split.setdefault(row["split"], set()).add(row["class"])
    assert set(by_split) == {"train", "val", "test"}
    assert all(names == set(COMPONENT_CLASSES) for names in by_split.values())


def test_evaluate_and_predict(
    trained_run: Path, crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["evaluate", str(trained_run), "--split", "val"]) == 0
    assert "accuracy" in capsys.readouterr().out
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", str(trained_run), str(crops / "ic"), "--out", str(out_csv), "--top-k", "2"]) == 0
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "file,class1,prob1,class2,prob2"
    assert len(lines) == 1 + 14
    first = lines[1].split(",")
    assert float(first[2]) >= float(first[4])
    out_json = tmp_path / "pred.json"
    assert (
        main(["predict", str(trained_run), str(sorted((crops / "ic").iterdir())[0]), "--out", str(out_json)])
        == 0
    )
    top = json.loads(out_json.read_text())["predictions"][0]["top"]
    assert len(top) == 3 and 0 < sum(t["probability"] for t in top) <= 1 + 1e-6


@pytest.mark.parametrize("strategy", ["finetune", "full"])
def test_backbone_strategies_train_what_they_promise(crops: Path, tmp_path: Path, strategy: str):
    import lightning as L

    from ewaste_vision.models.registry import create_backbone

    run = tmp_path / strategy
    assert (
        main(["train", str(crops), "--out", str(run), *FAST, "--max-epochs", "1", "--strategy", strategy])
        == 0
    )
    trained = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    L.seed_everything(0, verbose=False)  # training builds the network right after seeding with --seed 0
    initial, _ = create_backbone("tiny")
    first = initial.state_dict()["stages.0.0.weight"]
    last = initial.state_dict()["stages.3.0.weight"]
    assert not torch.equal(trained["backbone.stages.3.0.weight"], last)
    assert torch.equal(trained["backbone.stages.0.0.weight"], first) == (strategy == "finetune")


def test_linear_strategy_leaves_the_backbone_untouched(trained_run: Path):
    import lightning as L

    from ewaste_vision.models.registry import create_backbone

    L.seed_everything(0, verbose=False)
    initial, _ = create_backbone("tiny")
    trained = torch.load(trained_run / "model.pt", weights_only=True)["state_dict"]
    for name, tensor in initial.state_dict().items():
        assert torch.equal(trained[f"backbone.{name}"], tensor), name


def test_resume_continues_from_the_last_checkpoint(crops: Path, tmp_path: Path):
    run = tmp_path / "resumable"
    args = [
        "train",
        str(crops),
        "--out",
        str(run),
        *FAST,
        "--strategy",
        "full",
        "--no-pretrained",
        "--patience",
        "9",
    ]
    assert main([*args, "--max-epochs", "1"]) == 0
    (run / "model.pt").unlink()  # as if the process had been killed before the end
    assert main([*args, "--max-epochs", "2", "--resume"]) == 0
    epochs = [line.split(",")[0] for line in (run / "logs" / "metrics.csv").read_text().splitlines()[1:]]
    assert sorted(set(epochs)) == ["0", "1"]  # epoch 0 was not trained again
    assert epochs.count("0") == epochs.count("1")


def test_one_cycle_rises_then_decays_to_nearly_nothing():
    from ewaste_vision.training.modules import one_cycle

    factors = [one_cycle(step, 100) for step in range(101)]
    peak = factors.index(max(factors))
    assert factors[0] == pytest.approx(1 / 25) and peak == 10 and factors[peak] == pytest.approx(1.0)
    assert all(a <= b for a, b in itertools.pairwise(factors[: peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(factors[peak:]))
    assert factors[100] < 1e-4 and one_cycle(150, 100) == factors[100]  # a resumed run past the end


def test_config_file_is_used_and_flags_win(crops: Path, tmp_path: Path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("backbone: tiny\nimage_size: 32\nmax_epochs: 1\ndropout: 0.5\nseed: 7\n")
    run = tmp_path / "from-yaml"
    assert main(["train", str(crops), "--out", str(run), "--config", str(recipe), "--seed", "8"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["dropout"] == 0.5 and saved["seed"] == 8 and saved["backbone"] == "tiny"


def test_shipped_recipes_still_load():
    from ewaste_vision.config import TrainConfig, load_config_file

    recipes = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert recipes, "configs/ holds example recipes"
    for recipe in recipes:
        TrainConfig(**load_config_file(recipe))


def test_finetune_from_weights_warms_up_the_head_first(crops: Path, tmp_path: Path):
    from ewaste_vision.models.registry import create_backbone

    backbone, _ = create_backbone("tiny")
    weights = tmp_path / "tiny.pt"
    torch.save(backbone.state_dict(), weights)
    run = tmp_path / "warm"
    assert (
        main(
            [
                "train",
                str(crops),
                "--out",
                str(run),
                *FAST,
                "--strategy",
                "finetune",
                "--max-epochs",
                "1",
                "--weights",
                str(weights),
            ]
        )
        == 0
    )
    assert (run / "probe" / "logs" / "metrics.csv").is_file()  # the head was fitted on cached features
    assert (run / "logs" / "metrics.csv").is_file()
    trained = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert torch.equal(trained["backbone.stages.0.0.weight"], backbone.state_dict()["stages.0.0.weight"])
    assert not torch.equal(trained["backbone.stages.3.0.weight"], backbone.state_dict()["stages.3.0.weight"])
    assert "file" in (run / "report.md").read_text()  # where the weights came from is reported


def test_evaluate_on_another_dataset_writes_beside_the_run(trained_run: Path, crops: Path):
    assert main(["evaluate", str(trained_run), "--data", str(crops), "--split", "all"]) == 0
    out = trained_run / "eval" / f"{crops.name}-all"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 8 * 14
    assert (out / "report.md").is_file()
