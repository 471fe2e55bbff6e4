"""`ewaste demo`: the main job end to end with no data and no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ewaste_vision.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "demo" / "runs" / "components"
    assert str(run / "report.md") in out
    metrics = json.loads((run / "metrics.json").read_text())
    # Eight synthetic component classes: the pretrained offline backbone must be far above chance.
    assert metrics["accuracy"] > 0.6 > metrics["baseline_accuracy"]
    assert (tmp_path / "demo" / "data" / "boards" / "data.yaml").is_file()
