"""`watcher config show`: each setting's effective value and the source it came from, secrets masked."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python
from pydantic_settings import (
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    TomlConfigSettingsSource,
)

from watcher._config_doc import env_var, leaves
from watcher.settings import Settings

__all__ = ["Shown", "render_json", "render_text", "shown"]

_LABELS: tuple[tuple[type[PydanticBaseSettingsSource], str], ...] = (
    (TomlConfigSettingsSource, "toml"),
    (DotEnvSettingsSource, ".env"),
    (EnvSettingsSource, "env"),
    (InitSettingsSource, "argument"),
)
"""Each source's label, subclasses first: the TOML source extends the init source, `.env` the environment's."""


@dataclass(frozen=True)
class Shown:
    """One setting as `config show` prints it: `value` is JSON-ready, with secrets already masked."""

    name: str
    """The field's path: `endpoint`, `alerts.urls`."""
    env: str | None
    """Its environment variable; None for a key of a table (`[alerts] urls`), which only the config file sets."""
    value: Any
    source: str
    """`default`, `argument`, `env`, `.env` or `toml`: the highest-priority source that gave the value."""


def shown(settings: Settings, values: Mapping[str, Any] | None = None) -> list[Shown]:
    """Every setting of `settings` in declaration order, with the source it came from.

    `values` are the arguments `settings` were built with (source `argument`). Sources are asked
    what they provide through the model's own `settings_customise_sources`, so the answer follows
    its order and parsing: nothing is re-read by hand. Raises what building the settings raises
    (ConfigError, pydantic-settings' SettingsError); build them first to report those.
    """
    provided = _provided(type(settings), values or {})
    return [
        Shown(".".join(path), env_var(path), _masked(_value(settings, path), field), _source(provided, path))
        for path, field in leaves(type(settings))
    ]


def _provided(cls: type[Settings], values: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, what it provides) for each source of `cls`, highest priority first."""
    defaults = (
        InitSettingsSource(cls, init_kwargs=dict(values)),
        EnvSettingsSource(cls),
        DotEnvSettingsSource(cls),
        SecretsSettingsSource(cls),
    )
    sources = cls.settings_customise_sources(cls, *defaults)
    return [(_label(source), source()) for source in sources]


def _label(source: PydanticBaseSettingsSource) -> str:
    return next((label for kind, label in _LABELS if isinstance(source, kind)), type(source).__name__)


def _source(provided: Sequence[tuple[str, dict[str, Any]]], path: Sequence[str]) -> str:
    return next((label for label, data in provided if _has(data, path)), "default")


def _has(data: Any, path: Sequence[str]) -> bool:
    """Whether `data` (a source's dict, or a model given as an argument) sets the setting at `path`."""
    for key in path:
        if isinstance(data, BaseModel):
            data = {name: getattr(data, name) for name in data.model_fields_set}
        if not isinstance(data, Mapping) or key not in data:
            return False
        data = data[key]
    return True


def _value(settings: Settings, path: Sequence[str]) -> Any:
    value: Any = settings
    for key in path:
        value = getattr(value, key)
    return value


def _masked(value: Any, field: FieldInfo) -> Any:
    """A secret as `***`, a database URL with its password as `***`, a URL that carries tokens (another field
    marked writeOnly) as `scheme://***`."""
    from watcher._urls import hide_password
    from watcher.daemon import redact

    if isinstance(value, SecretStr):
        return "***"
    extra = field.json_schema_extra
    if isinstance(extra, dict) and extra.get("x-watcher-mask") == "password" and isinstance(value, str):
        return hide_password(value)
    if isinstance(extra, dict) and extra.get("writeOnly") is True and value is not None:
        return redact(value) if isinstance(value, str) else [redact(str(item)) for item in value]
    return to_jsonable_python(value)


def render_text(settings: Sequence[Shown], config_file: Path | None) -> str:
    """One line per setting: its variable (or `[table] key`), its source (`toml FILE`), its value as JSON."""
    named = [
        (item.env or "[{}] {}".format(*item.name.split(".", 1)), _where(item.source, config_file), item)
        for item in settings
    ]
    width = max(len(name) for name, _, _ in named)
    source_width = max(len(source) for _, source, _ in named)
    lines = [f"config file: {config_file or 'none'}"]
    lines += [f"{name:<{width}}  {source:<{source_width}}  {json.dumps(item.value)}" for name, source, item in named]
    return "\n".join(lines)


def _where(source: str, config_file: Path | None) -> str:
    return f"toml {config_file}" if source == "toml" else source


def render_json(settings: Sequence[Shown], config_file: Path | None) -> str:
    """`{"config_file": ..., "settings": {name: {"env", "source", "value"}}}`, source `toml` meaning config_file."""
    document = {
        "config_file": str(config_file) if config_file else None,
        "settings": {item.name: {"env": item.env, "source": item.source, "value": item.value} for item in settings},
    }
    return json.dumps(document, indent=2)
