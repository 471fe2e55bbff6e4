"""Where candidate image URLs come from: keyword searches and plain URL lists.

Keyword searches use icrawler's feeders and parsers (MIT): they know how each search engine pages
its results and where the image URLs sit in its answer, which changes as the engines do and is
best left to a maintained library. Only those two parts are used: every request goes through the
crawl's `PoliteFetcher`, not icrawler's own thread pools (see pyproject.toml for why). A results
page of one's own (`engine: {results_url: ...}`) is read by `ResultsPageParser`, an icrawler
`Parser` too, so one loop drives both.
"""

from __future__ import annotations

import importlib
import logging
import queue
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urljoin

from icrawler import Parser
from icrawler.utils import Signal

from ewaste_vision.collect.politeness import FetchError, PoliteFetcher

log = logging.getLogger(__name__)

KEYWORD_ENGINES: dict[str, tuple[str, str, str]] = {
    "bing": ("icrawler.builtin.bing", "BingFeeder", "BingParser"),
    "google": ("icrawler.builtin.google", "GoogleFeeder", "GoogleParser"),
    "baidu": ("icrawler.builtin.baidu", "BaiduFeeder", "BaiduParser"),
}
"""Built-in search engines: name -> (icrawler module, feeder class, parser class)."""

MAX_RESULT_PAGES = 50
"""Pages of one keyword read at most, whatever the engine says."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class ResultsPage:
    """A search engine of one's own: an HTML results page listing images.

    Attributes:
        results_url: template with `{query}` (the keyword, URL-quoted) and optionally `{offset}`
            (index of the first result, for paging).
    """

    results_url: str


@dataclass(frozen=True)
class Candidate:
    """One image URL to try.

    Attributes:
        url: the image file's URL.
        page_url: the page that shows it (where its licence would be stated), or "".
        licence: as the results page gives it, else "unknown".
        query: the keyword that found it, or "url list".
    """

    url: str
    page_url: str = ""
    licence: str = "unknown"
    query: str = "url list"


def url_list_candidates(urls: Iterable[str]) -> Iterator[Candidate]:
    """Plain image URLs, in order."""
    for url in urls:
        yield Candidate(url=url)


def keyword_candidates(
    fetcher: PoliteFetcher, engine: str | ResultsPage, keyword: str, wanted: int
) -> Iterator[Candidate]:
    """Image URLs a search engine lists for `keyword`, page by page, as they are needed.

    Args:
        fetcher: fetches the results pages.
        engine: a name in `KEYWORD_ENGINES` or a `ResultsPage`.
        keyword: the search phrase.
        wanted: how many results to ask the engine for (it may give fewer or more).

    A results page that cannot be fetched ends this keyword (the error is the fetcher's, and the
    crawl goes on with the next keyword).
    """
    parser = _parser_for(engine)
    seen: set[str] = set()
    for page_number, page_url in enumerate(_page_urls(engine, keyword, wanted, seen)):
        if page_number >= MAX_RESULT_PAGES:
            return
        try:
            page = fetcher.get(page_url)
        except FetchError as exc:
            log.warning("results page for %r not fetched (%s); going on without it", keyword, exc)
            return
        found = 0
        for task in parser.parse(page.response) or ():
            file_url = str(task.get("file_url") or "")
            url = urljoin(page.url, file_url) if file_url else ""  # urljoin(page, "") is the page
            if not url or url in seen:
                continue
            seen.add(url)
            found += 1
            yield Candidate(
                url=url,
                page_url=str(task.get("page_url") or ""),
                licence=str(task.get("licence") or "unknown"),
                query=keyword,
            )
        if found == 0:
            return


def _page_urls(engine: str | ResultsPage, keyword: str, wanted: int, seen: set[str]) -> Iterator[str]:
    if isinstance(engine, ResultsPage):
        if "{offset}" not in engine.results_url:
            yield engine.results_url.format(query=quote_plus(keyword))
            return
        for _ in range(MAX_RESULT_PAGES):
            # The next page starts after every result seen so far, whatever the page size is.
            yield engine.results_url.format(query=quote_plus(keyword), offset=len(seen))
        return
    module_name, feeder_name, _ = KEYWORD_ENGINES[engine]
    feeder_class = getattr(importlib.import_module(module_name), feeder_name)
    feeder = feeder_class(1, Signal(), None)
    feeder.out_queue = queue.Queue()  # icrawler's own holds 5 URLs and blocks without its threads
    feeder.feed(keyword=keyword, offset=0, max_num=max(1, wanted))
    while not feeder.out_queue.empty():
        yield feeder.out_queue.get_nowait()


def _parser_for(engine: str | ResultsPage) -> Any:
    if isinstance(engine, ResultsPage):
        return ResultsPageParser(1, Signal(), None)
    module_name, _, parser_name = KEYWORD_ENGINES[engine]
    return getattr(importlib.import_module(module_name), parser_name)(1, Signal(), None)


class ResultsPageParser(Parser):
    """Reads a plain HTML results page: one result per `<img>`.

    For each image: the file URL is its `data-full` attribute, else the `href` of the enclosing
    `<a>` when that names an image file, else its `src`; the page URL is `data-page`, else a
    non-image `href` of the enclosing `<a>`; the licence is the nearest `data-licence` (or
    `data-license`) on the image or an element around it.
    """

    def parse(self, response: Any) -> Iterator[dict[str, str]]:
        """Yield `{file_url, page_url, licence}` for each image on the page."""
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(response.content.decode("utf-8", "ignore"), "html.parser")
        for image in soup.find_all("img"):
            anchor = image.find_parent("a")
            href = str(anchor.get("href", "")) if anchor is not None else ""
            href_is_image = href.lower().split("?")[0].endswith(_IMAGE_SUFFIXES)
            file_url = str(
                image.get("data-full") or (href if href_is_image else "") or image.get("src") or ""
            )
            if not file_url or file_url.startswith("data:"):
                continue
            page_url = str(image.get("data-page") or ("" if href_is_image else href))
            yield {
                "file_url": file_url,
                "page_url": urljoin(response.url, page_url) if page_url else "",
                "licence": _nearest_licence(image),
            }


def _nearest_licence(element: Any) -> str:
    while element is not None and getattr(element, "get", None) is not None:
        for attribute in ("data-licence", "data-license"):
            value = element.get(attribute)
            if value:
                return str(value).strip()
        element = element.parent
    return "unknown"
