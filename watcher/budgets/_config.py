"""Budgets as configured in TOML: the Budget record, loading, and validation with line numbers."""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

from watcher._toml import parse
from watcher.budgets._period import PERIODS, Period
from watcher.exceptions import ConfigError
from watcher.ledger import Scope

__all__ = ["DEFAULT_ALERT_AT", "DEFAULT_KILL_AT", "Budget", "load_budgets", "parse_budgets"]

DEFAULT_ALERT_AT = Decimal("0.8")
DEFAULT_KILL_AT = Decimal("1.2")
_MAX_RATIO = Decimal(10)
_DEFAULTS = {"alert_at": DEFAULT_ALERT_AT, "kill_at": DEFAULT_KILL_AT}
_EXAMPLES = {"name": '"monthly-total"', "limit_usd": "500", "period": '"month"'}
_KEYS = ("name", "limit_usd", "period", "timezone", "scope", "alert_at", "kill_at")
_SCOPE_KEYS = tuple(f.name for f in fields(Scope))
_HEADER = re.compile(r"^\s*\[\[\s*budgets\s*\]\]")
_OTHER_TABLE = re.compile(r"^\s*\[(?!\s*budgets\s*\.)")


@dataclass(frozen=True, slots=True)
class Budget:
    """One spend budget: ``limit_usd`` per calendar ``period`` in ``timezone``, over ``scope``.

    Raises ``ConfigError`` on construction when a value is out of range. ``alert_at`` and
    ``kill_at`` are fractions of the limit: the soft alert fires at spend >= alert_at x limit,
    the kill switch at spend >= kill_at x limit.
    """

    name: str
    limit_usd: Decimal
    period: Period
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    scope: Scope = field(default_factory=Scope)
    alert_at: Decimal = DEFAULT_ALERT_AT
    kill_at: Decimal = DEFAULT_KILL_AT

    def __post_init__(self) -> None:
        try:
            _check_name(self.name)
            _check_limit(self.limit_usd)
            _check_period(self.period)
            _check_ratio("alert_at", self.alert_at)
            _check_ratio("kill_at", self.kill_at)
            _check_order(self.alert_at, self.kill_at)
        except _Invalid as problem:
            raise ConfigError(f"budget {self.name!r}: {problem.what}; {problem.fix}") from None


def load_budgets(path: Path) -> list[Budget]:
    """The budgets in the TOML file at ``path``, in file order; [] when it has no [[budgets]].

    Other top-level keys and tables are ignored. Raises ``ConfigError`` naming the file, the
    line and the fix when the file cannot be read or a budget is invalid.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read budget file ({exc.strerror}); check the path") from exc
    return parse_budgets(text, str(path))


def parse_budgets(text: str, source: str = "<config>") -> list[Budget]:
    """The budgets in TOML ``text``, as ``load_budgets``; ``source`` names the text in errors.

    Raises ``ConfigError`` as ``"{source}:{line}: {what is wrong}; {how to fix}"``. Lines of
    values are found by scanning for the Nth ``[[budgets]]`` header and the key inside it.
    """
    raw = parse(text, source, parse_float=Decimal).get("budgets")
    if raw is None:
        return []
    lines = _Lines(source, text)
    if not isinstance(raw, list) or not all(isinstance(table, dict) for table in raw):
        raise lines.error(None, None, "'budgets' is not an array of tables", "start each budget with [[budgets]]")
    budgets: list[Budget] = []
    first_line: dict[str, int] = {}
    for index, table in enumerate(raw):
        budget = _budget(cast(dict[str, Any], table), lines, index)
        line = lines.line(index, "name")
        if budget.name in first_line:
            what = f"budget name {budget.name!r} is already used at line {first_line[budget.name]}"
            raise lines.error(index, "name", what, "give each budget a unique name")
        first_line[budget.name] = line
        budgets.append(budget)
    return budgets


class _Invalid(Exception):
    """One problem with one value: what is wrong, how to fix it, and the key at fault."""

    def __init__(self, what: str, fix: str, key: str | None = None) -> None:
        super().__init__(what)
        self.what, self.fix, self.key = what, fix, key


class _Lines:
    """Finds the line of a budget's header or key by scanning the text; approximate by design."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines = text.splitlines()
        self.headers = [n for n, line in enumerate(self.lines) if _HEADER.match(line)]

    def line(self, index: int | None, key: str | None) -> int:
        """The 1-based line of ``key`` in the ``index``-th budget, else of its header, else of ``budgets``."""
        if index is None or index >= len(self.headers):
            return self._first(r"^\s*budgets\s*=", range(len(self.lines))) or 1
        start = self.headers[index]
        stop = next((n for n in range(start + 1, len(self.lines)) if _OTHER_TABLE.match(self.lines[n])), None)
        block = range(start, len(self.lines) if stop is None else stop)
        found = self._first(rf'(^|[\s{{,])"?{re.escape(key)}"?\s*=', block) if key else None
        return found or start + 1

    def error(self, index: int | None, key: str | None, what: str, fix: str) -> ConfigError:
        """A ``ConfigError`` that points at the line of ``key`` in the ``index``-th budget."""
        return ConfigError(f"{self.source}:{self.line(index, key)}: {what}; {fix}")

    def _first(self, pattern: str, block: Iterable[int]) -> int | None:
        return next((n + 1 for n in block if re.search(pattern, self.lines[n])), None)


def _budget(table: dict[str, Any], lines: _Lines, index: int) -> Budget:
    """The ``index``-th budget table checked and converted; raises ``ConfigError`` at its line."""
    label = f"budget {table['name']!r}" if isinstance(table.get("name"), str) else f"budget #{index + 1}"
    try:
        _check_keys(table.keys(), _KEYS, "a budget")
        name = _required(table, "name")
        _check_name(name)
        return _build(table, name)
    except _Invalid as problem:
        raise lines.error(index, problem.key, f"{label}: {problem.what}", problem.fix) from None


def _build(table: dict[str, Any], name: str) -> Budget:
    limit = _number(_required(table, "limit_usd"), "limit_usd")
    _check_limit(limit)
    period = _period(_required(table, "period"))
    alert_at = _number(table.get("alert_at", DEFAULT_ALERT_AT), "alert_at")
    kill_at = _number(table.get("kill_at", DEFAULT_KILL_AT), "kill_at")
    _check_ratio("alert_at", alert_at)
    _check_ratio("kill_at", kill_at)
    _check_order(alert_at, kill_at)
    timezone, scope = _timezone(table.get("timezone", "UTC")), _scope(table.get("scope", {}))
    return Budget(name, limit, period, timezone, scope, alert_at, kill_at)


def _required(table: dict[str, Any], key: str) -> Any:
    if key not in table:
        raise _Invalid(f"{key} is missing", f"add {key} = {_EXAMPLES[key]}")
    return table[key]


def _check_keys(keys: Iterable[str], valid: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in valid:
            hint = difflib.get_close_matches(key, valid, n=1)
            maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise _Invalid(f"unknown key {key!r} in {where}{maybe}", f"use only {', '.join(valid)}", key)


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise _Invalid(f"name {name!r} is not a non-empty string", 'set name = "monthly-total" or similar', "name")


def _number(value: object, key: str) -> Decimal:
    """``value`` as an exact Decimal; TOML floats arrive as Decimals parsed from their text."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise _Invalid(f"{key} = {value!r} is not a number", f"write a bare number, e.g. {key} = 1.5", key)
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise _Invalid(f"{key} = {value} is not finite", f"write a finite number for {key}", key)
    return number


def _check_limit(limit: Decimal) -> None:
    if not isinstance(limit, Decimal):
        raise _Invalid(f"limit_usd {limit!r} is not a Decimal", f'pass Decimal("{limit}")', "limit_usd")
    if not limit.is_finite() or limit <= 0:
        raise _Invalid(f"limit_usd = {limit} is not a positive number", "set limit_usd = 500 (US dollars)", "limit_usd")


def _check_ratio(key: str, ratio: Decimal) -> None:
    if not isinstance(ratio, Decimal):
        raise _Invalid(f"{key} {ratio!r} is not a Decimal", f'pass Decimal("{ratio}")', key)
    if not ratio.is_finite() or not 0 < ratio <= _MAX_RATIO:
        fix = f"give a fraction of the limit in (0, 10], e.g. {key} = {_DEFAULTS[key]} for {_DEFAULTS[key] * 100:.0f}%"
        raise _Invalid(f"{key} = {ratio} is outside (0, 10]", fix, key)


def _check_order(alert_at: Decimal, kill_at: Decimal) -> None:
    if alert_at >= kill_at:
        what = f"alert_at = {alert_at} is not below kill_at = {kill_at}"
        raise _Invalid(what, "make alert_at smaller than kill_at, e.g. 0.8 and 1.2", "alert_at")


def _period(value: object) -> Period:
    _check_period(value)
    return cast(Period, value)


def _check_period(period: object) -> None:
    if period not in PERIODS:
        hint = difflib.get_close_matches(period, PERIODS, n=1) if isinstance(period, str) else []
        maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise _Invalid(f"unknown period {period!r}{maybe}", f"use one of: {', '.join(PERIODS)}", "period")


def _timezone(value: object) -> ZoneInfo:
    """The zone named ``value``; an unknown or malformed name raises with close matches."""
    if isinstance(value, str) and value:
        try:
            return ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
    hint = difflib.get_close_matches(value, zoneinfo.available_timezones(), n=3) if isinstance(value, str) else []
    maybe = f" (did you mean {' or '.join(map(repr, hint))}?)" if hint else ""
    fix = 'use an IANA zone name such as "Europe/Berlin", "America/New_York" or "UTC"'
    raise _Invalid(f"unknown timezone {value!r}{maybe}", fix, "timezone")


def _scope(value: object) -> Scope:
    """A ``Scope`` from a table of glob strings keyed by Scope's fields."""
    if not isinstance(value, dict):
        fix = 'write a table, e.g. scope = { request_type = "extraction" }'
        raise _Invalid(f"scope = {value!r} is not a table", fix, "scope")
    _check_keys(value.keys(), _SCOPE_KEYS, "scope")
    for key, glob in value.items():
        if not isinstance(glob, str):
            fix = f'quote it, e.g. {key} = "{glob}" (globs like "claude-*" are allowed)'
            raise _Invalid(f"scope {key} = {glob!r} is not a string", fix, key)
    return Scope(**value)
