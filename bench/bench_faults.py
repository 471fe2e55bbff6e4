"""SIGKILL `ewaste train` at many random points, resume each with `--resume`, compare with a run that
was never stopped; the same for `ewaste value` over a lot (killed, run again).

tests/test_faults.py kills each command once at a seeded point; this repeats the kills at `--kills`
points drawn from one seed, over longer runs, and reports how many resumed runs matched the
uninterrupted one exactly (same files, same weights, same metrics) and how many left a temporary or
cut-off file.

Run from the repository root (about 1 minute per kill on 2 idle cores; JSON to bench/results):
    python bench/bench_faults.py --kills 10 --epochs 8
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import RESULTS_DIR, describe, machine_facts, write_json
from ewaste_vision.data.synth import write_synthetic_boards
from fault_runs import (
    assert_same_run,
    assert_same_tables,
    ewaste,
    kill_when,
    run_ok,
    temporary_files,
    write_colour_classes,
)


def train_args(epochs: int) -> list[str]:
    return [
        *("--backbone", "tiny", "--no-pretrained", "--image-size", "32", "--strategy", "full"),
        *("--max-epochs", str(epochs), "--batch-size", "4", "--precision", "32", "--seed", "0"),
        *("--patience", str(epochs)),
    ]


def bench_train(root: Path, kills: int, epochs: int, rng: random.Random) -> dict[str, Any]:
    data = write_colour_classes(root / "colours", per_class=16)
    whole = root / "whole"
    started = time.perf_counter()
    run_ok(ewaste("train", str(data), "--out", str(whole), *train_args(epochs)))
    duration = time.perf_counter() - started
    outcomes = []
    for kill in range(kills):
        out = root / f"killed{kill}"
        # Anywhere in the first 90% of an uninterrupted run's time, set-up and evaluation included
        # (the load of a shared machine varies, so a later point may find the run finished).
        delay = rng.uniform(0.05, 0.9) * duration
        code = kill_when(ewaste("train", str(data), "--out", str(out), *train_args(epochs)), None, delay)
        resumed = (out / "config.yaml").is_file()
        command = ["--resume"] if resumed else train_args(epochs)
        run_ok(ewaste("train", str(data), "--out", str(out), *command))
        outcome = {"delay_s": round(delay, 2), "killed": code == -9, "resumed": resumed}
        outcome["temporary_files"] = temporary_files(out)
        try:
            assert_same_run(whole, out)
            outcome["same"] = True
        except AssertionError as error:
            outcome["same"], outcome["difference"] = False, str(error)[:300]
        print(outcome, flush=True)
        outcomes.append(outcome)
    return {"uninterrupted_s": round(duration, 1), "kills": outcomes}


def bench_value(root: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    boards = write_synthetic_boards(root / "boards", n=24, seed=3, size=96).parent
    run = root / "detect"
    tiny = ["--backbone", "tiny", "--no-pretrained", "--image-size", "96", "--max-epochs", "1"]
    run_ok(ewaste("train", str(boards), "--task", "detect", "--out", str(run), *tiny, "--batch-size", "4"))
    lot = boards / "train" / "images"
    whole = root / "lot-whole"
    started = time.perf_counter()
    run_ok(ewaste("value", str(run), str(lot), "--out", str(whole)))
    duration = time.perf_counter() - started
    outcomes = []
    for kill in range(kills):
        out = root / f"lot-killed{kill}"
        delay = rng.uniform(0.05, 0.9) * duration
        code = kill_when(ewaste("value", str(run), str(lot), "--out", str(out)), None, delay)
        run_ok(ewaste("value", str(run), str(lot), "--out", str(out)))
        outcome = {"delay_s": round(delay, 2), "killed": code == -9, "temporary_files": temporary_files(out)}
        try:
            assert_same_tables(whole, out, replace=(str(whole), str(out)))
            outcome["same"] = True
        except AssertionError as error:
            outcome["same"], outcome["difference"] = False, str(error)[:300]
        print(outcome, flush=True)
        outcomes.append(outcome)
    return {"uninterrupted_s": round(duration, 1), "kills": outcomes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="kills per command")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    args = parser.parse_args(argv)
    facts = machine_facts()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        results = {
            "command": "python bench/bench_faults.py " + " ".join(sys.argv[1:]),
            "machine": facts,
            "train": bench_train(Path(scratch) / "train", args.kills, args.epochs, rng),
            "value": bench_value(Path(scratch) / "value", args.kills, rng),
        }
    for name in ("train", "value"):
        kills = results[name]["kills"]
        same = sum(outcome["same"] for outcome in kills)
        left = sum(bool(outcome["temporary_files"]) for outcome in kills)
        print(
            f"{name}: {same}/{len(kills)} killed runs ended as the uninterrupted one; {left} left temp files"
        )
    print(f"machine: {describe(facts)}")
    write_json(RESULTS_DIR / "faults.json", results)


if __name__ == "__main__":
    main()
