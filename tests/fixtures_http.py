"""Web hosts on the loopback interface for the crawler tests: nothing leaves the machine.

Each `FixtureHost` is a `ThreadingHTTPServer` on 127.0.0.1 with a port of its own (port 0: the
kernel picks a free one), so several of them stand for several hosts. A `SilentHost` accepts TCP
connections and never answers, like a host whose server hangs.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from PIL import ExifTags, Image

from conftest import draw_shapes


@dataclass(frozen=True)
class Route:
    """What a host answers for one path.

    Attributes:
        body: the response body.
        content_type: the Content-Type header.
        status: the HTTP status.
        delay_s: seconds to wait before answering (a slow host).
        headers: more headers.
    """

    body: bytes = b""
    content_type: str = "text/html"
    status: int = 200
    delay_s: float = 0.0
    headers: Mapping[str, str] | None = None


class FixtureHost:
    """An HTTP host on 127.0.0.1 serving `routes` (path with query -> Route); others get 404.

    `requests` lists the request paths in the order they arrived; `times` when (monotonic).
    """

    def __init__(self, routes: Mapping[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[str] = []
        self.times: list[float] = []
        self.user_agents: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests.append(self.path)
                host.times.append(time.monotonic())
                host.user_agents.append(self.headers.get("User-Agent", ""))
                route = host.routes.get(self.path) or host.routes.get(self.path.split("?")[0])
                route = route or Route(b"not found", "text/plain", 404)
                if route.delay_s:
                    time.sleep(route.delay_s)
                try:
                    self.send_response(route.status)
                    self.send_header("Content-Type", route.content_type)
                    self.send_header("Content-Length", str(len(route.body)))
                    for name, value in (route.headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the crawler gave up waiting, as it should

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})

    def url(self, path: str) -> str:
        """Absolute URL of `path` on this host."""
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> FixtureHost:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class SilentHost:
    """Accepts connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)  # the kernel completes handshakes; nobody ever reads or answers
        self.port = self.socket.getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.socket.close()


@contextmanager
def serving(*hosts: FixtureHost) -> Iterator[tuple[FixtureHost, ...]]:
    """Start the hosts, yield them, stop them."""
    for host in hosts:
        host.start()
    try:
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def results_page(items: list[tuple[str, str, str]]) -> bytes:
    """A search results page: one `<a href=PAGE data-licence=L><img src=URL></a>` per (url, page, licence)."""
    cells = []
    for url, page, licence in items:
        licence_attribute = f' data-licence="{licence}"' if licence else ""
        cells.append(f'<div class="result"{licence_attribute}><a href="{page}"><img src="{url}"></a></div>')
    return ("<html><body>" + "\n".join(cells) + "</body></html>").encode()


def loopback_only(
    monkeypatch, allowed: Callable[[str], bool] = lambda host: host == "127.0.0.1"
) -> list[str]:
    """Make any socket connection to an address other than 127.0.0.1 fail the test; returns the list
    of addresses connected to."""
    connected: list[str] = []
    original = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        connected.append(str(host))
        if not allowed(str(host)):
            raise AssertionError(f"test tried to reach {host}; tests stay on 127.0.0.1")
        original(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return connected


TIMEOUT_S = 0.5
"""Per-request timeout in these tests; the slow host sleeps well past it, the others answer at once
(the margin is for a loaded CI machine)."""


def jpeg(seed: int, size: tuple[int, int] = (96, 80), gps: bool = False) -> bytes:
    image = draw_shapes(seed, size)
    buffer = io.BytesIO()
    exif = Image.Exif()
    if gps:
        exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
        exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 0.0)
    image.save(buffer, format="JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def write_queries(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def loopback_web(monkeypatch) -> Iterator[dict]:
    """Three hosts: `main` (search engine, robots.txt, images), `slow` (answers after the timeout)
    and `silent` (never answers), and a guard that fails any connection off 127.0.0.1."""
    connected = loopback_only(monkeypatch)
    main_host = FixtureHost()
    slow = FixtureHost()
    silent = SilentHost()
    image = lambda seed, **kw: Route(jpeg(seed, **kw), "image/jpeg")  # noqa: E731
    main_host.routes.update(
        {
            "/robots.txt": Route(b"User-agent: *\nDisallow: /private/\n", "text/plain"),
            "/img/1.jpg": image(1),
            "/img/2.jpg": image(2),
            "/img/3.jpg": image(3, gps=True),
            "/img/copy-of-1.jpg": image(1),
            "/img/listed.jpg": image(4),
            "/img/extra.jpg": image(5),
            "/img/tiny.jpg": image(6, size=(20, 20)),
            "/img/fake.jpg": Route(b"<html>not an image</html>", "image/jpeg"),
            "/private/secret.jpg": image(7),
        }
    )
    slow.routes.update(
        {
            "/robots.txt": Route(b"", "text/plain"),
            "/img/late.jpg": Route(jpeg(8), "image/jpeg", delay_s=4 * TIMEOUT_S),
        }
    )
    listing = [
        (main_host.url("/img/1.jpg"), main_host.url("/photo/1"), "CC-BY-4.0"),
        (main_host.url("/img/missing.jpg"), "", ""),
        (main_host.url("/img/fake.jpg"), "", ""),
        (main_host.url("/private/secret.jpg"), "", ""),
        (slow.url("/img/late.jpg"), "", ""),
        (silent.url("/img/never.jpg"), "", ""),
        (main_host.url("/img/tiny.jpg"), "", ""),
        (main_host.url("/img/copy-of-1.jpg"), "", ""),
        (main_host.url("/img/2.jpg"), "", "CC0-1.0"),
        (main_host.url("/img/3.jpg"), "", ""),
        (main_host.url("/img/extra.jpg"), "", ""),
    ]
    main_host.routes["/search"] = Route(results_page(listing))
    # The same without the slow and the silent host, for tests about other things.
    main_host.routes["/search-fast"] = Route(
        results_page([item for item in listing if "127.0.0.1:" + str(main_host.port) in item[0]])
    )
    with serving(main_host, slow):
        yield {"main": main_host, "slow": slow, "silent": silent, "connected": connected}
    silent.stop()


def crawl_queries(tmp_path: Path, web: dict, max_images: int = 5, bad_hosts: bool = False) -> Path:
    main_host = web["main"]
    search = "/search" if bad_hosts else "/search-fast"
    data = {
        "user_agent": "ewaste-test-crawler/1.0",
        "delay_s": 0.0,
        "timeout_s": TIMEOUT_S,
        "retries": 1,
        "backoff_s": 0.05,
        "min_resolution": [32, 32],
        "classes": {
            "phone": {
                "keywords": ['"iPhone 6" backside'],
                "max": max_images,
                "urls": [main_host.url("/img/listed.jpg")],
                "engine": {"results_url": main_host.url(search + "?q={query}")},
            }
        },
    }
    return write_queries(tmp_path / "queries.yaml", data)
