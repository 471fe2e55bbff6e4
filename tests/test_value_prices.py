"""Price tables: the packaged default holds source 001's figures, and bad files fail with one line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ewaste_vision.data.synth import COMPONENT_CLASSES
from ewaste_vision.errors import UserError
from ewaste_vision.value.prices import load_price_table

TROY_OUNCE_G = 31.1034768
PCB_COMPONENTS_CLASSES = [
    "ic",
    "led",
    "inductor",
    "potentiometer",
    "relay",
    "resistor",
    "button",
    "transistor",
    "battery",
    "buzzer",
    "capacitor",
    "clock_crystal",
    "connector",
    "diode",
    "display",
    "fuse",
]

MINIMAL: dict[str, Any] = {
    "currency": "EUR",
    "date": "2023-04",
    "metals": {"gold": {"price": 1820, "unit": "EUR/troy_oz"}},
    "value_classes": {"ic": {"contents": {"gold": {"amount": 0.457, "unit": "mg"}}, "recovery_yield": 1.0}},
    "class_map": {"ic": "ic", "resistor": None},
}


def write_table(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "prices.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_default_table_states_currency_date_and_001_gold_price() -> None:
    table = load_price_table()
    assert table.currency == "EUR"
    assert table.date == "2023-04"
    assert table.metals["gold"].per_gram == pytest.approx(1820 / TROY_OUNCE_G, rel=1e-12)
    assert table.metals["tantalum_capacitor_scrap"].per_gram == pytest.approx(25 / 1000, rel=1e-12)


@pytest.mark.parametrize(
    ("value_class", "cents_in_001"),
    [("ic", 2.7), ("bga_pga", 27.6), ("connector", 5.3), ("connector_high_grade", 13.7)],
)
def test_default_piece_values_match_001(value_class: str, cents_in_001: float) -> None:
    # 001 rounds to 0.1 ct (+-0.05) after multiplying by the rounded 5.85 ct/mg (+0.01 on Chg).
    assert 100 * load_price_table().piece_value(value_class) == pytest.approx(cents_in_001, abs=0.06)
    assert 100 * 1e-3 * load_price_table().metals["gold"].per_gram == pytest.approx(5.85, abs=0.005)


def test_default_tantalum_capacitor_is_capacitor_mass_times_scrap_price() -> None:
    piece = load_price_table().piece_value("tantalum_capacitor")
    assert piece == pytest.approx(0.767 * 25 / 1000, rel=1e-12)  # 767 mg = 0.767 g at 25 EUR/kg
    assert 100 * piece == pytest.approx(1.9, abs=0.05)  # 001: "1.9 ct per TC"


def test_default_class_map_decides_every_known_class_name() -> None:
    table = load_price_table()
    for name in (*PCB_COMPONENTS_CLASSES, *COMPONENT_CLASSES):
        assert name in table.class_map, f"{name} has no explicit entry in the default class_map"
    assert table.value_class_of("ic") == "ic"
    assert table.value_class_of("connector") == "connector"
    # A generic capacitor class mixes ceramic and tantalum parts; 001 only values tantalum ones.
    assert table.value_class_of("capacitor") is None
    assert table.value_class_of("clock_crystal") is None


def test_custom_table_applies_recovery_yield_and_other_units(tmp_path: Path) -> None:
    data = copy.deepcopy(MINIMAL)
    data["currency"] = "USD"
    data["metals"]["gold"] = {"price": 60.0, "unit": "USD/g"}
    data["value_classes"]["ic"] = {"contents": {"gold": {"amount": 0.5, "unit": "g"}}, "recovery_yield": 0.8}
    table = load_price_table(write_table(tmp_path, data))
    assert table.piece_value("ic") == pytest.approx(0.5 * 60.0 * 0.8)


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    if value is _DELETE:
        del data[last]
    else:
        data[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("metals.gold.price", -3, "metals.gold.price: negative amount -3; give a price >= 0"),
        ("metals.gold.price", _DELETE, "metals.gold.price: missing price"),
        ("metals.gold.price", "lots", "metals.gold.price: 'lots' is not a number"),
        ("metals.gold.unit", "EUR/furlong", "metals.gold.unit: unknown unit 'EUR/furlong'"),
        ("metals.gold.unit", "USD/g", "metals.gold.unit: unit 'USD/g' is not in the table's currency EUR"),
        (
            "value_classes.ic.contents.gold.amount",
            -1,
            "value_classes.ic.contents.gold.amount: negative amount",
        ),
        ("value_classes.ic.contents.gold.unit", "carat", "value_classes.ic.contents.gold.unit: unknown unit"),
        ("value_classes.ic.contents.silver", {"amount": 1, "unit": "mg"}, "contents.silver: missing price"),
        ("value_classes.ic.recovery_yield", -0.1, "value_classes.ic.recovery_yield: negative amount"),
        ("value_classes.ic.recovery_yield", 1.5, "value_classes.ic.recovery_yield: yield 1.5 is above 1"),
        ("class_map.ic", "chip", "class_map.ic: unknown value class 'chip'"),
        ("currency", _DELETE, "currency: missing"),
        ("date", _DELETE, "date: missing"),
    ],
)
def test_bad_price_file_names_file_and_key_in_one_line(
    tmp_path: Path, key: str, value: Any, expected: str
) -> None:
    data = copy.deepcopy(MINIMAL)
    _set(data, key, value)
    path = write_table(tmp_path, data)
    with pytest.raises(UserError) as caught:
        load_price_table(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_missing_file_and_broken_yaml_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="price table not found"):
        load_price_table(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("currency: EUR\nmetals: [unclosed\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"broken\.yaml: line \d+ not valid YAML"):
        load_price_table(broken)
