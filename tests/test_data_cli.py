"""`ewaste data check` and `ewaste data synth-pcb` from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from ewaste_vision.cli import main


def test_data_check_reports_counts_broken_files_and_duplicates(tmp_path: Path, make_image, capsys):
    data = tmp_path / "data"
    for name in ("cats", "dogs"):
        for i in range(3):
            make_image(data / name / f"{i}.png", seed=hash((name, i)) % 1000)
    shutil.copy(data / "cats" / "0.png", data / "dogs" / "copy.png")
    (data / "dogs" / "bad.jpg").write_bytes(b"nope")
    assert main(["data", "check", str(data), "--json", str(tmp_path / "check.json")]) == 0
    out = capsys.readouterr().out
    assert "cats" in out and "dogs" in out and "bad.jpg" in out
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["unreadable"] and report["exact_duplicates"]


def test_synth_pcb_writes_a_yolo_tree(tmp_path: Path):
    assert main(["data", "synth-pcb", "--out", str(tmp_path / "boards"), "-n", "6", "--size", "128"]) == 0
    spec = yaml.safe_load((tmp_path / "boards" / "data.yaml").read_text())
    assert len(spec["names"]) == 8
    images = list((tmp_path / "boards").rglob("*.jpg"))
    labels = list((tmp_path / "boards").rglob("*.txt"))
    assert len(images) == 6 and len(labels) == 6
