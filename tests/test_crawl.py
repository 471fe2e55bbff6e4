"""`ewaste data crawl` against hosts on 127.0.0.1: robots.txt, delays, slow and dead hosts, resume."""

from __future__ import annotations

import csv
import errno
import io
import time
from pathlib import Path

import pytest
from PIL import Image

from ewaste_vision.cli import main
from ewaste_vision.collect import crawl as crawl_module
from ewaste_vision.collect.manifest import read_manifest
from ewaste_vision.collect.politeness import FetchError, PoliteFetcher
from ewaste_vision.collect.queries import load_queries
from ewaste_vision.collect.sources import ResultsPage, _page_urls
from ewaste_vision.errors import UserError
from fixtures_http import TIMEOUT_S, Route, crawl_queries, jpeg, loopback_web, write_queries


@pytest.fixture
def web(monkeypatch):
    """The loopback hosts of `fixtures_http.loopback_web`."""
    with loopback_web(monkeypatch) as hosts:
        yield hosts


def statuses(out: Path) -> dict[str, str]:
    return {Path(row.source_url).name: row.status for row in read_manifest(out / "manifest.csv")}


def test_crawl_keeps_good_images_and_records_why_others_were_not(tmp_path, web, capsys) -> None:
    out = tmp_path / "crawl"
    started = time.monotonic()
    assert main(["data", "crawl", str(crawl_queries(tmp_path, web, bad_hosts=True)), "--out", str(out)]) == 0
    elapsed = time.monotonic() - started

    assert statuses(out) == {
        "listed.jpg": "ok",  # the URL list comes before the keyword search
        "1.jpg": "ok",
        "missing.jpg": "http_404",
        "fake.jpg": "not_image",  # HTML served as image/jpeg
        "secret.jpg": "robots_disallowed",
        "late.jpg": "timeout",  # the slow host
        "never.jpg": "host_abandoned",  # no robots.txt answer: RFC 9309 says keep out
        "tiny.jpg": "too_small",
        "copy-of-1.jpg": "duplicate",
        "2.jpg": "ok",
        "3.jpg": "ok",
        # the fifth kept image reaches max: 5
        "extra.jpg": "ok",
    }
    assert sorted(p.name for p in (out / "phone").iterdir()) == [f"00000{i}.jpg" for i in range(1, 6)]
    assert "/private/secret.jpg" not in web["main"].requests  # robots.txt obeyed
    assert web["main"].requests[0] == "/robots.txt"
    assert set(web["main"].user_agents) == {"ewaste-test-crawler/1.0"}
    assert set(web["connected"]) == {"127.0.0.1"}
    # A host that never answers and one that answers too late cost their budget (2 tries of 0.5 s
    # each), not the run: waiting for the slow host's answers alone would take 2 x 2 s.
    assert elapsed < 10

    rows = {Path(r.source_url).name: r for r in read_manifest(out / "manifest.csv")}
    assert rows["1.jpg"].licence == "CC-BY-4.0" and rows["1.jpg"].page_url.endswith("/photo/1")
    assert rows["2.jpg"].licence == "CC0-1.0"
    assert rows["listed.jpg"].licence == "unknown" and rows["listed.jpg"].query == "url list"
    assert rows["1.jpg"].query == '"iPhone 6" backside'
    assert not rows["late.jpg"].final and not rows["never.jpg"].final  # a later run tries them again
    assert rows["missing.jpg"].final and rows["fake.jpg"].final and rows["secret.jpg"].final
    kept = (out / rows["3.jpg"].file).read_bytes()
    assert 0x8825 not in Image.open(io.BytesIO(kept)).getexif()  # GPS stripped (re-encoded)
    assert (out / rows["2.jpg"].file).read_bytes() == jpeg(2)  # no GPS: kept byte for byte
    printed = capsys.readouterr().out
    assert "phone: 5/5 images (5 new, 0 from earlier runs)" in printed
    assert "hosts given up" in printed


def test_second_run_skips_settled_urls_and_continues_numbering(tmp_path, web) -> None:
    out = tmp_path / "crawl"
    assert main(["data", "crawl", str(crawl_queries(tmp_path, web, max_images=3)), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "phone").iterdir()) == [f"00000{i}.jpg" for i in range(1, 4)]
    first_requests = list(web["main"].requests)

    assert main(["data", "crawl", str(crawl_queries(tmp_path, web, max_images=5)), "--out", str(out)]) == 0
    again = web["main"].requests[len(first_requests) :]
    assert "/img/listed.jpg" not in again and "/img/1.jpg" not in again  # kept before: not fetched
    for settled in ("missing", "fake", "tiny", "copy-of-1"):  # 404, not an image, too small, duplicate
        assert f"/img/{settled}.jpg" not in again
    assert "/img/3.jpg" in again and "/img/extra.jpg" in again
    assert sorted(p.name for p in (out / "phone").iterdir()) == [f"00000{i}.jpg" for i in range(1, 6)]
    rows = read_manifest(out / "manifest.csv")
    assert [row.file for row in rows if row.status == "ok"] == [f"phone/00000{i}.jpg" for i in range(1, 6)]


def test_disk_full_leaves_no_half_file_and_a_one_line_error(tmp_path, web, monkeypatch, capsys) -> None:
    real_write = crawl_module.write_atomic

    def write_half_then_fail(target, writer, binary=False):
        def half(handle):
            handle.write(b"\xff\xd8 half a jpeg")
            raise OSError(errno.ENOSPC, "No space left on device")

        return real_write(target, half, binary=binary)

    monkeypatch.setattr(crawl_module, "write_atomic", write_half_then_fail)
    out = tmp_path / "crawl"
    code = main(["data", "crawl", str(crawl_queries(tmp_path, web)), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "disk full" in err and "000001.jpg" in err and "Traceback" not in err
    assert list((out / "phone").iterdir()) == []  # not even the temporary file
    assert read_manifest(out / "manifest.csv") == []

    monkeypatch.setattr(crawl_module, "write_atomic", real_write)
    assert main(["data", "crawl", str(crawl_queries(tmp_path, web, max_images=1)), "--out", str(out)]) == 0
    assert [p.name for p in (out / "phone").iterdir()] == ["000001.jpg"]


def test_disk_full_on_the_manifest_row_takes_back_its_image(tmp_path, web, monkeypatch, capsys) -> None:
    def full(self, row):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(crawl_module.ManifestWriter, "append", full)
    out = tmp_path / "crawl"
    assert main(["data", "crawl", str(crawl_queries(tmp_path, web)), "--out", str(out)]) == 2
    assert "disk full" in capsys.readouterr().err
    assert list((out / "phone").iterdir()) == []  # the image written before its row is gone


def test_images_moved_to_accepted_by_the_cleaner_still_count(tmp_path, web, capsys) -> None:
    out = tmp_path / "crawl"
    assert main(["data", "crawl", str(crawl_queries(tmp_path, web, max_images=2)), "--out", str(out)]) == 0
    (out / "_accepted").mkdir()
    (out / "phone").rename(out / "_accepted" / "phone")
    capsys.readouterr()
    assert main(["data", "crawl", str(crawl_queries(tmp_path, web, max_images=2)), "--out", str(out)]) == 0
    assert "phone: 2/2 images (0 new, 2 from earlier runs)" in capsys.readouterr().out


def test_a_row_cut_short_by_a_crash_is_dropped_and_the_file_repaired(tmp_path, web) -> None:
    out = tmp_path / "crawl"
    assert main(["data", "crawl", str(crawl_queries(tmp_path, web, max_images=1)), "--out", str(out)]) == 0
    manifest = out / "manifest.csv"
    manifest.write_text(manifest.read_text() + "phone,phone/000009.jpg,http://127.0.0.1:1/x.jpg,,unkn")
    assert len(read_manifest(manifest)) == 1
    assert main(["data", "crawl", str(crawl_queries(tmp_path, web, max_images=2)), "--out", str(out)]) == 0
    rows = list(csv.DictReader(manifest.open()))
    assert all(row["status"] for row in rows) and "000009" not in manifest.read_text()
    assert sorted(p.name for p in (out / "phone").iterdir()) == ["000001.jpg", "000002.jpg"]


def test_a_host_that_keeps_timing_out_is_abandoned_and_others_still_answer(web) -> None:
    web["slow"].routes["/img/late2.jpg"] = web["slow"].routes["/img/late.jpg"]
    web["slow"].routes["/img/late3.jpg"] = web["slow"].routes["/img/late.jpg"]
    fetcher = PoliteFetcher("test-agent", delay_s=0.0, timeout_s=TIMEOUT_S, retries=0)
    for name in ("late", "late2"):
        with pytest.raises(FetchError, match="timeout"):
            fetcher.get(web["slow"].url(f"/img/{name}.jpg"))
    with pytest.raises(FetchError, match="host_abandoned"):
        fetcher.get(web["slow"].url("/img/late3.jpg"))
    assert "/img/late3.jpg" not in web["slow"].requests
    assert fetcher.get(web["main"].url("/img/1.jpg")).content == jpeg(1)
    assert fetcher.abandoned_hosts() == [web["slow"].url("")]


def test_requests_to_one_host_keep_the_delay(web) -> None:
    # A clock that only the fetcher's own sleeps move: the waits it asks for are exact.
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        now[0] += seconds

    fetcher = PoliteFetcher(
        "test-agent", delay_s=2.0, timeout_s=TIMEOUT_S, retries=0, sleep=sleep, clock=lambda: now[0]
    )
    fetcher.get(web["main"].url("/img/1.jpg"))  # robots.txt at once, then the image 2 s later
    now[0] += 0.5  # the caller spends half a second
    fetcher.get(web["main"].url("/img/2.jpg"))
    fetcher.get(web["slow"].url("/robots.txt"))  # another host: its robots.txt, then the file, 2 s apart
    assert waits == [2.0, 1.5, 2.0]
    assert web["main"].requests == ["/robots.txt", "/img/1.jpg", "/img/2.jpg"]


def test_retries_back_off_exponentially_and_honour_retry_after(web) -> None:
    web["main"].routes["/busy.jpg"] = Route(b"busy", "text/plain", 503)
    web["main"].routes["/throttled.jpg"] = Route(
        b"slow down", "text/plain", 429, headers={"Retry-After": "7"}
    )
    waits: list[float] = []
    fetcher = PoliteFetcher(
        "test-agent", delay_s=0.0, timeout_s=TIMEOUT_S, retries=3, backoff_s=0.5, sleep=waits.append
    )
    with pytest.raises(FetchError) as failed:
        fetcher.get(web["main"].url("/busy.jpg"))
    assert failed.value.kind == "http_503" and failed.value.retriable
    assert waits == [0.5, 1.0, 2.0]
    assert web["main"].requests.count("/busy.jpg") == 4
    waits.clear()
    with pytest.raises(FetchError):
        fetcher.get(web["main"].url("/throttled.jpg"))
    assert waits == [7.0, 7.0, 7.0]


def test_a_redirect_to_a_forbidden_path_is_not_followed(web) -> None:
    web["main"].routes["/go"] = Route(b"", status=302, headers={"Location": "/private/secret.jpg"})
    fetcher = PoliteFetcher("test-agent", delay_s=0.0, timeout_s=TIMEOUT_S, retries=0)
    with pytest.raises(FetchError) as failed:
        fetcher.get(web["main"].url("/go"))
    assert failed.value.kind == "robots_disallowed"
    assert "/private/secret.jpg" not in web["main"].requests


def test_a_redirected_robots_txt_is_followed_and_obeyed(web) -> None:
    rules = web["main"].routes["/robots.txt"]
    web["main"].routes["/robots.txt"] = Route(b"", status=301, headers={"Location": "/moved/robots.txt"})
    web["main"].routes["/moved/robots.txt"] = rules
    fetcher = PoliteFetcher("test-agent", delay_s=0.0, timeout_s=TIMEOUT_S, retries=0)
    with pytest.raises(FetchError) as failed:
        fetcher.get(web["main"].url("/private/secret.jpg"))
    assert failed.value.kind == "robots_disallowed"
    assert web["main"].requests == ["/robots.txt", "/moved/robots.txt"]


def test_builtin_engines_page_urls_come_from_icrawler_without_a_request() -> None:
    # icrawler's Bing feeder makes the result-page URLs (one page per 20 results); nothing is fetched.
    pages = list(_page_urls("bing", "iPhone 6", 45, set()))
    assert len(pages) == 3 and all(page.startswith("https://www.bing.com/images/") for page in pages)
    custom = list(_page_urls(ResultsPage("http://127.0.0.1:9/s?q={query}"), "iPhone 6 back", 10, set()))
    assert custom == ["http://127.0.0.1:9/s?q=iPhone+6+back"]


GOOD = {"classes": {"phone": {"keywords": ["iphone"], "max": 3}}}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({**GOOD, "delay": 1}, "delay"),
        ({"classes": {"phone": {"keywords": ["iphone"], "max": 3, "maximum": 4}}}, "classes.phone.maximum"),
        ({"classes": {"phone": {"keywords": ["iphone"], "max": 0}}}, "classes.phone.max"),
        ({"classes": {"phone": {"keywords": ["iphone"], "max": "ten"}}}, "classes.phone.max"),
        ({"classes": {"phone": {"keywords": ["iphone"]}}}, "classes.phone.max"),
        ({"classes": {"phone": {"keywords": "iphone", "max": 3}}}, "classes.phone.keywords"),
        ({"classes": {"phone": {"max": 3}}}, "classes.phone"),
        ({"classes": {"../up": {"keywords": ["x"], "max": 3}}}, "classes.../up"),
        ({**GOOD, "min_resolution": [200]}, "min_resolution"),
        ({**GOOD, "timeout_s": "fast"}, "timeout_s"),
        ({**GOOD, "retries": -1}, "retries"),
        ({**GOOD, "engine": "altavista"}, "engine"),
        ({**GOOD, "engine": {"results_url": "http://127.0.0.1/search"}}, "engine.results_url"),
        ({"classes": {"phone": {"urls": ["ftp://host/x.jpg"], "max": 3}}}, "classes.phone.urls[0]"),
        ({"classes": {"phone": {"url_file": "missing.txt", "max": 3}}}, "classes.phone.url_file"),
        ({"classes": []}, "classes"),
    ],
)
def test_bad_queries_file_is_one_line_naming_file_and_key(tmp_path, capsys, data, key) -> None:
    path = write_queries(tmp_path / "bad.yaml", data)
    with pytest.raises(UserError) as failed:
        load_queries(path)
    message = str(failed.value)
    assert str(path) in message and f"'{key}'" in message and "\n" not in message

    assert main(["data", "crawl", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and f"'{key}'" in err
    assert not (tmp_path / "out").exists()  # nothing started


def test_queries_and_url_files_in_another_encoding_are_one_line_errors(tmp_path) -> None:
    queries = tmp_path / "q.yaml"
    queries.write_bytes("classes:\n  caf\u00e9: {urls: [http://127.0.0.1/a.jpg], max: 1}\n".encode("cp1252"))
    with pytest.raises(UserError, match=r"q.yaml: not UTF-8 text \(byte 14\); save it as UTF-8"):
        load_queries(queries)
    (tmp_path / "urls.txt").write_bytes("http://127.0.0.1/caf\u00e9.jpg\n".encode("cp1252"))
    queries.write_text("classes:\n  phone: {url_file: urls.txt, max: 1}\n")
    with pytest.raises(UserError, match=r"urls.txt is not UTF-8 text"):
        load_queries(queries)


def test_bad_key_error_names_its_line(tmp_path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text("delay_s: 1\nclasses:\n  phone:\n    keywords: [a]\n    max: -2\n")
    with pytest.raises(UserError, match=r"q\.yaml:5: key 'classes\.phone\.max'"):
        load_queries(path)


def test_url_file_lines_are_read_relative_to_the_queries_file(tmp_path) -> None:
    (tmp_path / "urls.txt").write_text("# phones\nhttp://127.0.0.1:1/a.jpg\n\nhttps://127.0.0.1:1/b.png\n")
    plan = load_queries(
        write_queries(tmp_path / "q.yaml", {"classes": {"phone": {"url_file": "urls.txt", "max": 2}}})
    )
    assert plan.classes[0].urls == ("http://127.0.0.1:1/a.jpg", "https://127.0.0.1:1/b.png")
    (tmp_path / "urls.txt").write_text("http://127.0.0.1:1/a.jpg\nnot a url\n")
    with pytest.raises(UserError, match=r"urls\.txt:2: 'not a url'"):
        load_queries(tmp_path / "q.yaml")
