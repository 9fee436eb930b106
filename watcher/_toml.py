"""TOML config text parsed with `file:line: message` errors, for bad syntax and for keys nobody reads."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from typing import Any

from watcher.exceptions import ConfigError

__all__ = ["check_keys", "parse"]

_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_HEADER = re.compile(r"^\s*\[")


def parse(text: str, source: str, *, parse_float: Callable[[str], Any] = float) -> dict[str, Any]:
    """The document in TOML `text`; ConfigError `"{source}:{line}: invalid TOML at column N: ..."` otherwise.

    `source` names the text in the message (usually the file's path), so an editor can jump to it.
    """
    try:
        return tomllib.loads(text, parse_float=parse_float)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_WHERE.search(message)
        line = found.group(1) if found else str(len(text.splitlines()) or 1)
        column = f"column {found.group(2)}" if found else "the end of the file"
        reason = _TOML_WHERE.sub("", message).replace(" (at end of document)", "")
        where = f"{source}:{line}: invalid TOML at {column}"
        raise ConfigError(f"{where}: {reason}; fix the syntax there") from None


def check_keys(
    document: Mapping[str, Any],
    text: str,
    source: str,
    valid: Collection[str],
    tables: Mapping[str, Collection[str]],
) -> None:
    """Raises ConfigError at the line of the first top-level key not in `valid`, or of the first key of a table
    named in `tables` that is not among that table's keys; the message suggests the closest valid key.

    Lines are found by scanning the text (approximate by design, like the budgets' lines): a key is
    looked for where TOML lets it be written, as `key = ...`, a `[key]` header or a dotted `key.x = ...`.
    """
    lines = text.splitlines()
    for key in document:
        if key not in valid:
            raise _unknown(source, _top_line(lines, key), key, "at the top level", valid)
    for name, keys in tables.items():
        table = document.get(name)
        for key in table if isinstance(table, dict) else ():
            if key not in keys:
                raise _unknown(source, _table_line(lines, name, key), key, f"in [{name}]", keys)


def _unknown(source: str, line: int, key: str, where: str, valid: Collection[str]) -> ConfigError:
    hint = difflib.get_close_matches(key, list(valid), n=1)
    fix = f"did you mean {hint[0]!r}?" if hint else f"use one of {', '.join(sorted(valid))}"
    return ConfigError(f"{source}:{line}: unknown key {key!r} {where}; {fix}")


def _name(key: str) -> str:
    """A pattern for `key` written bare or quoted."""
    return rf"(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')"


def _top_line(lines: list[str], key: str) -> int:
    """The 1-based line where the top-level `key` is set or opens a table; 1 when it cannot be found."""
    header = re.compile(rf"^\s*\[\[?\s*{_name(key)}\s*[\].]")
    assignment = re.compile(rf"^\s*{_name(key)}\s*[=.]")
    in_root = True
    for number, line in enumerate(lines, 1):
        if header.match(line) or (in_root and assignment.match(line)):
            return number
        in_root = in_root and not _HEADER.match(line)
    return 1


def _table_line(lines: list[str], table: str, key: str) -> int:
    """The 1-based line of `key` inside the `[table]` block, else of a dotted `table.key`, else of `table`."""
    start = _top_line(lines, table)
    inner = re.compile(rf"(^|[\s{{,.]){_name(key)}\s*=")
    for number in range(start, len(lines) + 1):
        if number > start and _HEADER.match(lines[number - 1]):
            break
        if inner.search(lines[number - 1]):
            return number
    return start
