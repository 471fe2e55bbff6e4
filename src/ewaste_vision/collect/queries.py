"""QUERIES.yaml: what to crawl, read strictly.

A typo in a crawl file would otherwise cost hours of downloading the wrong thing, so every key is
checked: unknown keys, wrong types and impossible values stop the run before the first request
with one line naming the file, the line and the key.

Example::

    user_agent: "ewaste-vision-crawler (+mailto:me@example.org)"
    delay_s: 2            # between two requests to one host
    timeout_s: 10         # per request
    retries: 2            # per request, with exponential back-off
    backoff_s: 1          # wait before the first retry; doubles with each further one
    min_resolution: [200, 200]
    engine: bing          # default for keyword classes: bing, google, baidu, or
                          # {results_url: "https://my.search/?q={query}&first={offset}"}
    classes:
      iphone_6:
        keywords: ['"iPhone 6" backside']
        max: 150
        urls: ["https://example.org/phone.jpg"]
        url_file: iphone_urls.txt   # one URL a line, relative to this file
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ewaste_vision.collect.sources import KEYWORD_ENGINES, ResultsPage
from ewaste_vision.errors import UserError

DEFAULT_USER_AGENT = "ewaste-vision-crawler/0.1 (+https://pypi.org/project/ewaste-vision/)"

_CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$")
"""Class names become folder names; `_accepted`/`_rejected` (leading underscore) are the cleaner's."""

_TOP_KEYS = {
    "classes",
    "min_resolution",
    "delay_s",
    "timeout_s",
    "retries",
    "backoff_s",
    "user_agent",
    "engine",
}
_CLASS_KEYS = {"keywords", "max", "urls", "url_file", "engine"}


Engine = str | ResultsPage
"""A built-in engine name (`KEYWORD_ENGINES`) or a custom results page."""


@dataclass(frozen=True)
class ClassQuery:
    """What to collect for one class.

    Attributes:
        name: class name, also the folder name.
        keywords: search phrases, used in order.
        max: images to keep for this class, counting those kept by earlier runs.
        urls: plain image URLs, fetched before any keyword search.
        engine: the search engine the keywords go to.
    """

    name: str
    keywords: tuple[str, ...]
    max: int
    urls: tuple[str, ...]
    engine: Engine


@dataclass(frozen=True)
class CrawlPlan:
    """A validated QUERIES.yaml.

    Attributes:
        source: the file it was read from (named in later errors).
        classes: one query per class, in file order.
        min_resolution: smallest accepted (width, height); compared orientation-free, short side
            to short side and long side to long side.
        delay_s: least time between two requests to one host.
        timeout_s: time allowed for one request (connect, and each read).
        retries: further tries of a failed request, with exponential back-off.
        backoff_s: wait before the first retry; it doubles with each further one.
        user_agent: sent with every request and matched against robots.txt.
    """

    source: Path
    classes: tuple[ClassQuery, ...]
    min_resolution: tuple[int, int] = (0, 0)
    delay_s: float = 1.0
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 1.0
    user_agent: str = DEFAULT_USER_AGENT


def load_queries(path: Path | str) -> CrawlPlan:
    """Read and validate a QUERIES.yaml file.

    Raises:
        UserError: the file is missing, is not YAML, or has a bad key; the message names the
            file, the line and the key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the queries file ({exc.strerror}); check the path") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return _Validator(path, lines).plan(data)


class _Validator:
    """Turns parsed YAML into a `CrawlPlan`, raising a `UserError` at the first bad key."""

    def __init__(self, path: Path, lines: dict[str, int]) -> None:
        self.path = path
        self.lines = lines

    def fail(self, key: str, problem: str) -> UserError:
        line = self.lines.get(key)
        where = f"{self.path}:{line}" if line else str(self.path)
        return UserError(f"{where}: key '{key}': {problem}; fix it and run again")

    def plan(self, data: Any) -> CrawlPlan:
        if not isinstance(data, dict):
            raise UserError(
                f"{self.path}: expected a mapping with a 'classes' key; see `ewaste data crawl -h`"
            )
        self._no_unknown(data, _TOP_KEYS, "")
        if "classes" not in data:
            raise self.fail("classes", "missing; list the classes to crawl under it")
        classes = data["classes"]
        if not isinstance(classes, dict) or not classes:
            raise self.fail("classes", "must be a mapping of class name to its keywords/urls")
        default_engine = self._engine(data.get("engine", "bing"), "engine")
        queries = tuple(self._class(str(name), spec, default_engine) for name, spec in classes.items())
        return CrawlPlan(
            source=self.path,
            classes=queries,
            min_resolution=self._resolution(data.get("min_resolution", [0, 0])),
            delay_s=self._number(data, "delay_s", 1.0, minimum=0.0),
            timeout_s=self._number(data, "timeout_s", 10.0, minimum=0.01),
            retries=self._integer(data, "retries", 2, minimum=0, maximum=10),
            backoff_s=self._number(data, "backoff_s", 1.0, minimum=0.0),
            user_agent=self._string(data.get("user_agent", DEFAULT_USER_AGENT), "user_agent"),
        )

    def _class(self, name: str, spec: Any, default_engine: Engine) -> ClassQuery:
        key = f"classes.{name}"
        if not _CLASS_NAME.match(name) or name in {".", ".."}:
            raise self.fail(key, "class names are folder names: letters, digits, space . _ + - only")
        if not isinstance(spec, dict):
            raise self.fail(key, "must be a mapping with keywords, max, urls or url_file")
        self._no_unknown(spec, _CLASS_KEYS, key + ".")
        keywords = self._string_list(spec.get("keywords", []), f"{key}.keywords")
        urls = [
            self._url(url, f"{key}.urls[{i}]")
            for i, url in enumerate(self._string_list(spec.get("urls", []), f"{key}.urls"))
        ]
        if "url_file" in spec:
            urls += self._url_file(spec["url_file"], f"{key}.url_file")
        if not keywords and not urls:
            raise self.fail(key, "needs keywords, urls or url_file")
        if "max" not in spec:
            raise self.fail(f"{key}.max", "missing; say how many images to keep for this class")
        return ClassQuery(
            name=name,
            keywords=tuple(keywords),
            max=self._integer(spec, "max", 0, minimum=1, maximum=100_000, prefix=key + "."),
            urls=tuple(dict.fromkeys(urls)),
            engine=self._engine(spec["engine"], f"{key}.engine") if "engine" in spec else default_engine,
        )

    def _no_unknown(self, mapping: dict[Any, Any], allowed: set[str], prefix: str) -> None:
        for key in mapping:
            if key not in allowed:
                raise self.fail(f"{prefix}{key}", f"unknown key; allowed here: {', '.join(sorted(allowed))}")

    def _engine(self, value: Any, key: str) -> Engine:
        if isinstance(value, str):
            if value not in KEYWORD_ENGINES:
                raise self.fail(
                    key,
                    f"unknown engine {value!r}; use {', '.join(KEYWORD_ENGINES)} or "
                    "{results_url: 'http://...?q={query}'}",
                )
            return value
        if isinstance(value, dict) and set(value) == {"results_url"}:
            url = self._url(value["results_url"], f"{key}.results_url")
            if "{query}" not in url:
                raise self.fail(f"{key}.results_url", "must contain {query} where the keyword goes")
            try:
                url.format(query="q", offset=0)
            except (KeyError, IndexError, ValueError):
                raise self.fail(
                    f"{key}.results_url", "only {query} and {offset} may appear in braces"
                ) from None
            return ResultsPage(url)
        raise self.fail(key, "must be an engine name or a mapping with only results_url")

    def _url(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a URL string, got {type(value).__name__}")
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(key, f"{value!r} is not an http(s) URL")
        return value.strip()

    def _url_file(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, str):
            raise self.fail(key, "must be a path to a text file of URLs")
        file = (self.path.parent / value).resolve()
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise self.fail(key, f"cannot read {file} ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            raise self.fail(key, f"{file} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        urls = []
        for number, line in enumerate(lines, start=1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                parts = urlsplit(stripped)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    raise UserError(f"{file}:{number}: {stripped!r} is not an http(s) URL; fix or remove it")
                urls.append(stripped)
        return urls

    def _string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        return value.strip()

    def _string_list(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of strings, got {type(value).__name__}")
        return [self._string(item, f"{key}[{index}]") for index, item in enumerate(value)]

    def _integer(
        self, mapping: dict[str, Any], name: str, default: int, minimum: int, maximum: int, prefix: str = ""
    ) -> int:
        value = mapping.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(prefix + name, f"must be a whole number, got {value!r}")
        if not minimum <= value <= maximum:
            raise self.fail(prefix + name, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def _number(self, mapping: dict[str, Any], name: str, default: float, minimum: float) -> float:
        value = mapping.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"must be a number, got {value!r}")
        if value < minimum:
            raise self.fail(name, f"must be at least {minimum}, got {value}")
        return float(value)

    def _resolution(self, value: Any) -> tuple[int, int]:
        if (
            not isinstance(value, list)
            or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value)
        ):
            raise self.fail("min_resolution", f"must be [width, height] in whole pixels, got {value!r}")
        return int(value[0]), int(value[1])


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """Dotted key path -> 1-based line, for error messages."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    elif isinstance(node, yaml.SequenceNode):
        base = prefix.rstrip(".")
        for index, item in enumerate(node.value):
            lines[f"{base}[{index}]"] = item.start_mark.line + 1
            lines.update(_key_lines(item, f"{base}[{index}]."))
    return lines
