"""`--engine ray`: the same rows, in the same order, as the local engine; a worker killed mid-job
is replaced and every image is scored exactly once; a job killed whole resumes from its parts."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ewaste_vision.cli import main
from ewaste_vision.data.synth import write_component_crops, write_synthetic_boards

if os.environ.get("CI") != "true":
    pytest.importorskip("ray", reason='the Ray engine needs pip install -e ".[ray]"')

pytestmark = pytest.mark.slow
TINY = ["--backbone", "tiny", "--no-pretrained"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ray-runs")
    crops = write_component_crops(root / "crops", n_per_class=24, seed=3, size=40)
    boards = write_synthetic_boards(root / "boards", 12, seed=4, size=96).parent
    classify = ["--image-size", "32", "--strategy", "linear", "--head-epochs", "3"]
    detect = ["--image-size", "96", "--max-epochs", "1", "--batch-size", "4", "--no-box-classifier"]
    assert main(["train", str(crops), *classify, "--out", str(root / "classify"), *TINY]) == 0
    assert (
        main(["train", str(boards), *detect, "--task", "detect", "--out", str(root / "detect"), *TINY]) == 0
    )
    yield {"classify": root / "classify", "detect": root / "detect", "crops": crops, "boards": boards}
    import ray

    ray.shutdown()


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_predict_on_ray_gives_the_local_rows_in_order(runs: dict[str, Path], tmp_path: Path) -> None:
    # The tiny detector is barely trained: a low cut-off still gives it boxes to compare.
    for name, images in (("classify", runs["crops"]), ("detect", runs["boards"] / "train" / "images")):
        local, remote = tmp_path / f"{name}-local.csv", tmp_path / f"{name}-ray.csv"
        cut_off = ["--min-score", "0.01"] if name == "detect" else []
        assert main(["predict", str(runs[name]), str(images), "--out", str(local), *cut_off]) == 0
        command = ["predict", str(runs[name]), str(images), "--out", str(remote), *cut_off]
        assert main([*command, "--engine", "ray", "--workers", "2"]) == 0
        assert len(_rows(local)) > 10
        assert _rows(remote) == _rows(local)
        assert not remote.with_name(remote.name + ".parts").exists()  # removed once the file is whole


def test_parquet_output_holds_the_csv_rows(runs: dict[str, Path], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out, reference = tmp_path / "p.parquet", tmp_path / "p.csv"
    assert main(["predict", str(runs["classify"]), str(runs["crops"]), "--out", str(reference)]) == 0
    assert (
        main(["predict", str(runs["classify"]), str(runs["crops"]), "--out", str(out), "--engine", "ray"])
        == 0
    )
    table = pq.read_table(out).to_pylist()
    _, *rows = _rows(reference)
    assert [row["file"] for row in table] == [row[0] for row in rows]
    assert [round(row["prob1"], 4) for row in table] == [float(row[2]) for row in rows]


def test_value_and_evaluate_on_ray_match_local(runs: dict[str, Path], tmp_path: Path) -> None:
    images = runs["boards"] / "test" / "images"
    assert main(["value", str(runs["detect"]), str(images), "--out", str(tmp_path / "local")]) == 0
    assert (
        main(["value", str(runs["detect"]), str(images), "--out", str(tmp_path / "ray"), "--engine", "ray"])
        == 0
    )
    local_csv, ray_csv = (next((tmp_path / name).glob("*.csv")) for name in ("local", "ray"))
    assert _rows(ray_csv) == _rows(local_csv)

    assert main(["evaluate", str(runs["classify"])]) == 0
    local_metrics = json.loads((runs["classify"] / "metrics.json").read_text())
    assert main(["evaluate", str(runs["classify"]), "--engine", "ray", "--workers", "2"]) == 0
    ray_metrics = json.loads((runs["classify"] / "metrics.json").read_text())
    assert ray_metrics["accuracy"] == local_metrics["accuracy"]
    assert ray_metrics["per_class"] == local_metrics["per_class"]


def _predict_process(run: Path, images: Path, out: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "ewaste_vision.cli", "predict", str(run), str(images)]
    command += ["--out", str(out), "--engine", "ray", "--workers", "1"]
    return subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def _wait_for(condition, seconds: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the Ray job"
        time.sleep(0.2)


def test_a_killed_worker_is_replaced_and_every_image_scored_once(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    reference, out, pids = tmp_path / "local.csv", tmp_path / "ray.csv", tmp_path / "pids"
    assert main(["predict", str(runs["classify"]), str(runs["crops"]), "--out", str(reference)]) == 0
    env = {"EWASTE_RAY_PID_DIR": str(pids), "EWASTE_RAY_SHARD_DELAY_S": "1.5"}
    job = _predict_process(runs["classify"], runs["crops"], out, env)
    parts = out.with_name(out.name + ".parts")
    _wait_for(lambda: len(list(parts.glob("shard-*.json"))) >= 1, 120)
    first = int(next(pids.glob("*.pid")).stem)
    os.kill(first, signal.SIGKILL)
    _, stderr = job.communicate(timeout=240)
    assert job.returncode == 0, stderr[-2000:]
    assert len(list(pids.glob("*.pid"))) >= 2  # a new worker took over from the killed one
    rows = _rows(out)
    files = [row[0] for row in rows[1:]]
    assert len(files) == len(set(files))  # exactly once each
    assert rows == _rows(reference)


def test_a_killed_job_resumes_without_redoing_finished_shards(runs: dict[str, Path], tmp_path: Path) -> None:
    reference, out = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert main(["predict", str(runs["classify"]), str(runs["crops"]), "--out", str(reference)]) == 0
    job = _predict_process(runs["classify"], runs["crops"], out, {"EWASTE_RAY_SHARD_DELAY_S": "1.5"})
    parts = out.with_name(out.name + ".parts")
    _wait_for(lambda: len(list(parts.glob("shard-*.json"))) >= 2, 120)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and the Ray instance it started
    job.wait(timeout=30)
    finished = len(list(parts.glob("shard-*.json")))
    assert not out.exists()
    resumed = _predict_process(runs["classify"], runs["crops"], out, {})
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr[-2000:]
    total = -(-(len(_rows(reference)) - 1) // 32)
    assert f"resumed {finished} of {total} shards" in stderr
    assert _rows(out) == _rows(reference)


def test_asking_for_gpus_a_cluster_lacks_is_one_line(runs: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    command = ["predict", str(runs["classify"]), str(runs["crops"]), "--engine", "ray", "--workers", "2"]
    assert main([*command, "--gpus-per-worker", "1000"]) == 2
    error = capsys.readouterr().err
    assert "--workers 2 with --gpus-per-worker 1000 ask for 2000 GPUs and the Ray cluster has" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_unknown_engine_and_uri_without_ray_are_one_line_errors(runs: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["predict", str(runs["classify"]), "s3://bucket/boards/"]) == 2
    assert "only with --engine ray" in capsys.readouterr().err
    from ewaste_vision.errors import UserError
    from ewaste_vision.predict import predict_paths

    with pytest.raises(UserError, match="unknown engine 'spark'; choose one of: local, ray"):
        predict_paths(runs["classify"], [runs["crops"]], engine="spark")


def test_a_remote_file_that_cannot_be_copied_is_skipped_not_fatal(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from pyarrow import fs as pafs

    from ewaste_vision.engines import ray_engine

    class OneClass:  # the predictor's file interface, without a model
        def predict_files(self, paths, progress=False):  # type: ignore[no-untyped-def]
            return np.ones((len(paths), 1), dtype=np.float32), list(paths), []

    small, big = tmp_path / "small.png", tmp_path / "big.png"
    small.write_bytes(b"x" * 10)
    big.write_bytes(b"x" * 11)

    class RemoteIsLocal:  # stands in for pyarrow's FileSystem: no test touches a network
        @staticmethod
        def from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
            if not uri.startswith("remote://"):
                raise ValueError(f"unknown scheme in {uri}")
            return pafs.LocalFileSystem(), uri.removeprefix("remote://")

    monkeypatch.setattr(pafs, "FileSystem", RemoteIsLocal)
    monkeypatch.setattr(ray_engine, "MAX_REMOTE_FILE_BYTES", 10)
    scorer = object.__new__(ray_engine.ShardScorer)
    scorer.kind, scorer.model, scorer.delay, scorer.job_images = "labels", OneClass(), 0.0, 0
    names = [
        f"remote://{small}",
        f"remote://{big}",
        "nowhere://bucket/a.png",
        f"remote://{tmp_path}/gone.png",
    ]
    result = json.loads(scorer.score(names))
    assert [row["path"] for row in result["images"]] == [names[0]]
    assert [name for name, _ in result["skipped"]] == names[1:]
    assert "over 10 bytes" in result["skipped"][0][1]
