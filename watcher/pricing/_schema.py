"""Validating one parsed price file into typed entries; every error names file, entry and fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from watcher.exceptions import ConfigError
from watcher.pricing._rates import Tier

__all__ = ["Document", "Entry", "Where", "parse_document"]

_RATE_KEYS = ("input", "output", "cache_read")
_MULTIPLIER_KEYS = ("cache_write_5m_multiplier", "cache_write_1h_multiplier")
_FLAG_KEYS = ("us_geo", "regional_premium")
PERIOD_KEYS = frozenset({*_RATE_KEYS, *_MULTIPLIER_KEYS, "fast_multiplier", *_FLAG_KEYS, "long_context"})
_MODEL_KEYS = PERIOD_KEYS | {"id", "aliases", "changes"}
_TOP_KEYS = frozenset({"version", "models", "families", "unknown", "tools"})
_TIER_KEYS = frozenset({"above", *_RATE_KEYS})


@dataclass(frozen=True, slots=True)
class Where:
    """Where a value came from: the file and the entry inside it, for error messages."""

    file: str
    entry: str

    def error(self, problem: str, fix: str) -> ConfigError:
        """A ``ConfigError`` reading ``<file>: <entry>: <problem>; <fix>``."""
        return ConfigError(f"{self.file}: {self.entry}: {problem}; {fix}")


@dataclass(slots=True)
class Entry:
    """One ``[[models]]`` entry: validated period fields plus dated changes."""

    id: str
    where: Where
    aliases: list[str]
    fields: dict[str, Any]
    changes: dict[date, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class Document:
    """One validated price file; absent settings are None or empty."""

    file: str
    version: str | None
    models: list[Entry]
    families: dict[str, str]
    unknown: str | None
    web_search_per_1000: Decimal | None


def parse_document(data: dict[str, Any], file: str) -> Document:
    """Validate a parsed TOML price file. Raises ``ConfigError`` naming ``file`` and the entry."""
    top = Where(file, "top level")
    _check_keys(data, _TOP_KEYS, top)
    version = data.get("version")
    if version is not None and not isinstance(version, str):
        raise top.error(f"version must be a string, got {version!r}", 'write e.g. version = "2026-11-25"')
    models = data.get("models", [])
    if not isinstance(models, list):
        raise top.error("models must be an array of tables", "write each model as a [[models]] table")
    unknown = _table(data, "unknown", top, {"model"}).get("model")
    tools = _table(data, "tools", top, {"web_search_per_1000"})
    search = tools.get("web_search_per_1000")
    return Document(
        file=file,
        version=version,
        models=[_parse_model(raw, file, index) for index, raw in enumerate(models)],
        families=_families(data, top),
        unknown=_model_id(unknown, Where(file, "[unknown]"), "model") if unknown is not None else None,
        web_search_per_1000=None if search is None else _number(search, Where(file, "[tools]"), "web_search_per_1000"),
    )


def _table(data: dict[str, Any], name: str, where: Where, keys: set[str]) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise where.error(f"{name} must be a table", f"write it as a [{name}] section")
    _check_keys(table, frozenset(keys), Where(where.file, f"[{name}]"))
    return table


def _families(data: dict[str, Any], where: Where) -> dict[str, str]:
    table = data.get("families", {})
    if not isinstance(table, dict):
        raise where.error("families must be a table", 'write it as [families] with e.g. opus = "claude-opus-5-5"')
    at = Where(where.file, "[families]")
    return {family.lower(): _model_id(model, at, family) for family, model in table.items()}


def _parse_model(raw: object, file: str, index: int) -> Entry:
    if not isinstance(raw, dict):
        raise Where(file, f"models[{index}]").error("must be a table", "write it as a [[models]] section")
    where = Where(file, f"models[{index}] (id {raw.get('id')!r})")
    _check_keys(raw, _MODEL_KEYS, where)
    model_id = _model_id(raw.get("id"), where, "id")
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list):
        raise where.error("aliases must be an array of strings", 'write e.g. aliases = ["claude-x-20250101"]')
    entry = Entry(model_id, where, [_model_id(a, where, "aliases") for a in aliases], _period(raw, where))
    for change in _changes(raw, where):
        day, fields = _parse_change(change, where)
        if day in entry.changes:
            raise where.error(f"two changes are effective on {day}", "merge them into one [[models.changes]]")
        entry.changes[day] = fields
    return entry


def _changes(raw: dict[str, Any], where: Where) -> list[Any]:
    changes = raw.get("changes", [])
    if not isinstance(changes, list):
        raise where.error("changes must be an array of tables", "write each as a [[models.changes]] section")
    return changes


def _parse_change(raw: object, where: Where) -> tuple[date, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise where.error("each change must be a table", "write it as a [[models.changes]] section")
    at = Where(where.file, f"{where.entry} change effective {raw.get('effective')!r}")
    _check_keys(raw, PERIOD_KEYS | {"effective"}, at)
    fields = _period(raw, at)
    if not fields:
        raise at.error("the change sets no price field", f"set one of {sorted(PERIOD_KEYS)}")
    return _date(raw.get("effective"), at), fields


def _period(raw: dict[str, Any], where: Where) -> dict[str, Any]:
    """The validated price fields present in ``raw``; ``False`` removes fast mode or a tier (None)."""
    fields: dict[str, Any] = {}
    for key in (*_RATE_KEYS, *_MULTIPLIER_KEYS):
        if key in raw:
            fields[key] = _number(raw[key], where, key)
    if "fast_multiplier" in raw:
        value = raw["fast_multiplier"]
        fields["fast_multiplier"] = None if value is False else _number(value, where, "fast_multiplier")
    for key in _FLAG_KEYS:
        if key in raw:
            if not isinstance(raw[key], bool):
                raise where.error(f"{key} must be true or false, got {raw[key]!r}", f"write {key} = true")
            fields[key] = raw[key]
    if "long_context" in raw:
        fields["long_context"] = _tier(raw["long_context"], where)
    return fields


def _tier(raw: object, where: Where) -> Tier | None:
    fix = 'write long_context = { above = 200000, input = "6", output = "22.50", cache_read = "0.60" } or false'
    if raw is False:
        return None
    if not isinstance(raw, dict):
        raise where.error(f"long_context must be a table or false, got {raw!r}", fix)
    _check_keys(raw, _TIER_KEYS, where)
    missing = sorted(_TIER_KEYS - raw.keys())
    if missing:
        raise where.error(f"long_context is missing {', '.join(missing)}", fix)
    above = raw["above"]
    if type(above) is not int or above <= 0:
        raise where.error(f"long_context.above must be a positive integer, got {above!r}", fix)
    rates = [_number(raw[key], where, f"long_context.{key}") for key in _RATE_KEYS]
    return Tier(above, *rates)


def _number(value: object, where: Where, key: str) -> Decimal:
    """A positive exact Decimal from a TOML string, int or float (floats arrive via their text)."""
    fix = f'write it as a positive number of USD per million tokens (or a multiplier), e.g. {key} = "0.30"'
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise where.error(f"{key} must be a number, got {value!r}", fix)
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise where.error(f"{key} is not a number: {value!r}", fix) from None
    if not number.is_finite() or number <= 0:
        raise where.error(f"{key} must be positive and finite, got {value!r}", fix)
    return number


def _date(value: object, where: Where) -> date:
    fix = "write effective = 2026-10-07 (a TOML date, UTC day the change starts)"
    if isinstance(value, datetime):
        raise where.error(f"effective must be a date without time, got {value!r}", fix)
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise where.error(f"effective is missing or not a date: {value!r}", fix)


def _model_id(value: object, where: Where, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"{key} must be a non-empty model id string, got {value!r}", f'write e.g. {key} = "claude-x"')
    return value.strip().lower()


def _check_keys(raw: dict[str, Any], allowed: frozenset[str], where: Where) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise where.error(f"unknown key {', '.join(map(repr, unknown))}", f"use only {', '.join(sorted(allowed))}")
