"""The settings tables of docs/configuration.md, rendered from the settings model and its field docstrings."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from watcher.settings import Settings

__all__ = ["BEGIN", "END", "REGENERATE", "env_var", "leaves", "render", "update"]

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
"""The markers around the generated part of docs/configuration.md; the prose around them is written by hand."""

REGENERATE = "python -m watcher._config_doc docs/configuration.md"
"""The command that brings docs/configuration.md up to date with the model."""

_SECTIONS = (("The application hook (`import watcher.auto`)", "endpoint"), ("The daemon (`watcher serve`)", "listen"))
"""Each table's heading and the first field in it; fields follow in the order the model declares them."""

_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path", SecretStr: "secret"}
_WORDS = {
    "ge": "at least",
    "gt": "above",
    "le": "at most",
    "lt": "below",
    "min_length": "at least",
    "max_length": "at most",
}
"""The words for each bound a field's constraints can set, by the constraint's attribute."""


def leaves(model: type[BaseModel] = Settings) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every setting as (path, field) in declaration order: a field whose type is a model (`alerts`) gives
    one path per field of that model (`("alerts", "urls")`) instead of its own."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from (((name, *path), inner) for path, inner in leaves(field.annotation))
        else:
            yield (name,), field


def env_var(path: Sequence[str], model: type[Settings] = Settings) -> str | None:
    """`WATCHER_` + the field name in capitals; None for a key of a table, which only the config file sets."""
    return f"{model.model_config.get('env_prefix', '')}{path[0].upper()}" if len(path) == 1 else None


def _variable(path: Sequence[str]) -> str:
    name = env_var(path)
    return f"`{name}`" if name else f"`[{path[0]}] {path[1]}` (config file only)"


def _type(annotation: Any, field: FieldInfo | None = None) -> str:
    """The type in words, with the bounds a field's constraints put on it (`integer, 1 to 1000`)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        named = [_type(arg) for arg in args if arg is not type(None)]
        text = " or ".join(named) + (" or none" if type(None) in args else "")
    elif origin is Literal:
        text = " or ".join(f"`{arg}`" for arg in args)
    elif origin is list:
        text = f"list of {_type(args[0])}s"
    else:
        text = _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return ", ".join([text, *_bounds(field)]) if field else text


def _bounds(field: FieldInfo) -> list[str]:
    """The field's bounds in words: `1 to 1000`, `at least 1024`, `above 0`, `1 to 128 characters`."""
    found = {attr: getattr(item, attr) for item in field.metadata for attr in _WORDS if hasattr(item, attr)}
    unit = " characters" if {"min_length", "max_length"} & found.keys() else ""
    low, high = found.get("ge", found.get("min_length")), found.get("le", found.get("max_length"))
    if low is not None and high is not None:
        return [f"{_number(low)} to {_number(high)}{unit}"]
    return [f"{_WORDS[attr]} {_number(value)}{unit}" for attr, value in found.items()]


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(field: FieldInfo) -> str:
    """The default as written in the table; a computed default (a path under the home directory) is
    described by its factory's docstring, so the table reads the same on every machine."""
    factory: Callable[[], Any] | None = field.default_factory  # type: ignore[assignment]
    if field.default is PydanticUndefined and factory is not None:
        if not isinstance(factory, type):
            return (factory.__doc__ or "computed").strip().rstrip(".")
        return _value(factory())
    return _value(field.default)


def _value(value: Any) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _description(field: FieldInfo) -> str:
    """The field's docstring on one line, its env var names and doc paths made code and links."""
    text = " ".join((field.description or "").split())
    text = re.sub(r"(?<![`\w])(WATCHER_[A-Z_]+)\b", r"`\1`", text)
    text = re.sub(r"\bdocs/([\w-]+\.md)(#[\w-]+)?", r"[\1](\1\2)", text)
    return text.replace("|", "\\|")


def render(model: type[Settings] = Settings) -> str:
    """The markdown between the markers: one table per section, one row per setting."""
    titles = {(first,): title for title, first in _SECTIONS}
    lines: list[str] = []
    for path, field in leaves(model):
        if path in titles:
            lines += ["", f"## {titles[path]}", "", "| variable | type | default | meaning |", "|---|---|---|---|"]
        row = (_variable(path), _type(field.annotation, field), _default(field), _description(field))
        lines.append(f"| {' | '.join(row)} |")
    return "\n".join(lines).strip("\n")


def update(text: str, model: type[Settings] = Settings) -> str:
    """`text` with the part between BEGIN and END replaced by `render(model)`; ValueError without the markers."""
    before, begin, rest = text.partition(BEGIN)
    _, end, after = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the markers {BEGIN} and {END} are missing: put them around the settings tables")
    return f"{before}{BEGIN}\n\n{render(model)}\n\n{END}{after}"


def main(argv: Sequence[str]) -> int:
    """With a path, rewrites that file's generated part in place; without, prints the tables."""
    if not argv:
        print(render())
        return 0
    path = Path(argv[0])
    path.write_text(update(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
