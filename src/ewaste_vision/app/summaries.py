"""Results as people read them in the page: a one-paragraph status and a table.

Each function takes the JSON result an endpoint returned, so the page shows exactly what API
clients get.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Summary = tuple[str, list[str], list[list[Any]]]
"""(Markdown status, table header, table rows)."""


def _skipped_line(result: dict[str, Any]) -> str:
    skipped = result.get("skipped") or []
    if not skipped:
        return ""
    shown = "; ".join(f"{item['file']}: {item['reason']}" for item in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return f"\n\nLeft out: {shown}{more}"


def _failed(result: dict[str, Any] | None) -> Summary | None:
    if not result:
        return "", [], []
    if result.get("error"):
        return f"**Could not process:** {result['error']}", [], []
    return None


def classify_summary(result: dict[str, Any] | None) -> Summary:
    """Status and a table of each image's most probable classes."""
    failed = _failed(result)
    if failed is not None or result is None:
        return failed or ("", [], [])
    rows = []
    for image in result["images"]:
        ranked = [f"{top['class']} ({top['probability']:.2f})" for top in image["top"][:3]]
        rows.append([image["file"], *ranked, *[""] * (3 - len(ranked))])  # runs may have 2 classes
    status = f"Classified {len(rows)} image(s) with **{result['model']}**." + _skipped_line(result)
    return status, ["file", "1st", "2nd", "3rd"], rows


def components_summary(result: dict[str, Any] | None) -> Summary:
    """Status and a table of the components present in each image."""
    failed = _failed(result)
    if failed is not None or result is None:
        return failed or ("", [], [])
    rows = [
        [
            image["file"],
            ", ".join(f"{item['class']} ({item['probability']:.2f})" for item in image["present"]) or "none",
            ", ".join(image["heatmaps"]),
        ]
        for image in result["images"]
    ]
    scale = "one shared colour scale" if result.get("shared_scale") else "each map scaled to its own peak"
    status = f"Components in {len(rows)} image(s); heatmaps on {scale}." + _skipped_line(result)
    return status, ["file", "present (probability)", "heatmaps"], rows


def boards_summary(result: dict[str, Any] | None) -> Summary:
    """Status with the lot's value and the price table's date, and a table of boards."""
    failed = _failed(result)
    if failed is not None or result is None:
        return failed or ("", [], [])
    prices = result["price_table"]
    rows = []
    for image in result["images"]:
        value = image["value"]
        interval = (
            f"{value['expected']:.2f} ({value['low']:.2f} to {value['high']:.2f})"
            if value["expected"] is not None
            else "n/a"
        )
        counts = ", ".join(f"{name} {count}" for name, count in sorted(image["counts"].items()))
        rows.append([image["file"], len(image["detections"]), f"{value['detected']:.2f}", interval, counts])
    currency = prices["currency"]
    total = sum(image["value"]["detected"] for image in result["images"])
    status = f"{len(rows)} board(s), detected value **{total:.2f} {currency}**"
    lot = result.get("lot")
    if lot:
        status += (
            f", corrected {lot['expected']:.2f} ({lot['confidence']:.0%} interval "
            f"{lot['low']:.2f} to {lot['high']:.2f})"
        )
    status += f"; prices of {prices['date']}."
    if result.get("interval_note"):
        status += f" {result['interval_note']}."
    header = ["file", "boxes", f"value ({currency})", "corrected (90% interval)", "components"]
    return status + _skipped_line(result), header, rows


def fusion_summary(result: dict[str, Any] | None) -> Summary:
    """Status and a table: each pair, its most probable classes, what each stream's layer says."""
    failed = _failed(result)
    if failed is not None or result is None:
        return failed or ("", [], [])
    rows = [
        [
            image["file"],
            image["xray"],
            ", ".join(f"{top['class']} ({top['probability']:.2f})" for top in image["top"][:3]),
            image["streams"]["rgb"],
            image["streams"]["xray"],
        ]
        for image in result["images"]
    ]
    status = f"Classified {len(rows)} RGB + X-ray pair(s) with **{result['model']}**." + _skipped_line(result)
    return status, ["rgb", "xray", "fused (probability)", "RGB stream", "X-ray stream"], rows


SUMMARIES: dict[str, Callable[[dict[str, Any] | None], Summary]] = {
    "classify": classify_summary,
    "multilabel": components_summary,
    "detect": boards_summary,
    "fuse": fusion_summary,
}
"""{task: summary function} for the page."""
