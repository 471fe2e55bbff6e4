"""Why the crawl does not use icrawler's own downloader: both fetch one URL list from loopback hosts.

One host on 127.0.0.1 serves a robots.txt that disallows `/private/`, two images, one image under
`/private/`, and one image that takes 3 s to answer. icrawler's `UrlListCrawler` (its threads,
its downloader) and `ewaste data crawl` (`urls:`, `delay_s: 0.5`, `timeout_s: 1`, `retries: 1`)
fetch the same list; the table says what each asked the host for, the shortest gap between two
requests, and the wall time. Nothing leaves the machine.

    python bench/bench_crawl.py
"""

from __future__ import annotations

import io
import itertools
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import RESULTS_DIR, describe, machine_facts, print_table, write_json
from ewaste_vision.collect.crawl import crawl
from fixtures_http import FixtureHost, Route, serving


def jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 80), (shade, 40, 200 - shade)).save(buffer, "JPEG")
    return buffer.getvalue()


def host() -> FixtureHost:
    return FixtureHost(
        {
            "/robots.txt": Route(b"User-agent: *\nDisallow: /private/\n", "text/plain"),
            "/a.jpg": Route(jpeg(10), "image/jpeg"),
            "/b.jpg": Route(jpeg(90), "image/jpeg"),
            "/private/c.jpg": Route(jpeg(150), "image/jpeg"),
            "/slow.jpg": Route(jpeg(200), "image/jpeg", delay_s=3.0),
        }
    )


def run_icrawler(server: FixtureHost, urls: list[str], folder: Path) -> float:
    from icrawler.builtin import UrlListCrawler

    crawler = UrlListCrawler(
        downloader_threads=1, storage={"root_dir": str(folder)}, log_level=logging.CRITICAL
    )
    started = time.perf_counter()
    crawler.crawl(urls, max_num=len(urls))
    return time.perf_counter() - started


def run_ewaste(server: FixtureHost, urls: list[str], folder: Path) -> float:
    queries = folder / "queries.yaml"
    plan = {
        "delay_s": 0.5,
        "timeout_s": 1.0,
        "retries": 1,
        "backoff_s": 0.5,
        "classes": {"things": {"urls": urls, "max": len(urls)}},
    }
    queries.write_text(yaml.safe_dump(plan), encoding="utf-8")
    started = time.perf_counter()
    crawl(queries, folder / "out")
    return time.perf_counter() - started


def main() -> None:
    rows, results = [], {}
    for name, runner in (("icrawler UrlListCrawler", run_icrawler), ("ewaste data crawl", run_ewaste)):
        server = host()
        urls = [server.url(path) for path in ("/a.jpg", "/private/c.jpg", "/b.jpg", "/slow.jpg")]
        with serving(server), tempfile.TemporaryDirectory() as folder:
            seconds = runner(server, urls, Path(folder))
        gaps = [later - earlier for earlier, later in itertools.pairwise(server.times)]
        results[name] = {
            "requests": server.requests,
            "robots_read": "/robots.txt" in server.requests,
            "disallowed_fetched": "/private/c.jpg" in server.requests,
            "shortest_gap_s": round(min(gaps), 3) if gaps else None,
            "wall_s": round(seconds, 2),
        }
        r = results[name]
        rows.append(
            [
                name,
                " ".join(r["requests"]),
                r["robots_read"],
                r["disallowed_fetched"],
                r["shortest_gap_s"],
                r["wall_s"],
            ]
        )
    facts = machine_facts()
    print(describe(facts))
    print_table(
        [
            "crawler",
            "requests, in order",
            "robots.txt read",
            "disallowed fetched",
            "shortest gap s",
            "wall s",
        ],
        rows,
    )
    write_json(RESULTS_DIR / "crawl.json", {"machine": facts, "results": results})


if __name__ == "__main__":
    main()
