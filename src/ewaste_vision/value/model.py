"""The board value model: detected components in, the board's material value out.

Following source 001, a board is worth the sum over its detected components of (content per
piece x price x recovery yield), with contents and prices from a `PriceTable`. A detected class
the table cannot value is counted and listed as "not valued", never silently worth zero.

Optionally a component's content is scaled by its box area relative to its class's mean area
(001 suggests the size of the detected objects could be taken into account): a BGA twice the
usual area is taken to hold twice the usual gold.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ewaste_vision.value.prices import PriceTable

Box = tuple[float, float, float, float]
"""x1, y1, x2, y2 in pixels."""


class DetectionLike(Protocol):
    """Anything with a class name and an xyxy pixel box, e.g. a detector's own result type."""

    @property
    def class_name(self) -> str:
        """Detector class name."""
        ...

    @property
    def box(self) -> Box:
        """x1, y1, x2, y2 in pixels."""
        ...


@dataclass(frozen=True)
class Detection:
    """One detected (or ground-truth) component on a board."""

    class_name: str
    """Detector class name, looked up in the price table's `class_map`."""
    box: Box
    """x1, y1, x2, y2 in pixels."""
    score: float = 1.0
    """Detector confidence; 1.0 for ground truth. The value model does not threshold it."""


@dataclass(frozen=True)
class BoardValue:
    """The value of one board and how it was made up."""

    image: str
    """Board identifier, usually the image file name."""
    value: float
    """Sum of the valued components' values, in `currency`."""
    currency: str
    """Currency of every value here."""
    counts: dict[str, int] = field(default_factory=dict)
    """{detector class: detections}, valued or not."""
    class_values: dict[str, float] = field(default_factory=dict)
    """{detector class: value} for the valued classes."""
    not_valued: dict[str, int] = field(default_factory=dict)
    """{detector class: detections} for classes without a known value."""

    @property
    def n_not_valued(self) -> int:
        """Detections left out of `value` because their class has no known value."""
        return sum(self.not_valued.values())


def box_area(box: Box) -> float:
    """Area of an xyxy box in square pixels.

    Raises:
        ValueError: if x2 < x1 or y2 < y1 (a box in another format, such as xywh, can look like this).
    """
    x1, y1, x2, y2 = box
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box {box} is not x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
    return (x2 - x1) * (y2 - y1)


def class_mean_areas(boards: Iterable[Iterable[DetectionLike]]) -> dict[str, float]:
    """Mean box area per class over all boxes of all boards, for `size_scaling`.

    Store these from a reference set (e.g. the training labels) and pass them to `board_value`,
    so one board's value does not depend on which other boards are in the lot.
    """
    totals: dict[str, float] = defaultdict(float)
    counts: Counter[str] = Counter()
    for detections in boards:
        for detection in detections:
            totals[detection.class_name] += box_area(detection.box)
            counts[detection.class_name] += 1
    return {name: totals[name] / counts[name] for name in sorted(counts)}


def board_value(
    detections: Iterable[DetectionLike],
    table: PriceTable,
    size_scaling: bool = False,
    class_mean_area: Mapping[str, float] | None = None,
    image: str = "",
) -> BoardValue:
    """Value one board from its detected components.

    Args:
        detections: the board's components; only `class_name` and `box` are used.
        table: contents, prices and the detector-class to value-class map.
        size_scaling: scale each component's content by its box area / its class's mean area.
        class_mean_area: {detector class: mean box area in px^2} for `size_scaling`, e.g. from
            `class_mean_areas` on a reference set. None takes the means of this board's own boxes,
            which only moves value between pieces of a class; use `lot_values` to take the means
            over a whole lot instead.
        image: board identifier carried into the result.

    Returns:
        The board's value, per-class counts and values, and the not-valued counts.

    Raises:
        ValueError: if a box is malformed, or `size_scaling` is on and `class_mean_area` lacks a
            valued class or gives it a mean area <= 0.
    """
    detections = list(detections)
    counts = Counter(d.class_name for d in detections)
    means: Mapping[str, float] = {}
    if size_scaling:
        means = class_mean_area if class_mean_area is not None else class_mean_areas([detections])
    class_values: dict[str, float] = defaultdict(float)
    not_valued: Counter[str] = Counter()
    for detection in detections:
        value_class = table.value_class_of(detection.class_name)
        if value_class is None:
            not_valued[detection.class_name] += 1
            continue
        scale = _size_scale(detection, means) if size_scaling else 1.0
        class_values[detection.class_name] += table.piece_value(value_class) * scale
    return BoardValue(
        image=image,
        value=float(sum(class_values.values())),
        currency=table.currency,
        counts=dict(sorted(counts.items())),
        class_values=dict(sorted(class_values.items())),
        not_valued=dict(sorted(not_valued.items())),
    )


def lot_values(
    boards: Mapping[str, Sequence[DetectionLike]],
    table: PriceTable,
    size_scaling: bool = False,
    class_mean_area: Mapping[str, float] | None = None,
) -> list[BoardValue]:
    """Value every board of a lot; with `size_scaling`, class means default to the whole lot's.

    Args:
        boards: {image: detections}.
        table: the price table.
        size_scaling: as in `board_value`.
        class_mean_area: stored per-class mean areas; None computes them over all boards given.

    Returns:
        One `BoardValue` per board, in the order of `boards`.
    """
    if size_scaling and class_mean_area is None:
        class_mean_area = class_mean_areas(boards.values())
    return [
        board_value(detections, table, size_scaling, class_mean_area, image=image)
        for image, detections in boards.items()
    ]


def _size_scale(detection: DetectionLike, means: Mapping[str, float]) -> float:
    mean = means.get(detection.class_name)
    if mean is None or mean <= 0:
        raise ValueError(
            f"size scaling needs a mean box area > 0 for class {detection.class_name!r}, got {mean}"
        )
    return box_area(detection.box) / mean
