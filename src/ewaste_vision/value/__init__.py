"""Component value model: what a board is worth from its detected components.

`prices` reads price tables (the packaged default holds source 001's figures), `model` values a
board, `uncertainty` corrects counts for detector errors and gives intervals, and `lot_report`
writes the CSV and Markdown summary for a lot.
"""

from ewaste_vision.value.lot_report import write_lot_report
from ewaste_vision.value.model import (
    BoardValue,
    Detection,
    DetectionLike,
    board_value,
    class_mean_areas,
    lot_values,
)
from ewaste_vision.value.prices import PriceTable, load_price_table
from ewaste_vision.value.uncertainty import (
    DetectorRates,
    LotUncertainty,
    ValueComparison,
    ValueInterval,
    compare_with_ground_truth,
    value_interval,
)

__all__ = [
    "BoardValue",
    "Detection",
    "DetectionLike",
    "DetectorRates",
    "LotUncertainty",
    "PriceTable",
    "ValueComparison",
    "ValueInterval",
    "board_value",
    "class_mean_areas",
    "compare_with_ground_truth",
    "load_price_table",
    "lot_values",
    "value_interval",
    "write_lot_report",
]
