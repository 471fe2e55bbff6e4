"""`ewaste train --init RUN`: a run starts from another run's backbone; and the step schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ewaste_vision.cli import main
from ewaste_vision.data.synth import write_component_crops
from ewaste_vision.detect.model import build_detector
from ewaste_vision.models.classifier import build_classifier
from ewaste_vision.models.registry import get_backbone_spec
from ewaste_vision.runs import ModelMeta, read_model_file, save_model
from ewaste_vision.training.init_from_run import load_source_backbone, read_source_backbone
from ewaste_vision.training.modules import SupervisedModule, step_decay

FAST = ["--backbone", "tiny", "--image-size", "32", "--batch-size", "16", "--head-epochs", "3"]


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_component_crops(tmp_path_factory.mktemp("crops"), n_per_class=10, seed=4, size=40)


def _fake_run(run_dir: Path, task: str, backbone: str = "tiny", seed: int = 123) -> dict[str, torch.Tensor]:
    """A finished run whose weights are random but unlike any seed-0 initialisation."""
    torch.manual_seed(seed)
    if task == "detect":
        network, _ = build_detector(backbone, 2, "n", 64, pretrained=False)
    else:
        network, _ = build_classifier(backbone, 2, pretrained=False)
    state = network.state_dict()
    for name, tensor in state.items():
        if tensor.is_floating_point():
            state[name] = torch.randn_like(tensor)
    spec = get_backbone_spec(backbone)
    save_model(run_dir, state, ModelMeta(task, ["a", "b"], backbone, 64, spec.mean, spec.std))
    return state


def _backbone_tensors(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.mark.parametrize("task,prefix", [("classify", "backbone."), ("detect", "backbone.body.")])
def test_a_fresh_backbone_takes_every_tensor_of_the_source_run(tmp_path: Path, task: str, prefix: str):
    source_state = _fake_run(tmp_path / "source", task)
    model, _ = build_classifier("tiny", 5, pretrained=False)
    described = load_source_backbone(model.backbone, read_source_backbone(tmp_path / "source", "tiny"))
    expected = _backbone_tensors(source_state, prefix)
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[name], expected[name]) for name in expected)
    assert str(tmp_path / "source") in described and task in described


def test_linear_from_a_run_keeps_the_source_backbone_and_records_it(crops: Path, tmp_path: Path):
    source_state = _fake_run(tmp_path / "source", "multilabel")
    target = tmp_path / "target"
    assert main(["train", str(crops), "--out", str(target), *FAST, "--init", str(tmp_path / "source")]) == 0
    state, meta = read_model_file(target / "model.pt")
    expected = _backbone_tensors(source_state, "backbone.")
    after = _backbone_tensors(state, "backbone.")
    assert all(torch.equal(after[name], expected[name]) for name in expected)  # frozen: untouched
    assert meta.extra["init_from"].startswith(f"run {tmp_path / 'source'}")
    assert str(tmp_path / "source") in (target / "report.md").read_text()


def test_finetune_from_a_run_trains_the_tail_and_keeps_the_rest(crops: Path, tmp_path: Path):
    source_state = _fake_run(tmp_path / "source", "classify")
    target = tmp_path / "target"
    args = ["--strategy", "finetune", "--max-epochs", "2", "--no-head-warmup", "--lr", "0.01"]
    assert (
        main(["train", str(crops), "--out", str(target), *FAST, *args, "--init", str(tmp_path / "source")])
        == 0
    )
    after = _backbone_tensors(read_model_file(target / "model.pt")[0], "backbone.")
    expected = _backbone_tensors(source_state, "backbone.")
    frozen = [n for n in expected if n.startswith(("stages.0.", "stages.1."))]
    trained = [n for n in expected if n.startswith("stages.3.0.weight")]
    assert frozen and all(torch.equal(after[n], expected[n]) for n in frozen)
    assert trained and not any(torch.equal(after[n], expected[n]) for n in trained)


@pytest.mark.parametrize(
    "damage,message",
    [
        ("other_backbone", "trained with backbone 'efficientnet_lite0'"),
        ("corrupt", "corrupt or not an ewaste-vision model"),
        ("no_model", "needs a finished run"),
    ],
)
def test_a_bad_init_run_is_one_line_before_anything_is_written(
    crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
):
    source = tmp_path / "source"
    source.mkdir()
    if damage == "other_backbone":
        spec = get_backbone_spec("efficientnet_lite0")
        meta = ModelMeta("classify", ["a", "b"], "efficientnet_lite0", 64, spec.mean, spec.std)
        save_model(source, {"backbone.x": torch.zeros(1)}, meta)
    elif damage == "corrupt":
        (source / "model.pt").write_bytes(b"not a zip file at all")
    target = tmp_path / "target"
    assert main(["train", str(crops), "--out", str(target), *FAST, "--init", str(source)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(source) in err
    assert not target.exists()


def test_step_schedule_halves_the_rate_every_n_epochs():
    assert [step_decay(e, every=20, gamma=0.5) for e in (0, 19, 20, 39, 40, 75)] == [
        1,
        1,
        0.5,
        0.5,
        0.25,
        0.125,
    ]
    from ewaste_vision.tasks import get_label_task

    head = torch.nn.Linear(4, 2)
    module = SupervisedModule(
        head, get_label_task("classify"), 0.1, 0.0, lr_schedule="step", lr_step_epochs=2
    )
    configured = module.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "epoch"
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
