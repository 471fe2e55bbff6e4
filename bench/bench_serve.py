"""Serving under load: `/classify` requests from 1, 4 and 16 concurrent clients over loopback.

The app is built in this process over a classify run and launched on 127.0.0.1 (a free port);
clients are threads calling it through `gradio_client`, one image per request. Two servers are
measured in turn, the same in all but the queue's `max_batch_size`:

    unbatched   max_batch_size=1: one request per model call, the plain baseline
    batched     max_batch_size=16 (the product default): the queue merges waiting requests
                into one model call, so throughput should rise with clients

For each, the throughput (requests/s), p50 and p95 latency, failed requests and the mean number
of requests per model call are reported, and the batched/unbatched throughput ratio per client
count. Every level is bounded in requests (`--requests` per client) and time (`--max-seconds`).

Without `--run`, an untrained classify run is written to a temporary folder (weights do not change
the speed): `--backbone` (default efficientnet_lite0 at its 256 px input) with 8 classes.

Run from the repository root:
    python bench/bench_serve.py              # ~3 minutes on 2 cores
    python bench/bench_serve.py --quick      # smoke run: tiny backbone, 2 requests per client
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS_DIR, describe, machine_facts, print_table, write_json
from ewaste_vision.app.limits import ServeLimits
from ewaste_vision.app.server import ServedApp, create_app
from ewaste_vision.hardware import configure_threads

CLIENTS = (1, 4, 16)
SERVERS = {"unbatched": 1, "batched": 16}
"""{setting: the queue's max_batch_size}."""


def write_untrained_run(folder: Path, backbone: str, num_classes: int = 8) -> Path:
    """A classify run directory with random weights, written through the public run format."""
    from ewaste_vision.models.classifier import build_classifier
    from ewaste_vision.models.registry import get_backbone_spec
    from ewaste_vision.runs import ModelMeta, save_model

    spec = get_backbone_spec(backbone)
    model, _ = build_classifier(backbone, num_classes, pretrained=False)
    meta = ModelMeta(
        task="classify",
        class_names=[f"class_{k}" for k in range(num_classes)],
        backbone=backbone,
        image_size=spec.input_size,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_model(folder, model.state_dict(), meta)
    return folder


def write_request_images(folder: Path, count: int, size: int) -> list[Path]:
    """Distinct JPEG photos of `size` px, one per request slot."""
    from ewaste_vision.data.synth import write_component_crops

    root = write_component_crops(folder, n_per_class=max(1, count // 8 + 1), seed=0, size=size)
    return sorted(root.rglob("*.jpg"))[:count]


def count_batches(app: ServedApp) -> list[int]:
    """Wrap the app's dispatcher so every model call appends its number of requests."""
    sizes: list[int] = []
    lock = threading.Lock()
    original: Callable[..., Any] = app.dispatcher.run

    def counted(task: str, models: Sequence[str | None], *args: Any, **kwargs: Any) -> Any:
        with lock:
            sizes.append(len(models))
        return original(task, models, *args, **kwargs)

    app.dispatcher.run = counted  # type: ignore[method-assign]
    return sizes


def load_level(
    sessions: Sequence[Any], model: str, images: list[Path], clients: int, requests: int, max_seconds: float
) -> dict[str, Any]:
    """`clients` threads, each with its own client session, sending `requests` each (or until
    `max_seconds`); latencies and failures."""
    from gradio_client import handle_file

    deadline = time.perf_counter() + max_seconds
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for number in range(requests):
            if time.perf_counter() > deadline:
                return
            image = images[(index * requests + number) % len(images)]
            started = time.perf_counter()
            try:
                result, _ = sessions[index].predict(model, [handle_file(str(image))], api_name="/classify")
                problem = result.get("error")
            except Exception as exc:  # a failed request is counted and reported, never hidden
                problem = f"{type(exc).__name__}: {exc}"
            with lock:
                latencies.append(time.perf_counter() - started)
                if problem:
                    failures.append(str(problem))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "failed": len(failures),
        "failures": failures[:5],
        "seconds": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 3) if wall > 0 else 0.0,
        "p50_s": round(float(np.percentile(latencies, 50)), 4) if latencies else None,
        "p95_s": round(float(np.percentile(latencies, 95)), 4) if latencies else None,
        "latencies_s": [round(value, 4) for value in latencies],
    }


def bench_server(
    run: Path,
    max_batch_size: int,
    images: list[Path],
    levels: Sequence[int],
    requests: int,
    max_seconds: float,
) -> list[dict[str, Any]]:
    """Launch one server on loopback and load it at every client count."""
    from gradio_client import Client

    app = create_app([run], ServeLimits(max_batch_size=max_batch_size, max_queue=256))
    url = app.launch("127.0.0.1", port=None, block=False, quiet=True)
    batches = count_batches(app)
    rows = []
    try:
        # One session per client thread, as separate users have (a shared one is not thread-safe).
        sessions = [Client(url, verbose=False) for _ in range(max(levels))]
        model = next(iter(app.catalog))
        load_level(sessions, model, images, 1, 1, max_seconds)  # warm-up: model load, first call
        for clients in levels:
            batches.clear()
            row = load_level(sessions, model, images, clients, requests, max_seconds)
            row["mean_batch"] = round(float(np.mean(batches)), 2) if batches else None
            rows.append(row)
    finally:
        app.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a classify run to serve (default: an untrained one)")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="backbone of the untrained run")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS), help="client counts")
    parser.add_argument("--requests", type=int, default=8, help="requests per client per level")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound of each level")
    parser.add_argument("--image-size", type=int, default=640, help="side of the uploaded photos")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny backbone, 2 requests each")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "serve.json")
    args = parser.parse_args()
    if args.quick:
        args.backbone, args.requests, args.image_size, args.max_seconds = "tiny", 2, 128, 20.0
    if max(args.clients) > 64 or args.requests > 100:
        parser.error(
            "at most 64 clients and 100 requests per client: this is a loopback bench, not a load test"
        )
    configure_threads()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        run = args.run or write_untrained_run(Path(scratch) / "run", args.backbone)
        images = write_request_images(
            Path(scratch) / "images", max(args.clients) * args.requests, args.image_size
        )
        facts = machine_facts()
        results: dict[str, Any] = {"machine": facts, "settings": {k: str(v) for k, v in vars(args).items()}}
        for name, batch in SERVERS.items():
            results[name] = bench_server(run, batch, images, args.clients, args.requests, args.max_seconds)
    table = []
    for plain, batched in zip(results["unbatched"], results["batched"], strict=True):
        ratio = batched["throughput_rps"] / plain["throughput_rps"] if plain["throughput_rps"] else 0.0
        batched["ratio_vs_unbatched"] = round(ratio, 2)
        for name, row in (("unbatched", plain), ("batched", batched)):
            table.append(
                [
                    name,
                    row["clients"],
                    row["requests"],
                    row["failed"],
                    row["throughput_rps"],
                    row["p50_s"],
                    row["p95_s"],
                    row["mean_batch"],
                    row.get("ratio_vs_unbatched", ""),
                ]
            )
    print(f"/classify over loopback; {describe(facts)}")
    print_table(
        ["server", "clients", "requests", "failed", "req/s", "p50 s", "p95 s", "batch", "ratio"], table
    )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
