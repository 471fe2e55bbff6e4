"""Serving under load: `/classify` requests from 1, 4 and 16 concurrent clients over loopback.

The server runs in its own process, as deployed (`create_app` + `launch` on 127.0.0.1, a free port);
clients are threads of this process speaking the documented HTTP API with plain `httpx` (upload,
call, read the event stream), one image per request. `gradio_client` is deliberately not the load
generator: it also downloads every returned file and does its own bookkeeping, and on 2 cores a
client that heavy takes the CPU the server is being measured on. Two servers are measured in turn,
the same in all but the queue's `max_batch_size`:

    unbatched   max_batch_size=1: one request per model call, the plain baseline
    batched     max_batch_size=16 (the product default): the queue merges waiting requests
                into one model call, so throughput should rise with clients

For each, the throughput (requests/s), p50 and p95 latency, failed requests and the mean number
of requests per model call (counted inside the server process) are reported, and the
batched/unbatched throughput ratio per client count. Every level is bounded in requests
(`--requests` per client) and time (`--max-seconds`).

Without `--run`, an untrained classify run is written to a temporary folder (weights do not change
the speed): `--backbone` (default efficientnet_lite0 at its 256 px input) with 8 classes.

Run from the repository root:
    python bench/bench_serve.py              # ~3 minutes on 2 cores
    python bench/bench_serve.py --quick      # smoke run: tiny backbone, 2 requests per client
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS_DIR, describe, machine_facts, print_table, write_json
from ewaste_vision.app.uploads import safe_name
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


def serve(run: Path, max_batch_size: int, port: int, batch_sizes: Any) -> None:
    """Server process: the app over `run`, every model call's request count put on `batch_sizes`."""
    from ewaste_vision.app.limits import ServeLimits
    from ewaste_vision.app.server import create_app

    configure_threads()
    app = create_app([run], ServeLimits(max_batch_size=max_batch_size, max_queue=256))
    original: Callable[..., Any] = app.dispatcher.run

    def counted(task: str, models: Sequence[str | None], *args: Any, **kwargs: Any) -> Any:
        batch_sizes.put(len(models))
        return original(task, models, *args, **kwargs)

    app.dispatcher.run = counted  # type: ignore[method-assign]
    app.launch("127.0.0.1", port=port, block=True, quiet=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def classify_over_http(client: Any, url: str, model: str, image: Path) -> str | None:
    """One `/classify` request through the HTTP API; the problem, or None when it succeeded."""
    with image.open("rb") as handle:
        upload = client.post(f"{url}/gradio_api/upload", files={"files": (image.name, handle, "image/jpeg")})
    upload.raise_for_status()
    file = {"path": upload.json()[0], "meta": {"_type": "gradio.FileData"}}
    call = client.post(f"{url}/gradio_api/call/classify", json={"data": [model, [file]]})
    call.raise_for_status()
    event = None
    with client.stream("GET", f"{url}/gradio_api/call/classify/{call.json()['event_id']}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:") and event == "complete":
                result = json.loads(line.removeprefix("data:"))[0]
                return str(result["error"]) if result.get("error") else None
            elif line.startswith("data:") and event == "error":
                return f"server error: {line.removeprefix('data:').strip()[:200]}"
    return "the event stream ended without a result"


def load_level(
    url: str, model: str, images: list[Path], clients: int, requests: int, max_seconds: float
) -> dict[str, Any]:
    """`clients` threads, each with its own HTTP connection, sending `requests` each (or until
    `max_seconds`); latencies and failures."""
    import httpx

    deadline = time.perf_counter() + max_seconds
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        with httpx.Client(timeout=120.0) as client:
            for number in range(requests):
                if time.perf_counter() > deadline:
                    return
                image = images[(index * requests + number) % len(images)]
                started = time.perf_counter()
                try:
                    problem = classify_over_http(client, url, model, image)
                except Exception as exc:  # a failed request is counted and reported, never hidden
                    problem = f"{type(exc).__name__}: {exc}"
                with lock:
                    latencies.append(time.perf_counter() - started)
                    if problem:
                        failures.append(problem)

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


def wait_until_up(url: str, server: Any, seconds: float = 180.0) -> None:
    import httpx

    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if not server.is_alive():
            raise SystemExit(f"the server process exited with code {server.exitcode}")
        try:
            if httpx.get(f"{url}/", timeout=5.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer at {url} within {seconds:.0f} s")


def drain(batch_sizes: Any) -> list[int]:
    sizes = []
    while not batch_sizes.empty():
        sizes.append(batch_sizes.get())
    return sizes


def bench_server(
    run: Path,
    max_batch_size: int,
    images: list[Path],
    levels: Sequence[int],
    requests: int,
    max_seconds: float,
) -> list[dict[str, Any]]:
    """Start one server process on loopback and load it at every client count."""
    context = multiprocessing.get_context("spawn")
    batch_sizes = context.Queue()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = context.Process(target=serve, args=(run, max_batch_size, port, batch_sizes), daemon=True)
    server.start()
    model = safe_name(run.resolve().name)  # the name the app serves a single run under
    rows = []
    try:
        wait_until_up(url, server)
        load_level(url, model, images, 1, 2, max_seconds)  # warm-up: model load, first calls
        time.sleep(0.5)
        drain(batch_sizes)
        for clients in levels:
            row = load_level(url, model, images, clients, requests, max_seconds)
            time.sleep(0.2)  # let the last sizes arrive through the queue
            sizes = drain(batch_sizes)
            row["mean_batch"] = round(float(np.mean(sizes)), 2) if sizes else None
            rows.append(row)
    finally:
        server.terminate()
        server.join(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a classify run to serve (default: an untrained one)")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="backbone of the untrained run")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS), help="client counts")
    parser.add_argument("--requests", type=int, default=16, help="requests per client per level")
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
