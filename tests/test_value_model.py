"""The board value model: hand-counted boards at the default prices, not-valued classes, size scaling."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from ewaste_vision.value.model import Detection, board_value, class_mean_areas, lot_values
from ewaste_vision.value.prices import load_price_table

# 001's figures, written out here rather than read from the table, so a wrong table fails.
GOLD_EUR_PER_G = 1820 / 31.1034768
IC_EUR = 0.457e-3 * GOLD_EUR_PER_G
BGA_EUR = 4.71e-3 * GOLD_EUR_PER_G
CONNECTOR_EUR = 0.914e-3 * GOLD_EUR_PER_G


def box(width: float, height: float) -> tuple[float, float, float, float]:
    return (10.0, 20.0, 10.0 + width, 20.0 + height)


def test_two_ics_at_default_prices() -> None:
    result = board_value([Detection("ic", box(5, 5)), Detection("ic", box(8, 3))], load_price_table())
    assert result.value == pytest.approx(2 * 0.457e-3 * 1820 / 31.1034768, rel=1e-12)
    assert result.counts == {"ic": 2}
    assert result.not_valued == {}
    assert result.currency == "EUR"


def test_mixed_board_sums_classes_and_lists_unvalued_ones() -> None:
    detections = [
        Detection("ic", box(5, 5)),
        Detection("bga_pga", box(20, 20)),
        Detection("connector", box(30, 4)),
        Detection("connector", box(30, 4)),
        Detection("resistor", box(2, 1)),  # null in the default class_map
        Detection("resistor", box(2, 1)),
        Detection("flux_capacitor", box(2, 1)),  # not in the class_map at all
    ]
    result = board_value(detections, load_price_table(), image="board_07.png")
    assert result.image == "board_07.png"
    assert result.value == pytest.approx(IC_EUR + BGA_EUR + 2 * CONNECTOR_EUR, rel=1e-12)
    assert result.class_values == pytest.approx(
        {"bga_pga": BGA_EUR, "connector": 2 * CONNECTOR_EUR, "ic": IC_EUR}, rel=1e-12
    )
    assert result.counts == {"bga_pga": 1, "connector": 2, "flux_capacitor": 1, "ic": 1, "resistor": 2}
    assert result.not_valued == {"flux_capacitor": 1, "resistor": 2}
    assert result.n_not_valued == 3


def test_board_of_only_unvalued_classes_is_not_silently_zero() -> None:
    result = board_value([Detection("capacitor", box(3, 3))] * 4, load_price_table())
    assert result.value == 0.0
    assert result.not_valued == {"capacitor": 4}
    assert "capacitor" not in result.class_values


def test_size_scaling_with_stored_class_means() -> None:
    table = load_price_table()
    small, large = Detection("ic", box(10, 10)), Detection("ic", box(30, 10))  # 100 and 300 px^2
    scaled = board_value([small, large], table, size_scaling=True, class_mean_area={"ic": 100.0})
    assert scaled.value == pytest.approx((1.0 + 3.0) * IC_EUR, rel=1e-12)
    unscaled = board_value([small, large], table, class_mean_area={"ic": 100.0})
    assert unscaled.value == pytest.approx(2 * IC_EUR, rel=1e-12)


def test_size_scaling_without_means_uses_the_lot_means() -> None:
    table = load_price_table()
    boards = {"a.png": [Detection("ic", box(10, 10))], "b.png": [Detection("ic", box(30, 10))]}
    assert class_mean_areas(boards.values()) == {"ic": 200.0}
    a, b = lot_values(boards, table, size_scaling=True)
    assert (a.image, b.image) == ("a.png", "b.png")
    assert a.value == pytest.approx(0.5 * IC_EUR, rel=1e-12)
    assert b.value == pytest.approx(1.5 * IC_EUR, rel=1e-12)


def test_size_scaling_needs_a_mean_for_every_valued_class() -> None:
    detections = [Detection("ic", box(5, 5)), Detection("resistor", box(1, 1))]
    with pytest.raises(ValueError, match="'ic'"):
        board_value(detections, load_price_table(), size_scaling=True, class_mean_area={"resistor": 1.0})


def test_malformed_box_is_rejected() -> None:
    with pytest.raises(ValueError, match="x2 >= x1"):
        board_value([Detection("ic", (50.0, 50.0, 10.0, 10.0))], load_price_table(), size_scaling=True)


class DetectorOutput(NamedTuple):
    """Another module's result type: anything with class_name and box is accepted."""

    class_name: str
    box: tuple[float, float, float, float]
    score: float


def test_accepts_any_object_with_class_name_and_box() -> None:
    result = board_value([DetectorOutput("bga_pga", box(4, 4), 0.4)], load_price_table())
    assert result.value == pytest.approx(BGA_EUR, rel=1e-12)
