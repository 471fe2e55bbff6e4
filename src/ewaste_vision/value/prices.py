"""Price tables: what a component of each value class contains, and what that material is worth.

A price table is a YAML file (the packaged `default_prices.yaml` holds source 001's figures) with
`currency`, `date`, `metals` (price and unit per material), `value_classes` (content per piece and
recovery yield) and `class_map` (detector class name -> value class, or null for "no value
known"). Every figure is converted once, at load time, to currency per gram and grams per piece,
so the value model never handles units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ewaste_vision.errors import UserError

DEFAULT_PRICES_NAME = "default_prices.yaml"
"""The packaged price table with source 001's figures, beside this module."""

GRAMS_PER_UNIT: dict[str, float] = {
    "mg": 1e-3,
    "g": 1.0,
    "kg": 1e3,
    "t": 1e6,
    "lb": 453.59237,
    "oz": 28.349523125,
    "troy_oz": 31.1034768,
}
"""Mass units accepted in price and content units; exact by definition, so not a data file."""

_Fail = Callable[[str, str], UserError]
"""Builds the one-line error for (key, problem) naming the file."""


@dataclass(frozen=True)
class MaterialPrice:
    """The market price of one material, as written in the file and per gram."""

    name: str
    """Key under `metals`, e.g. "gold"."""
    price: float
    """The amount as written, in `unit`."""
    unit: str
    """As written, e.g. "EUR/troy_oz"."""
    per_gram: float
    """Currency per gram; what the value model uses."""


@dataclass(frozen=True)
class ValueClass:
    """What one piece of a value class contains and how much of it is recovered."""

    name: str
    """Key under `value_classes`, e.g. "ic"."""
    grams: dict[str, float]
    """{material: grams per piece}."""
    written: dict[str, str]
    """{material: content as written, e.g. "0.457 mg"}, for reports."""
    recovery_yield: float = 1.0
    """Fraction in [0, 1] of the contained value that the recycling process recovers."""
    description: str = ""
    """Free text shown in reports."""


@dataclass(frozen=True)
class PriceTable:
    """A loaded, validated price table."""

    source: str
    """Where the table was read from (a path), for messages and reports."""
    currency: str
    """Currency code of every price, e.g. "EUR"."""
    date: str
    """When the prices were valid, as written in the file."""
    metals: dict[str, MaterialPrice]
    """{material: price}."""
    value_classes: dict[str, ValueClass]
    """{value class: contents and yield}."""
    class_map: dict[str, str | None] = field(default_factory=dict)
    """{detector class: value class or None}; classes absent here are not valued either."""
    note: str = ""
    """The file's `source` text."""

    def value_class_of(self, class_name: str) -> str | None:
        """The value class a detector class maps to, or None when it has no known value."""
        return self.class_map.get(class_name)

    def piece_value(self, value_class: str) -> float:
        """Value of one piece of `value_class` in `currency`: sum of grams x price x yield.

        Raises:
            KeyError: if the value class is not in the table.
        """
        spec = self.value_classes[value_class]
        contained = sum(grams * self.metals[material].per_gram for material, grams in spec.grams.items())
        return contained * spec.recovery_yield

    def unvalued_reason(self, class_name: str) -> str:
        """Why a detector class is not valued: set to null on purpose, or missing from `class_map`."""
        if class_name in self.class_map:
            return "no value known (null in class_map)"
        return "not in class_map"


def default_prices_path() -> Path:
    """Path of the packaged default price table."""
    return Path(str(resources.files("ewaste_vision.value") / DEFAULT_PRICES_NAME))


def load_price_table(path: Path | str | None = None) -> PriceTable:
    """Read and check a price table YAML file.

    Args:
        path: the YAML file; None reads the packaged default (source 001's figures).

    Returns:
        The table with every price converted to currency per gram and every content to grams.

    Raises:
        UserError: one line naming the file and the key, if the file is missing or not YAML, a
            required key or price is missing, an amount is negative or not a number, a unit is
            unknown or in another currency, or `class_map` names an undefined value class.
    """
    file = Path(path) if path is not None else default_prices_path()
    if not file.is_file():
        raise UserError(f"{file}: price table not found; check the path or omit it to use the default")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise UserError(f"{file}: not UTF-8 text; save the price table as a UTF-8 YAML file") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{file}:{where} not valid YAML; fix the syntax") from error
    return _parse_table(raw, str(file))


def _parse_table(raw: Any, source: str) -> PriceTable:
    def fail(key: str, problem: str) -> UserError:
        return UserError(f"{source}: {key}: {problem}")

    if not isinstance(raw, Mapping):
        raise fail("(top level)", "expected a mapping with currency, date, metals, value_classes, class_map")
    for key in ("currency", "date", "metals", "value_classes"):
        if raw.get(key) in (None, ""):
            raise fail(key, "missing; every price table states it")
    currency = str(raw["currency"]).strip()
    metals = {
        str(name): _parse_metal(str(name), entry, currency, fail)
        for name, entry in _mapping(raw["metals"], "metals", fail).items()
    }
    value_classes = {
        str(name): _parse_value_class(str(name), entry, metals, fail)
        for name, entry in _mapping(raw["value_classes"], "value_classes", fail).items()
    }
    class_map: dict[str, str | None] = {}
    for detected, target in _mapping(raw.get("class_map") or {}, "class_map", fail).items():
        if target is not None and str(target) not in value_classes:
            raise fail(
                f"class_map.{detected}",
                f"unknown value class {target!r}; use one of {sorted(value_classes)} or null",
            )
        class_map[str(detected)] = None if target is None else str(target)
    return PriceTable(
        source=source,
        currency=currency,
        date=str(raw["date"]),
        metals=metals,
        value_classes=value_classes,
        class_map=class_map,
        note=str(raw.get("source") or ""),
    )


def _parse_metal(name: str, entry: Any, currency: str, fail: _Fail) -> MaterialPrice:
    key = f"metals.{name}"
    entry = _mapping(entry, key, fail)
    if entry.get("price") is None:
        raise fail(f"{key}.price", f"missing price; give a price in {currency} and its unit")
    price = _amount(entry["price"], f"{key}.price", "a price", fail)
    unit = str(entry.get("unit") or "")
    money, _, mass = unit.partition("/")
    if mass not in GRAMS_PER_UNIT:
        raise fail(f"{key}.unit", f"unknown unit {unit!r}; use {currency}/<mass unit> with one of {_units()}")
    if money != currency:
        raise fail(f"{key}.unit", f"unit {unit!r} is not in the table's currency {currency}; convert it")
    return MaterialPrice(name=name, price=price, unit=unit, per_gram=price / GRAMS_PER_UNIT[mass])


def _parse_value_class(name: str, entry: Any, metals: Mapping[str, MaterialPrice], fail: _Fail) -> ValueClass:
    key = f"value_classes.{name}"
    entry = _mapping(entry, key, fail)
    grams: dict[str, float] = {}
    written: dict[str, str] = {}
    for material, content in _mapping(entry.get("contents") or {}, f"{key}.contents", fail).items():
        content_key = f"{key}.contents.{material}"
        if material not in metals:
            raise fail(content_key, f"missing price; add metals.{material} with a price and unit")
        content = _mapping(content, content_key, fail)
        amount = _amount(content.get("amount"), f"{content_key}.amount", "a content", fail)
        unit = str(content.get("unit") or "")
        if unit not in GRAMS_PER_UNIT:
            raise fail(f"{content_key}.unit", f"unknown unit {unit!r}; use one of {_units()}")
        grams[str(material)] = amount * GRAMS_PER_UNIT[unit]
        written[str(material)] = f"{amount:g} {unit}"
    if not grams:
        raise fail(f"{key}.contents", "missing; give at least one material with amount and unit")
    recovery = _amount(entry.get("recovery_yield", 1.0), f"{key}.recovery_yield", "a yield", fail)
    if recovery > 1.0:
        raise fail(f"{key}.recovery_yield", f"yield {recovery:g} is above 1; give a fraction in [0, 1]")
    return ValueClass(
        name=name,
        grams=grams,
        written=written,
        recovery_yield=recovery,
        description=str(entry.get("description") or ""),
    )


def _amount(raw: Any, key: str, what: str, fail: _Fail) -> float:
    if raw is None:
        raise fail(key, f"missing; give {what} >= 0")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise fail(key, f"{raw!r} is not a number; give {what} >= 0")
    if raw < 0:
        raise fail(key, f"negative amount {raw:g}; give {what} >= 0")
    return float(raw)


def _mapping(raw: Any, key: str, fail: _Fail) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise fail(key, f"expected a mapping, got {type(raw).__name__}")
    return raw


def _units() -> str:
    return ", ".join(GRAMS_PER_UNIT)
