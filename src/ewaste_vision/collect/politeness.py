"""Polite HTTP: robots.txt, a delay between requests to one host, retries with back-off, time limits.

Every request of a crawl, results pages and robots.txt included, goes through one `PoliteFetcher`:

- robots.txt is read once per host (`urllib.robotparser`) and obeyed, as RFC 9309 says: a
  missing one (4xx) allows everything, an unreachable one (5xx, timeout) forbids everything, and a
  `Crawl-delay` longer than ours is honoured (up to `MAX_CRAWL_DELAY_S`);
- two requests to one host are at least `delay_s` apart, retries included;
- a failed request (timeout, refused connection, 429, 5xx) is tried again `retries` times after
  `backoff_s`, 2 x `backoff_s`, 4 x ... (a `Retry-After` header longer than that is honoured up to
  `MAX_RETRY_AFTER_S`);
- each try is bounded: `timeout_s` to connect and between two reads, and `BODY_TIME_FACTOR` x
  `timeout_s` and `max_bytes` for the whole body; a host that fails `HOST_FAILURES_TO_ABANDON`
  URLs in a row after all their tries is abandoned for the rest of the run, so a host that never
  answers costs a bounded time and the crawl goes on with the others;
- redirects are followed by hand, so the target host's robots.txt and delay apply too (and a
  redirected robots.txt is followed to where it lives).

urllib3's `Retry` was tried first; it retries the first time without waiting and cannot apply the
per-host delay between tries, hence this loop.
"""

from __future__ import annotations

import email.utils
import threading
import time
import urllib.robotparser
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

BODY_TIME_FACTOR = 6
"""One response body may take this many `timeout_s` in all (a slow drip is cut off)."""

HOST_FAILURES_TO_ABANDON = 2
"""URLs of one host that must fail in a row, after all retries, before the host is given up."""

MAX_CRAWL_DELAY_S = 60.0
MAX_RETRY_AFTER_S = 60.0
MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class FetchError(Exception):
    """A URL could not be fetched; `kind` says why in one word (it lands in the manifest).

    Kinds: `robots_disallowed`, `host_abandoned`, `timeout`, `connection`, `http_NNN`,
    `too_large`, `bad_url`, `too_many_redirects`.
    """

    def __init__(self, url: str, kind: str, detail: str = "", retry_after_s: float | None = None) -> None:
        self.url = url
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s
        super().__init__(f"{url}: {kind}" + (f" ({detail})" if detail else ""))

    @property
    def retriable(self) -> bool:
        """True for failures a later run may get past (the host was down or slow)."""
        return self.kind in {"timeout", "connection", "host_abandoned"} or self.kind in {
            f"http_{status}" for status in RETRY_STATUSES
        }


@dataclass(frozen=True)
class Fetched:
    """A successful (2xx) response, body read in full.

    Attributes:
        url: the final URL, after redirects.
        content: the body.
        content_type: the Content-Type header, lowercased, without parameters.
        response: the `requests` response with its body loaded, for parsers that want one.
    """

    url: str
    content: bytes
    content_type: str
    response: requests.Response


class PoliteFetcher:
    """GET with robots.txt, a per-host delay, bounded retries and a per-host failure budget.

    Args:
        user_agent: sent with every request and matched against robots.txt groups.
        delay_s: least time between two requests to one host (host = scheme + host + port).
        timeout_s: connect timeout and longest wait between two reads.
        retries: further tries of a failed request.
        backoff_s: wait before the first retry; it doubles with each further one.
        max_bytes: largest body accepted.
        sleep: `time.sleep`, replaceable in tests.
        clock: `time.monotonic`, replaceable in tests.
    """

    def __init__(
        self,
        user_agent: str,
        delay_s: float = 1.0,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        max_bytes: int = 25_000_000,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.user_agent = user_agent
        self.delay_s = delay_s
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_bytes = max_bytes
        self._sleep = sleep
        self._clock = clock
        self._session = requests.Session()
        self._session.headers.update(
            {"User-Agent": user_agent, "Accept": "image/*,text/html;q=0.9,*/*;q=0.5"}
        )
        self._session.trust_env = False  # no proxies or .netrc picked up behind the user's back
        self._robots: dict[str, urllib.robotparser.RobotFileParser] = {}
        self._host_delay: dict[str, float] = {}
        self._last_request: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._abandoned: set[str] = set()
        self._lock = threading.Lock()
        self.requests_made = 0

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def abandoned_hosts(self) -> list[str]:
        """Hosts given up during this run, sorted."""
        return sorted(self._abandoned)

    def get(self, url: str, referer: str | None = None) -> Fetched:
        """Fetch `url` politely.

        Raises:
            FetchError: robots.txt forbids it, the host was abandoned, or every try failed.
        """
        for _ in range(MAX_REDIRECTS + 1):
            host = _host_key(url)
            robots = self._robots_for(host)
            if host in self._abandoned:
                raise FetchError(url, "host_abandoned", "it did not answer in time earlier in this run")
            if not robots.can_fetch(self.user_agent, url):
                raise FetchError(url, "robots_disallowed", f"{host}/robots.txt")
            response = self._get_with_retries(url, host, referer)
            if response.is_redirect:
                target = response.headers.get("Location", "")
                response.close()
                if not target:
                    raise FetchError(url, f"http_{response.status_code}", "redirect without Location")
                url = urljoin(url, target)
                continue
            return self._read_body(url, response)
        raise FetchError(url, "too_many_redirects", f"more than {MAX_REDIRECTS}")

    def _robots_for(self, host: str) -> urllib.robotparser.RobotFileParser:
        parser = self._robots.get(host)
        if parser is not None:
            return parser
        url = host + "/robots.txt"
        parser = urllib.robotparser.RobotFileParser(url)
        try:
            # RFC 9309 2.3.1.2: follow redirects (http -> https is common); more than
            # MAX_REDIRECTS counts as no robots.txt, like the 3xx branch below.
            for _ in range(MAX_REDIRECTS + 1):
                response = self._get_with_retries(url, _host_key(url), None, robots=True)
                target = response.headers.get("Location", "") if response.is_redirect else ""
                if not target:
                    break
                response.close()
                url = urljoin(url, target)
            status = response.status_code
            body = self._read_body(url, response).content if status < 300 else b""
        except FetchError:
            status, body = 599, b""
        if 200 <= status < 300:
            parser.parse(body.decode("utf-8", "replace").splitlines())
        elif 300 <= status < 500:
            parser.parse([])  # RFC 9309 2.3.1.3: no robots.txt, no rules
        else:
            parser.parse(["User-agent: *", "Disallow: /"])  # RFC 9309 2.3.1.4: unreachable, keep out
        crawl_delay = parser.crawl_delay(self.user_agent)
        if crawl_delay is not None:
            self._host_delay[host] = min(float(crawl_delay), MAX_CRAWL_DELAY_S)
        self._robots[host] = parser
        return parser

    def _wait_turn(self, host: str) -> None:
        delay = max(self.delay_s, self._host_delay.get(host, 0.0))
        with self._lock:
            last = self._last_request.get(host)
            now = self._clock()
            wait = 0.0 if last is None else last + delay - now
            self._last_request[host] = now + max(wait, 0.0)
        if wait > 0:
            self._sleep(wait)

    def _get_with_retries(
        self, url: str, host: str, referer: str | None, robots: bool = False
    ) -> requests.Response:
        """One URL, up to 1 + `retries` tries; counts toward the host's failure budget."""
        if urlsplit(url).scheme not in ("http", "https"):
            raise FetchError(url, "bad_url", "only http and https are fetched")
        headers = {"Referer": referer} if referer else {}
        failure: FetchError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self._backoff(attempt, failure))
            self._wait_turn(host)
            self.requests_made += 1
            try:
                response = self._session.get(
                    url, headers=headers, timeout=self.timeout_s, stream=True, allow_redirects=False
                )
            except requests.Timeout as exc:
                failure = FetchError(
                    url, "timeout", f"no answer within {self.timeout_s:g} s: {type(exc).__name__}"
                )
                continue
            except requests.RequestException as exc:
                failure = FetchError(url, "connection", type(exc).__name__)
                continue
            if response.status_code in RETRY_STATUSES:
                failure = FetchError(
                    url, f"http_{response.status_code}", retry_after_s=_retry_after_s(response)
                )
                response.close()
                continue
            self._failures[host] = 0
            if response.status_code >= 400 and not robots:
                response.close()
                raise FetchError(url, f"http_{response.status_code}")
            return response
        assert failure is not None
        self._failures[host] = self._failures.get(host, 0) + 1
        if robots or self._failures[host] >= HOST_FAILURES_TO_ABANDON:
            self._abandoned.add(host)
        raise failure

    def _backoff(self, attempt: int, failure: FetchError | None) -> float:
        wait = self.backoff_s * 2 ** (attempt - 1)
        retry_after = failure.retry_after_s if failure is not None else None
        return max(wait, min(retry_after, MAX_RETRY_AFTER_S)) if retry_after else wait

    def _read_body(self, url: str, response: requests.Response) -> Fetched:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise FetchError(url, "too_large", f"{declared} bytes")
        deadline = time.monotonic() + BODY_TIME_FACTOR * self.timeout_s
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_bytes:
                    raise FetchError(url, "too_large", f"over {self.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(url, "timeout", "the body took too long")
        except requests.RequestException as exc:
            raise FetchError(
                url, "timeout" if "timed out" in str(exc) else "connection", type(exc).__name__
            ) from exc
        finally:
            response.close()
        content = b"".join(chunks)
        # Parsers written for `requests` (icrawler's) read `.content`; the body is already consumed.
        response._content = content
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return Fetched(url=response.url or url, content=content, content_type=content_type, response=response)


def _host_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _retry_after_s(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
