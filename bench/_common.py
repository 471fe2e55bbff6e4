"""Small helpers shared by the bench scripts: machine facts, timing, tables and JSON results."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model_name() -> str:
    """The `Model name` line of lscpu (read from /proc/cpuinfo, which lscpu also reads)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    """What a reader needs to compare figures across machines."""
    from ewaste_vision.hardware import bf16_supported

    return {
        "date": dt.date.today().isoformat(),
        "cpu": cpu_model_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_native": bf16_supported(),
        # The machine may be shared; the 1-minute load average says how much others were running.
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def describe(facts: dict[str, Any]) -> str:
    """One line of machine facts for a table's caption."""
    return (
        f"{facts['cpu']}, {facts['cores']} cores, {facts['torch_threads']} threads, "
        f"torch {facts['torch']}, load average {facts['load_average_1min']}"
    )


def time_call(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def time_interleaved(
    candidates: Mapping[str, Callable[[], object]], iterations: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Per-call seconds of every candidate, called in turn within each iteration.

    Alternating the candidates spreads the noise of a shared machine (other jobs, clock changes)
    over all of them alike, so their ratio stays fair even when absolute figures drift.
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(iterations):
        for name, fn in candidates.items():
            seconds[name].append(time_call(fn))
    return seconds


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain, aligned text table (also valid Markdown)."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\n".join(lines))


def verdict(row: dict[str, Any], target_ratio: float) -> str:
    """`met` or `MISSED` for the product's row; blank for the others, which have no target."""
    if row["path"] != "product":
        return ""
    return "met" if float(row["ratio_vs_plain"]) >= target_ratio else "MISSED"


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Write `results` to `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results written to {path}")


def pooled_accuracy(per_file: Sequence[tuple[float, int]]) -> list[str]:
    """Table cells for one row pooled over several seeds' results: (accuracy, n) per file ->
    [n, accuracy, Wilson 95% interval, the per-file accuracies]. Correct answers are summed, so
    each test image counts once whatever its file."""
    from ewaste_vision.report.stats import wilson_interval

    hits = sum(round(accuracy * n) for accuracy, n in per_file)
    n = sum(n for _, n in per_file)
    if n == 0:
        return ["0", "-", "-", ""]
    low, high = wilson_interval(hits, n)
    per_seed = " ".join(f"{accuracy:.3f}" for accuracy, _ in per_file)
    return [str(n), f"{hits / n:.3f}", f"{low:.3f}-{high:.3f}", per_seed]
