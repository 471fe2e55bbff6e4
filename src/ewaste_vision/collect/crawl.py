"""`ewaste data crawl`: fill `DIR/CLASS/NNNNNN.jpg` from keyword searches and URL lists.

As in 003, each class gets keywords (`"iPhone 6" backside`), a maximum number of images and a
minimum resolution. Every download is checked before it is kept: it must decode as an image (a
web page served as `image/jpeg` is not one), be large enough, and not repeat a file already kept
for the class. Kept files are written atomically; JPEGs without location data are kept byte for
byte, anything else (other formats, EXIF GPS, a rotation tag) is re-encoded upright as JPEG
without metadata. `DIR/manifest.csv` records every URL tried, with its source page and licence
field; a second run skips what the manifest settled and continues the numbering.
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ewaste_vision.collect.manifest import (
    ACCEPTED_DIR,
    KEPT,
    MANIFEST_NAME,
    ManifestRow,
    ManifestWriter,
    read_manifest,
)
from ewaste_vision.collect.politeness import FetchError, PoliteFetcher
from ewaste_vision.collect.queries import ClassQuery, CrawlPlan, load_queries
from ewaste_vision.collect.sources import Candidate, keyword_candidates, url_list_candidates
from ewaste_vision.data.images import decode_image, to_rgb8
from ewaste_vision.errors import UnreadableImageError, UserError
from ewaste_vision.io.atomic import write_atomic

JPEG_QUALITY = 95
"""Quality of re-encoded images: high enough that the cleaner's perceptual hashes see no change."""

_EXIF_GPS_IFD = 0x8825
_EXIF_ORIENTATION = 0x0112


@dataclass
class ClassResult:
    """What a crawl did for one class.

    Attributes:
        name: class name.
        wanted: the class's `max`.
        kept_before: images kept by earlier runs.
        kept_now: images kept by this run.
        outcomes: URLs tried in this run, by manifest status.
    """

    name: str
    wanted: int
    kept_before: int = 0
    kept_now: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


@dataclass
class CrawlSummary:
    """What `crawl` did.

    Attributes:
        out_dir: the crawl folder.
        classes: one result per class, in the queries file's order.
        abandoned_hosts: hosts given up after repeated failures.
        requests: HTTP requests made (robots.txt, results pages, images, retries).
        seconds: wall time.
    """

    out_dir: Path
    classes: list[ClassResult]
    abandoned_hosts: list[str]
    requests: int
    seconds: float

    def describe(self) -> str:
        """A few lines for the terminal."""
        lines = []
        for result in self.classes:
            others = ", ".join(
                f"{count} {status}" for status, count in sorted(result.outcomes.items()) if status != KEPT
            )
            lines.append(
                f"{result.name}: {result.kept_before + result.kept_now}/{result.wanted} images "
                f"({result.kept_now} new, {result.kept_before} from earlier runs)"
                + (f"; {others}" if others else "")
            )
        if self.abandoned_hosts:
            lines.append(f"hosts given up (no answer in time): {', '.join(self.abandoned_hosts)}")
        lines.append(
            f"manifest: {self.out_dir / MANIFEST_NAME} ({self.requests} requests, {self.seconds:.1f} s); "
            f"next: ewaste data clean {self.out_dir}"
        )
        return "\n".join(lines)


class _Rejected(Exception):
    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def crawl(
    queries: Path | str | CrawlPlan,
    out_dir: Path | str,
    progress: bool = False,
) -> CrawlSummary:
    """Download images for every class of a queries file into `out_dir`.

    Args:
        queries: a QUERIES.yaml path, or a plan already loaded with `load_queries`.
        out_dir: the crawl folder; created if needed, continued if it holds an earlier crawl.
        progress: print a line per class to stderr.

    Raises:
        UserError: bad queries file, or a file could not be written (disk full): the message
            names it and says to run the same command again, which resumes.
    """
    started = time.monotonic()
    plan = queries if isinstance(queries, CrawlPlan) else load_queries(queries)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fetcher = PoliteFetcher(
        plan.user_agent,
        delay_s=plan.delay_s,
        timeout_s=plan.timeout_s,
        retries=plan.retries,
        backoff_s=plan.backoff_s,
    )
    earlier = read_manifest(out / MANIFEST_NAME)
    results = []
    try:
        with ManifestWriter(out / MANIFEST_NAME) as manifest:
            for query in plan.classes:
                results.append(_crawl_class(query, plan, out, fetcher, manifest, earlier))
                if progress:
                    print(results[-1].name + ": done", file=sys.stderr)
    except OSError as exc:
        raise _write_error(exc, out / MANIFEST_NAME) from None
    finally:
        fetcher.close()
    return CrawlSummary(
        out, results, fetcher.abandoned_hosts(), fetcher.requests_made, time.monotonic() - started
    )


def _crawl_class(
    query: ClassQuery,
    plan: CrawlPlan,
    out: Path,
    fetcher: PoliteFetcher,
    manifest: ManifestWriter,
    earlier: list[ManifestRow],
) -> ClassResult:
    mine = [row for row in earlier if row.class_name == query.name]
    kept_rows = [
        row
        for row in mine
        if row.status == KEPT and ((out / row.file).is_file() or (out / ACCEPTED_DIR / row.file).is_file())
    ]
    settled = {row.source_url for row in mine if row.final}
    digests = {row.sha256 for row in kept_rows}
    result = ClassResult(query.name, query.max, kept_before=len(kept_rows))
    folder = out / query.name
    next_index = _next_file_index(folder, mine)
    if result.kept_before >= query.max:
        return result  # complete: not even a results page is fetched
    for candidate in _candidates(query, fetcher, query.max - len(kept_rows)):
        if result.kept_before + result.kept_now >= query.max:
            break
        if candidate.url in settled:
            continue
        settled.add(candidate.url)
        row = _try_candidate(
            candidate, query.name, plan, out, folder / f"{next_index:06d}.jpg", fetcher, digests
        )
        try:
            manifest.append(row)
        except OSError:
            if row.status == KEPT:  # an image without its row would be downloaded again next time
                (out / row.file).unlink(missing_ok=True)
            raise
        result.outcomes[row.status] += 1
        if row.status == KEPT:
            result.kept_now += 1
            digests.add(row.sha256)
            next_index += 1
    return result


def _candidates(query: ClassQuery, fetcher: PoliteFetcher, wanted: int) -> Iterator[Candidate]:
    # Twice what is wanted: some results are rejected (too small, duplicates, broken links).
    searches = (keyword_candidates(fetcher, query.engine, keyword, 2 * wanted) for keyword in query.keywords)
    return itertools.chain(url_list_candidates(query.urls), itertools.chain.from_iterable(searches))


def _try_candidate(
    candidate: Candidate,
    class_name: str,
    plan: CrawlPlan,
    out: Path,
    target: Path,
    fetcher: PoliteFetcher,
    digests: set[str],
) -> ManifestRow:
    def row(
        status: str, detail: str = "", file: str = "", sha256: str = "", size: tuple[int, int] = (0, 0)
    ) -> ManifestRow:
        return ManifestRow(
            class_name=class_name,
            file=file,
            source_url=candidate.url,
            page_url=candidate.page_url,
            licence=candidate.licence,
            query=candidate.query,
            sha256=sha256,
            width=size[0],
            height=size[1],
            status=status,
            detail=detail,
        )

    try:
        fetched = fetcher.get(candidate.url, referer=candidate.page_url or None)
        data, size = prepare_image(fetched.content, plan.min_resolution)
    except FetchError as exc:
        return row(exc.kind, exc.detail)
    except _Rejected as exc:
        return row(exc.status, exc.detail)
    digest = hashlib.sha256(data).hexdigest()
    if digest in digests:
        return row(
            "duplicate", "same bytes as an image already kept for this class", sha256=digest, size=size
        )
    try:
        write_atomic(target, lambda handle: handle.write(data), binary=True)
    except OSError as exc:
        raise _write_error(exc, target) from None
    return row(KEPT, file=target.relative_to(out).as_posix(), sha256=digest, size=size)


def prepare_image(content: bytes, min_resolution: tuple[int, int]) -> tuple[bytes, tuple[int, int]]:
    """The bytes to keep for a downloaded image, and its upright (width, height).

    Raises:
        _Rejected: not a decodable image (`not_image`), or smaller than `min_resolution`
            (`too_small`), compared orientation-free.
    """
    try:
        image, upright = decode_image(Path("download"), content)
    except UnreadableImageError as exc:
        raise _Rejected("not_image", exc.reason) from None
    with image:
        return _bytes_to_keep(content, image, upright, min_resolution)


def _bytes_to_keep(
    content: bytes, image: Image.Image, upright: Image.Image, min_resolution: tuple[int, int]
) -> tuple[bytes, tuple[int, int]]:
    """`content` itself when it is a plain upright JPEG without location, else a clean re-encode."""
    exif = image.getexif()
    short, long = sorted(upright.size)
    need_short, need_long = sorted(min_resolution)
    if short < need_short or long < need_long:
        raise _Rejected(
            "too_small", f"{upright.width}x{upright.height} < {min_resolution[0]}x{min_resolution[1]}"
        )
    has_location = _EXIF_GPS_IFD in exif or b"GPS" in _as_bytes(image.info.get("xmp", b""))
    if (
        image.format == "JPEG"
        and image.mode in ("RGB", "L")
        and not has_location
        and exif.get(_EXIF_ORIENTATION, 1) == 1
    ):
        return content, upright.size
    buffer = io.BytesIO()
    to_rgb8(upright).save(buffer, format="JPEG", quality=JPEG_QUALITY)  # no exif= : metadata dropped
    return buffer.getvalue(), upright.size


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")


def _next_file_index(folder: Path, rows: list[ManifestRow]) -> int:
    """One past the highest NNNNNN used in the folder or the manifest, so nothing is overwritten."""
    numbers = (
        [int(path.stem) for path in folder.glob("*.jpg") if path.stem.isdigit()] if folder.is_dir() else []
    )
    numbers += [int(Path(row.file).stem) for row in rows if row.file and Path(row.file).stem.isdigit()]
    return max(numbers, default=0) + 1


def _write_error(exc: OSError, path: Path) -> UserError:
    if exc.errno == errno.ENOSPC:
        return UserError(f"{path}: disk full; free some space and run the same command again to resume")
    return UserError(
        f"{path}: cannot write ({exc.strerror or exc}); fix the folder and run the same command again"
    )
