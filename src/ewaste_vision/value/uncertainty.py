"""How far off a board's value may be: a modelled interval, and the error measured on ground truth.

Count correction. A detector with precision p and recall r for a class that reports n boxes
implies n x p true components found, and (n x p) / r true components on the board, so the
expected value is sum over classes of (n x p / r) x (mean value per detected piece).

Interval: a parametric bootstrap over the detector's errors, with a seeded
`numpy.random.Generator` and `n_draws` draws (default 2000). In each draw, per board and class:

1. true positives among the n detections: TP ~ Binomial(n, p);
2. missed components given TP found: FN ~ NegativeBinomial(TP, r), the number of misses before
   TP hits when each component is found with probability r (mean TP (1 - r) / r);
3. the class's value in that draw is (TP + FN) x (mean value per detected piece).

A board's draw is the sum over its classes and the lot's draw the sum over boards, so the lot
interval keeps the right dependence. The interval is the central `confidence` (default 90%)
range of the draws, by percentiles.

Where the test-set counts behind p and r are given (`n_predicted` detections, `n_true` ground-truth
components), p and r themselves are drawn once per draw from Jeffreys Beta posteriors and shared by
every board: a precision measured on 20 boxes is uncertain, and that error hits the whole lot at
once rather than averaging out. Without those counts p and r are taken as exact and the interval
is too narrow by the amount they are uncertain.

Not modelled: the spread of metal content between pieces of a class (001 gives means only),
price changes, and components of a class the detector missed on a board where it found none of
that class (TP = 0 implies FN = 0 here). Check the interval against `compare_with_ground_truth`
on boards with labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ewaste_vision.value.model import BoardValue

DEFAULT_DRAWS = 2000
"""Bootstrap draws: the 5th and 95th percentiles then move by well under 1% between seeds."""

_MIN_RECALL = 1e-9
"""Beta draws can underflow to 0; the negative binomial needs a success probability above 0."""


@dataclass(frozen=True)
class DetectorRates:
    """A detector's test precision and recall for one class."""

    precision: float
    """Share of detections that are real components, in [0, 1]."""
    recall: float
    """Share of real components detected, in (0, 1]."""
    n_predicted: int | None = None
    """Test-set detections `precision` was measured on; None takes precision as exact."""
    n_true: int | None = None
    """Test-set ground-truth components `recall` was measured on; None takes recall as exact."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.precision <= 1.0:
            raise ValueError(f"precision must be in [0, 1], got {self.precision}")
        if not 0.0 < self.recall <= 1.0:
            raise ValueError(
                f"recall must be in (0, 1]; with recall 0 no count can be corrected, got {self.recall}"
            )
        for name in ("n_predicted", "n_true"):
            count = getattr(self, name)
            if count is not None and count < 0:
                raise ValueError(f"{name} must be >= 0, got {count}")


@dataclass(frozen=True)
class ValueInterval:
    """A value with its count-corrected estimate and interval."""

    image: str
    """Board identifier; "lot" for the lot total."""
    detected: float
    """Value of the detections as counted."""
    expected: float
    """Value after correcting counts to n x precision / recall."""
    low: float
    """Lower end of the interval."""
    high: float
    """Upper end of the interval."""
    confidence: float
    """Coverage the interval aims at, e.g. 0.9."""


@dataclass(frozen=True)
class LotUncertainty:
    """Intervals for every board and for the lot total, and how they were made."""

    boards: list[ValueInterval]
    """One per board, in input order."""
    lot: ValueInterval
    """The lot total."""
    n_draws: int
    """Bootstrap draws used."""
    seed: int
    """Seed of the numpy Generator."""

    def for_image(self, image: str) -> ValueInterval:
        """The interval of one board.

        Raises:
            KeyError: if no board has that identifier.
        """
        for interval in self.boards:
            if interval.image == image:
                return interval
        raise KeyError(image)


def as_rates(metrics: Mapping[str, DetectorRates | Mapping[str, float]]) -> dict[str, DetectorRates]:
    """Read {class: {"precision": p, "recall": r, ...}} (extra keys ignored) into `DetectorRates`."""
    rates = {}
    for name, entry in metrics.items():
        if isinstance(entry, DetectorRates):
            rates[name] = entry
            continue
        n_predicted, n_true = entry.get("n_predicted"), entry.get("n_true")
        rates[name] = DetectorRates(
            precision=float(entry["precision"]),
            recall=float(entry["recall"]),
            n_predicted=None if n_predicted is None else int(n_predicted),
            n_true=None if n_true is None else int(n_true),
        )
    return rates


def corrected_counts(
    board: BoardValue, rates: Mapping[str, DetectorRates | Mapping[str, float]]
) -> dict[str, float]:
    """Expected true count per class, n x precision / recall, for the classes that have rates."""
    known = as_rates(rates)
    return {
        name: count * known[name].precision / known[name].recall
        for name, count in board.counts.items()
        if name in known
    }


def value_interval(
    boards: Sequence[BoardValue],
    rates: Mapping[str, DetectorRates | Mapping[str, float]],
    confidence: float = 0.9,
    n_draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> LotUncertainty:
    """Count-corrected values and bootstrap intervals for each board and the lot (see module doc).

    Args:
        boards: results of `board_value`.
        rates: {detector class: DetectorRates or {"precision", "recall"[, "n_predicted", "n_true"]}}
            from the detector's test set; needed for every valued class that was detected.
        confidence: central coverage of the intervals, in (0, 1).
        n_draws: bootstrap draws.
        seed: seed of the numpy Generator, so a report can be reproduced.

    Returns:
        Intervals per board and for the lot.

    Raises:
        ValueError: if a detected valued class has no rates, or `confidence`/`n_draws` are out of range.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    known = as_rates(rates)
    valued = sorted({name for board in boards for name in board.class_values if board.counts.get(name)})
    missing = [name for name in valued if name not in known]
    if missing:
        raise ValueError(f"no precision/recall for detected valued classes {missing}; give rates for each")

    rng = np.random.default_rng(seed)
    precision_draws = {
        name: _rate_draws(rng, known[name].precision, known[name].n_predicted, n_draws) for name in valued
    }
    recall_draws = {
        name: np.clip(_rate_draws(rng, known[name].recall, known[name].n_true, n_draws), _MIN_RECALL, 1.0)
        for name in valued
    }
    quantiles = [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0]
    lot_draws = np.zeros(n_draws)
    intervals = []
    for board in boards:
        draws = np.zeros(n_draws)  # [n_draws] the board's value in each draw
        expected = 0.0
        for name, class_value in board.class_values.items():
            detected = board.counts.get(name, 0)
            if detected == 0:
                continue
            piece = class_value / detected  # mean value per detected piece (differs with size scaling)
            expected += detected * known[name].precision / known[name].recall * piece
            found = rng.binomial(detected, precision_draws[name])  # [n_draws]
            # numpy's negative binomial needs n > 0; with nothing found there is nothing to scale up.
            missed = np.where(found > 0, rng.negative_binomial(np.maximum(found, 1), recall_draws[name]), 0)
            draws += (found + missed) * piece
        lot_draws += draws
        low, high = np.quantile(draws, quantiles)
        intervals.append(
            ValueInterval(board.image, board.value, expected, float(low), float(high), confidence)
        )
    low, high = np.quantile(lot_draws, quantiles)
    lot = ValueInterval(
        image="lot",
        detected=float(sum(board.value for board in boards)),
        expected=float(sum(interval.expected for interval in intervals)),
        low=float(low),
        high=float(high),
        confidence=confidence,
    )
    return LotUncertainty(boards=intervals, lot=lot, n_draws=n_draws, seed=seed)


@dataclass(frozen=True)
class BoardError:
    """Predicted against ground-truth value for one board."""

    image: str
    """Board identifier."""
    predicted: float
    """Value from the detector's boxes."""
    true: float
    """Value from the labelled boxes."""
    relative_error: float | None
    """(predicted - true) / true; None when the true value is 0."""


@dataclass(frozen=True)
class ValueComparison:
    """How far values from predicted boxes are from values from ground-truth boxes."""

    boards: list[BoardError]
    """One per board, in the order of `predicted`."""
    median_abs_relative_error: float | None
    """Median over boards of |relative error|; None when no board has a true value above 0."""
    p90_abs_relative_error: float | None
    """90th percentile (linear interpolation) of |relative error| over boards."""
    lot_predicted: float
    """Sum of predicted board values."""
    lot_true: float
    """Sum of ground-truth board values."""
    lot_relative_error: float | None
    """(lot_predicted - lot_true) / lot_true; None when lot_true is 0."""
    n_zero_truth: int
    """Boards left out of the relative statistics because their true value is 0."""


def compare_with_ground_truth(
    predicted: Sequence[BoardValue], ground_truth: Sequence[BoardValue]
) -> ValueComparison:
    """Compare board values from predicted boxes with values from labelled boxes, matched by image.

    Both sides must be valued with the same price table and options. Errors on single boards
    partly cancel in a lot, so the lot error is usually far below the median board error.

    Args:
        predicted: `board_value` results from the detector's boxes.
        ground_truth: `board_value` results from the labels of the same boards.

    Returns:
        Per-board errors, their median and 90th percentile, and the error on the lot total.

    Raises:
        ValueError: if the two sides do not hold the same images, or an image appears twice.
    """
    truth = {board.image: board for board in ground_truth}
    images = [board.image for board in predicted]
    if len(truth) != len(ground_truth) or len(set(images)) != len(images):
        raise ValueError("each image must appear once on each side")
    if set(images) != set(truth):
        only_predicted = sorted(set(images) - set(truth))
        only_truth = sorted(set(truth) - set(images))
        raise ValueError(f"images differ: only predicted {only_predicted}, only ground truth {only_truth}")

    errors = [
        BoardError(
            image=board.image,
            predicted=board.value,
            true=truth[board.image].value,
            relative_error=_relative(board.value, truth[board.image].value),
        )
        for board in predicted
    ]
    absolute = np.array([abs(e.relative_error) for e in errors if e.relative_error is not None])
    lot_predicted = float(sum(e.predicted for e in errors))
    lot_true = float(sum(e.true for e in errors))
    return ValueComparison(
        boards=errors,
        median_abs_relative_error=float(np.median(absolute)) if absolute.size else None,
        p90_abs_relative_error=float(np.percentile(absolute, 90)) if absolute.size else None,
        lot_predicted=lot_predicted,
        lot_true=lot_true,
        lot_relative_error=_relative(lot_predicted, lot_true),
        n_zero_truth=len(errors) - int(absolute.size),
    )


def _relative(predicted: float, true: float) -> float | None:
    return (predicted - true) / true if true > 0 and math.isfinite(true) else None


def _rate_draws(rng: np.random.Generator, rate: float, n: int | None, n_draws: int) -> np.ndarray:
    if n is None or n == 0:
        return np.full(n_draws, rate)  # [n_draws]
    # Jeffreys prior Beta(1/2, 1/2): stays proper at 0 and n successes, unlike the flat-count plug-in.
    successes = rate * n
    return rng.beta(successes + 0.5, n - successes + 0.5, size=n_draws)  # [n_draws]
