"""Count correction, bootstrap intervals, the ground-truth comparison, and the lot report files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ewaste_vision.value.lot_report import CSV_NAME, PLOT_NAME, write_lot_report
from ewaste_vision.value.model import BoardValue, Detection, board_value
from ewaste_vision.value.prices import load_price_table
from ewaste_vision.value.uncertainty import (
    compare_with_ground_truth,
    corrected_counts,
    value_interval,
)

IC_EUR = 0.457e-3 * 1820 / 31.1034768


def ic_board(image: str, n: int, piece: float = 1.0) -> BoardValue:
    """A board of `n` detected ICs worth `piece` each, built by hand."""
    return BoardValue(image, n * piece, "EUR", {"ic": n}, {"ic": n * piece} if n else {}, {})


def test_corrected_counts_are_detections_times_precision_over_recall() -> None:
    board = ic_board("a", 20)
    assert corrected_counts(board, {"ic": {"precision": 0.9, "recall": 0.6}}) == pytest.approx({"ic": 30.0})


def test_interval_contains_the_corrected_value_and_lot_sums_boards() -> None:
    boards = [ic_board("a", 20, 0.5), ic_board("b", 7, 0.5), ic_board("c", 0)]
    result = value_interval(boards, {"ic": {"precision": 0.8, "recall": 0.7}}, n_draws=2000, seed=1)
    a = result.for_image("a")
    assert a.detected == pytest.approx(10.0)
    assert a.expected == pytest.approx(20 * 0.8 / 0.7 * 0.5)
    for interval in [*result.boards, result.lot]:
        assert interval.low <= interval.expected <= interval.high
        assert interval.confidence == 0.9
    assert result.for_image("c").low == result.for_image("c").high == 0.0
    assert result.lot.expected == pytest.approx(27 * 0.8 / 0.7 * 0.5)
    assert result.lot.high - result.lot.low < (a.high - a.low) + (
        result.boards[1].high - result.boards[1].low
    )


def test_interval_narrows_as_precision_and_recall_rise() -> None:
    boards = [ic_board("a", 40)]
    widths = []
    for rate in (0.5, 0.8, 0.95, 1.0):
        interval = value_interval(boards, {"ic": {"precision": rate, "recall": rate}}, seed=0).boards[0]
        widths.append(interval.high - interval.low)
    assert widths[0] > widths[1] > widths[2] > widths[3] == 0.0


def test_uncertain_rates_widen_the_lot_interval_and_seed_reproduces() -> None:
    boards = [ic_board(str(i), 30) for i in range(20)]
    exact = value_interval(boards, {"ic": {"precision": 0.8, "recall": 0.7}}, seed=4)
    measured = {"ic": {"precision": 0.8, "recall": 0.7, "n_predicted": 25, "n_true": 30}}
    uncertain = value_interval(boards, measured, seed=4)
    assert uncertain.lot.high - uncertain.lot.low > 2 * (exact.lot.high - exact.lot.low)
    assert value_interval(boards, measured, seed=4) == uncertain


def test_interval_covers_the_true_value_about_90_percent_of_the_time() -> None:
    # Simulate a detector with known precision and recall on boards of varying true IC counts.
    rng = np.random.default_rng(7)
    precision, recall = 0.8, 0.7
    true_counts = rng.integers(5, 80, size=300)
    boards = []
    for index, true_count in enumerate(true_counts):
        found = rng.binomial(true_count, recall)
        false = rng.binomial(found * 10, (1 - precision) / precision / 10)  # mean found (1 - p) / p
        boards.append(ic_board(str(index), int(found + false)))
    result = value_interval(boards, {"ic": {"precision": precision, "recall": recall}}, n_draws=500, seed=0)
    coverage = np.mean([i.low <= t <= i.high for i, t in zip(result.boards, true_counts, strict=True)])
    assert 0.85 <= coverage <= 0.97


def test_valued_class_without_rates_is_refused_but_unvalued_needs_none() -> None:
    table = load_price_table()
    board = board_value([Detection("ic", (0, 0, 1, 1)), Detection("resistor", (0, 0, 1, 1))], table)
    with pytest.raises(ValueError, match=r"\['ic'\]"):
        value_interval([board], {"resistor": {"precision": 0.9, "recall": 0.9}})
    assert value_interval([board], {"ic": {"precision": 1.0, "recall": 1.0}}).lot.expected == pytest.approx(
        IC_EUR
    )


@pytest.mark.parametrize(("precision", "recall"), [(1.2, 0.5), (0.5, 0.0), (-0.1, 0.5)])
def test_impossible_rates_are_refused(precision: float, recall: float) -> None:
    with pytest.raises(ValueError):
        value_interval([ic_board("a", 3)], {"ic": {"precision": precision, "recall": recall}})


def test_compare_with_ground_truth_by_hand() -> None:
    predicted = [ic_board("a", 11, 0.1), ic_board("b", 5, 0.1), ic_board("c", 20, 0.1)]
    truth = [ic_board("c", 0), ic_board("b", 10, 0.1), ic_board("a", 10, 0.1)]
    result = compare_with_ground_truth(predicted, truth)
    assert [e.image for e in result.boards] == ["a", "b", "c"]
    assert result.boards[0].relative_error == pytest.approx(0.1)
    assert result.boards[1].relative_error == pytest.approx(-0.5)
    assert result.boards[2].relative_error is None  # true value 0: no relative error
    assert result.n_zero_truth == 1
    assert result.median_abs_relative_error == pytest.approx(0.3)
    assert result.p90_abs_relative_error == pytest.approx(0.1 + 0.9 * 0.4)
    assert result.lot_predicted == pytest.approx(3.6)
    assert result.lot_true == pytest.approx(2.0)
    assert result.lot_relative_error == pytest.approx(0.8)


def test_compare_refuses_different_boards() -> None:
    with pytest.raises(ValueError, match="only predicted \\['x'\\]"):
        compare_with_ground_truth([ic_board("x", 1)], [ic_board("y", 1)])


def _lot(table_boxes: dict[str, list[Detection]]) -> list[BoardValue]:
    table = load_price_table()
    return [board_value(detections, table, image=image) for image, detections in table_boxes.items()]


BOX = (0.0, 0.0, 4.0, 4.0)
LOT = {
    "board_1.png": [Detection("ic", BOX)] * 3 + [Detection("resistor", BOX)] * 2,
    "board_2.png": [Detection("bga_pga", BOX), Detection("capacitor", BOX)],
}


def test_lot_csv_has_one_row_per_board_with_counts_value_and_interval(tmp_path: Path) -> None:
    table = load_price_table()
    boards = _lot(LOT)
    rates = {"ic": {"precision": 0.9, "recall": 0.8}, "bga_pga": {"precision": 0.95, "recall": 0.9}}
    uncertainty = value_interval(boards, rates, seed=0)
    write_lot_report(tmp_path, boards, table, uncertainty=uncertainty)
    with open(tmp_path / CSV_NAME, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == [
        "image",
        "n_bga_pga",
        "n_capacitor",
        "n_ic",
        "n_resistor",
        "value_EUR",
        "value_low_EUR",
        "value_high_EUR",
        "n_not_valued",
    ]
    assert [row["image"] for row in rows] == ["board_1.png", "board_2.png"]
    first = rows[0]
    assert (first["n_ic"], first["n_resistor"], first["n_bga_pga"], first["n_not_valued"]) == (
        "3",
        "2",
        "0",
        "2",
    )
    assert float(first["value_EUR"]) == pytest.approx(3 * IC_EUR, abs=1e-4)
    interval = uncertainty.for_image("board_1.png")
    assert float(first["value_low_EUR"]) == pytest.approx(interval.low, abs=1e-4)
    assert float(first["value_high_EUR"]) == pytest.approx(interval.high, abs=1e-4)


def test_lot_csv_leaves_interval_empty_without_uncertainty(tmp_path: Path) -> None:
    write_lot_report(tmp_path, _lot(LOT), load_price_table())
    with open(tmp_path / CSV_NAME, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["value_low_EUR"] == rows[0]["value_high_EUR"] == ""


def test_markdown_summary_has_totals_classes_plot_prices_and_metrics(tmp_path: Path) -> None:
    table = load_price_table()
    metrics = {"map50": 0.612, "ic": {"precision": 0.9, "recall": 0.8}}
    report = write_lot_report(tmp_path / "lot", _lot(LOT), table, metrics=metrics)
    text = report.read_text(encoding="utf-8")
    assert report.name == "value_report.md"
    assert (tmp_path / "lot" / PLOT_NAME).read_bytes().startswith(b"\x89PNG")
    assert f"]({PLOT_NAME})" in text
    assert "Boards: 2" in text
    assert "Detections: 7, of which not valued: 3" in text
    assert "| `bga_pga` | `bga_pga` | 1 |" in text
    assert "| `resistor` | 2 | no value known (null in class_map) |" in text
    assert "Currency **EUR**, prices as of **2023-04**" in text
    assert "1820 EUR/troy_oz" in text
    assert "## Detector test metrics" in text and "0.612" in text
    without = write_lot_report(tmp_path / "bare", _lot(LOT), table).read_text(encoding="utf-8")
    assert "## Detector test metrics" not in without


def test_report_of_a_lot_with_nothing_valued_still_writes_every_file(tmp_path: Path) -> None:
    boards = _lot({"empty.png": [Detection("resistor", BOX)]})
    text = write_lot_report(tmp_path, boards, load_price_table()).read_text(encoding="utf-8")
    assert "No detection belongs to a class with a known value." in text
    assert (tmp_path / PLOT_NAME).is_file()
    assert (tmp_path / CSV_NAME).is_file()
