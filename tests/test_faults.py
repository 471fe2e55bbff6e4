"""Faults: `ewaste train`, `ewaste value` and `ewaste serve` killed with SIGKILL at a random point.

A killed training run continued with `--resume` ends with the same files, the same weights and the
same metrics as a run of the same seed that was never stopped (each epoch's order, augmentations
and dropout are a function of the seed and the epoch: `training/resumable.py`); a killed lot
valuation run again detects only the boards it had not finished and gives the same tables; a
killed server leaves no half-written result file and serves again after a restart. The kill
points are seeded; `bench/bench_faults.py` repeats the kills at many points.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from ewaste_vision.cli import main
from ewaste_vision.data.synth import write_synthetic_boards
from fault_runs import (
    assert_same_run,
    assert_same_tables,
    complete_csv_rows,
    ewaste,
    kill_when,
    quiet_env,
    run_ok,
    temporary_files,
    write_colour_classes,
)

TRAIN = ["--backbone", "tiny", "--no-pretrained", "--image-size", "32", "--strategy", "full"]
TRAIN += ["--max-epochs", "6", "--batch-size", "4", "--precision", "32", "--seed", "0"]


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_run(tmp_path: Path):
    # Enough steps per epoch that an idle machine cannot finish the run inside the kill delay.
    data = write_colour_classes(tmp_path / "colours", per_class=40)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = subprocess.Popen(ewaste("train", str(data), "--out", str(whole), *TRAIN), env=quiet_env())
    last = killed / "checkpoints" / "last.ckpt"
    # Killed at a seeded random moment after the first epoch's checkpoint: mid-epoch, mid-write.
    delay = random.Random(24).uniform(0.0, 0.3)
    code = kill_when(ewaste("train", str(data), "--out", str(killed), *TRAIN), last.is_file, delay)
    assert code == -9, "the run finished before it could be killed"
    assert not (killed / "model.pt").exists() and not (killed / "metrics.json").exists()
    run_ok(ewaste("train", str(data), "--out", str(killed), "--resume"))
    assert uninterrupted.wait(timeout=300) == 0
    assert temporary_files(killed) == [] and temporary_files(whole) == []
    assert_same_run(whole, killed)


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-epoch tiny detector and a lot of 72 boards (12 boards six times: three shards)."""
    root = tmp_path_factory.mktemp("value")
    boards = write_synthetic_boards(root / "boards", n=16, seed=3, size=96).parent
    run = root / "detect"
    args = ["--task", "detect", "--image-size", "96", "--max-epochs", "1", "--batch-size", "4"]
    tiny = ["--backbone", "tiny", "--no-pretrained"]
    assert main(["train", str(boards), "--out", str(run), *tiny, *args]) == 0
    lot = root / "lot"
    lot.mkdir()
    for index, image in enumerate(sorted((boards / "train" / "images").iterdir())[:12] * 6):
        (lot / f"board{index:02d}.png").write_bytes(image.read_bytes())
    return run, lot


@pytest.mark.slow
def test_killed_lot_valuation_leaves_nothing_half_written(detector: tuple[Path, Path], tmp_path: Path):
    run, lot = detector
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_ok(ewaste("value", str(run), str(lot), "--out", str(whole)))
    # Killed at a seeded point just after its first shard of 32 boards was saved: mid-lot.
    first_shard = killed / ".parts" / "shard-000000.json"
    delay = random.Random(7).uniform(0.0, 0.2)
    code = kill_when(ewaste("value", str(run), str(lot), "--out", str(killed)), first_shard.is_file, delay)
    assert code == -9, "the valuation finished before it could be killed"
    saved = len(list((killed / ".parts").glob("shard-*.json")))
    assert 1 <= saved < 3
    # Whatever was there at the kill is complete: atomic writes leave a file whole or absent.
    for path in killed.rglob("*.csv"):
        complete_csv_rows(path)
    resumed = run_ok(ewaste("value", str(run), str(lot), "--out", str(killed)))
    assert f"resumed {saved} of 3 shards" in resumed.stderr  # the finished boards were not redone
    assert temporary_files(killed) == []
    assert_same_tables(whole, killed, replace=(str(whole), str(killed)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(run: Path, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ewaste("serve", str(run), "--port", str(port)),
        env=quiet_env(TMPDIR=str(tmp)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _client(port: int, server: subprocess.Popen[bytes], timeout_s: float = 180) -> object:
    gradio_client = pytest.importorskip("gradio_client")
    deadline = time.monotonic() + timeout_s
    while True:
        assert server.poll() is None, "the server stopped"
        try:
            return gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:  # not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.slow
def test_killed_server_leaves_whole_results_and_serves_after_a_restart(tmp_path: Path):
    gradio_client = pytest.importorskip("gradio_client")
    pytest.importorskip("gradio")
    data = write_colour_classes(tmp_path / "colours", per_class=8)
    run = tmp_path / "classify"
    linear = ["--backbone", "tiny", "--no-pretrained", "--image-size", "32", "--head-epochs", "2"]
    assert main(["train", str(data), "--out", str(run), *linear]) == 0
    images = [gradio_client.handle_file(str(path)) for path in sorted(data.rglob("*.png"))[:4]]
    served_tmp = tmp_path / "served"
    served_tmp.mkdir()

    port = _free_port()
    server = _serve(run, port, served_tmp)
    try:
        client = _client(port, server)
        result, _ = client.predict("classify", images, api_name="/classify")  # type: ignore[attr-defined]
        assert len(result["images"]) == 4
        # Killed while the next request is being answered (seeded delay after it was sent).
        client.submit("classify", images, api_name="/classify")  # type: ignore[attr-defined]
        time.sleep(random.Random(3).uniform(0.0, 0.5))
    finally:
        server.kill()
        server.wait()

    tables = list(served_tmp.rglob("results.csv"))
    assert tables, "the first request wrote no results.csv"
    for table in tables:
        assert complete_csv_rows(table)[0][:2] == ["file", "predicted"]
    for picture in served_tmp.rglob("*.png"):
        with Image.open(picture) as image:
            image.load()  # a cut-off PNG raises here

    port = _free_port()
    server = _serve(run, port, served_tmp)
    try:
        client = _client(port, server)
        result, table = client.predict("classify", images, api_name="/classify")  # type: ignore[attr-defined]
        assert len(result["images"]) == 4 and "error" not in result
        assert len(complete_csv_rows(Path(table))) == 5
    finally:
        server.terminate()  # SIGTERM: the server removes its request folders and exits
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_a_resumed_log_keeps_each_row_once_when_the_kill_fell_between_a_row_and_its_checkpoint(
    tmp_path: Path,
):
    # The interrupted run logged epoch 1's validation row (step 41), then was killed before its
    # train row; resumed from the checkpoint saved at step 41, the run logs both rows again.
    from ewaste_vision.training.trainer import fit_keeping_log

    header = "epoch,step,train_loss,val_acc,val_loss\n"
    before = ["0,20,,1.0,0.52\n", "0,20,0.82,,\n", "1,41,,1.0,0.07\n"]
    after = ["1,41,,1.0,0.07\n", "1,41,0.37,,\n", "2,62,,1.0,0.03\n", "2,62,0.29,,\n"]
    log = tmp_path / "logs" / "metrics.csv"
    log.parent.mkdir()
    log.write_text(header + "".join(before))

    class RankZero:
        global_rank = 0

    def resumed_fit() -> None:  # as Lightning's CSV logger does: the file starts anew
        log.write_text(header + "".join(after))

    fit_keeping_log(RankZero(), tmp_path, resumed_fit)  # type: ignore[arg-type]
    assert log.read_text() == header + "".join(before[:2] + after)
