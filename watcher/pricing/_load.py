"""Loading the shipped price file, layering a user's file on top, and building a PriceTable."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from watcher.exceptions import ConfigError
from watcher.pricing._engine import PriceTable
from watcher.pricing._rates import ModelPrices, Rates, utc_midnight
from watcher.pricing._schema import Document, Entry, Where, parse_document

__all__ = ["default_price_table", "load_price_table"]

_SHIPPED = "watcher/pricing/prices.toml (shipped)"
_DEFAULTS: dict[str, Any] = {
    "cache_write_5m_multiplier": Decimal("1.25"),
    "cache_write_1h_multiplier": Decimal(2),
    "fast_multiplier": None,
    "us_geo": False,
    "regional_premium": False,
    "long_context": None,
}


@dataclass(slots=True)
class _Merged:
    """The shipped document with user documents layered on top, before building."""

    version: str
    models: dict[str, Entry] = field(default_factory=dict)
    index: dict[str, str] = field(default_factory=dict)
    families: dict[str, tuple[str, Where]] = field(default_factory=dict)
    unknown: tuple[str, Where] | None = None
    web_search_per_1000: Decimal = Decimal(10)


def load_price_table(path: str | Path | None = None) -> PriceTable:
    """The shipped price table with the TOML file at ``path`` (if any) layered on top.

    The file may add models or override fields of existing ones (matched by id or alias).
    Raises ``ConfigError`` naming the file, the entry and the fix when the file is invalid.
    """
    shipped = _shipped_document()
    merged = _Merged(version=shipped.version or "unversioned")
    _layer(merged, shipped)
    if path is not None:
        user = parse_document(_read(Path(path)), str(path))
        merged.version = user.version or f"{merged.version}+override"
        _layer(merged, user)
    return _build(merged)


@cache
def default_price_table() -> PriceTable:
    """The shipped price table, built on first use and shared afterwards (it is immutable)."""
    return load_price_table()


def _shipped_document() -> Document:
    text = resources.files("watcher.pricing").joinpath("prices.toml").read_text(encoding="utf-8")
    return parse_document(_parse(text, _SHIPPED), _SHIPPED)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read price file ({exc.strerror}); check the path") from exc
    return _parse(text, str(path))


def _parse(text: str, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML ({exc}); fix the syntax at that line") from exc


def _layer(merged: _Merged, doc: Document) -> None:
    """Add or override models, families, the unknown-model default and tool fees from ``doc``."""
    for entry in doc.models:
        target = merged.index.get(entry.id)
        if target is None:
            merged.models[entry.id] = entry
            _index(merged, entry.id, entry.id, entry.where)
        else:
            _override(merged.models[target], entry)
        for alias in entry.aliases:
            _index(merged, alias, target or entry.id, entry.where)
    for family, model in doc.families.items():
        merged.families[family] = (model, Where(doc.file, "[families]"))
    if doc.unknown is not None:
        merged.unknown = (doc.unknown, Where(doc.file, "[unknown]"))
    if doc.web_search_per_1000 is not None:
        merged.web_search_per_1000 = doc.web_search_per_1000


def _override(base: Entry, over: Entry) -> None:
    base.fields.update(over.fields)
    for day, fields in over.changes.items():
        base.changes[day] = {**base.changes.get(day, {}), **fields}


def _index(merged: _Merged, key: str, model_id: str, where: Where) -> None:
    owner = merged.index.get(key)
    if owner is not None and owner != model_id:
        raise where.error(f"name {key!r} already belongs to model {owner!r}", "remove the duplicate alias")
    merged.index[key] = model_id


def _build(merged: _Merged) -> PriceTable:
    models = {model_id: _prices(entry) for model_id, entry in merged.models.items()}
    families = {name: _known(merged, *ref) for name, ref in merged.families.items()}
    if merged.unknown is None:
        raise ConfigError(f'{_SHIPPED}: [unknown]: no default model; set [unknown] model = "claude-..."')
    return PriceTable(
        version=merged.version,
        models=models,
        names=dict(merged.index),
        families=families,
        unknown=_known(merged, *merged.unknown),
        web_search_per_request=merged.web_search_per_1000 / 1000,
    )


def _known(merged: _Merged, model: str, where: Where) -> str:
    model_id = merged.index.get(model)
    if model_id is None:
        raise where.error(f"model {model!r} is not in the price table", "name a model id listed in [[models]]")
    return model_id


def _prices(entry: Entry) -> ModelPrices:
    missing = [key for key in ("input", "output", "cache_read") if key not in entry.fields]
    if missing:
        raise entry.where.error(
            f"missing rate {', '.join(missing)}",
            'a new model needs input, output and cache_read, e.g. input = "3"',
        )
    current = _DEFAULTS | entry.fields
    days = sorted(entry.changes)
    periods = [_rates(current)]
    for day in days:
        current = current | entry.changes[day]
        periods.append(_rates(current))
    return ModelPrices(entry.id, tuple(map(utc_midnight, days)), tuple(periods))


def _rates(fields: dict[str, Any]) -> Rates:
    return Rates(
        input=fields["input"],
        output=fields["output"],
        cache_read=fields["cache_read"],
        write_5m=fields["cache_write_5m_multiplier"],
        write_1h=fields["cache_write_1h_multiplier"],
        fast=fields["fast_multiplier"],
        us_geo=fields["us_geo"],
        long_context=fields["long_context"],
        regional_premium=fields["regional_premium"],
    )
