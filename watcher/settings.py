"""The one settings model: every watcher setting, its environment variable and its default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from watcher._toml import check_keys, parse
from watcher.exceptions import ConfigError

__all__ = ["CONFIG_FILE_ENV", "Settings"]

CONFIG_FILE_ENV = "WATCHER_CONFIG"
"""Names the TOML file whose top-level keys are settings (default `watcher.toml` in the working directory)."""

DEFAULT_CONFIG_FILE = Path("watcher.toml")
"""The config file read when none is named: relative to the working directory, and skipped when absent."""

_OTHER_KEYS = ("budgets",)
"""Top-level keys of the config file that are not settings: the daemon reads them (`watcher.budgets`)."""


def _default_state_dir() -> Path:
    """`$XDG_STATE_HOME/watcher`, else `~/.local/state/watcher`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "watcher"


def _default_spool_dir() -> Path:
    """`$XDG_STATE_HOME/watcher/spool`, else `~/.local/state/watcher/spool`."""
    return _default_state_dir() / "spool"


def _empty_is_none(value: object) -> object:
    """An empty string (`WATCHER_SPOOL_DIR=`) means "none": the setting is turned off."""
    return None if value == "" else value


_CARRIES_TOKENS: dict[str, Any] = {"writeOnly": True}
"""Marks a field of URLs that carry tokens or passwords (apprise URLs): shown redacted, `scheme://***`."""

_CARRIES_PASSWORD: dict[str, Any] = {"writeOnly": True, "x-watcher-mask": "password"}
"""Marks a database URL: shown with only its password masked (`postgresql://user:***@host/db`), so the
output still says which database it is."""


class AlertsConfig(BaseModel):
    """The `[alerts]` table of the config file; an unknown key is refused (e.g. `url` for `urls`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    urls: list[str] = Field(default_factory=list, json_schema_extra=_CARRIES_TOKENS)
    """Apprise URLs for alerts (docs/alerts.md), with WATCHER_ALERT_URLS added to them."""

    apprise_config: Path | None = None
    """An apprise config file: tags, many targets (an example: alerts/apprise.yml)."""


class Settings(BaseSettings):
    """watcher's settings, read once when an object that needs them is built.

    Sources, highest priority first: arguments to `Settings(...)`, environment variables
    (`WATCHER_` + the field name in capitals), a `.env` file, then the top-level keys of the
    TOML file named by `WATCHER_CONFIG` (default `./watcher.toml`, skipped when absent; a file
    named on purpose must exist). The file's top-level keys are these fields plus the daemon's
    `[[budgets]]`; any other key, or a key of `[alerts]` that it does not have, is refused with
    its line, since a misspelt setting silently left at its default is a promise broken.

    Each field's docstring is its description (`use_attribute_docstrings`), in the JSON schema
    and in docs/configuration.md, generated from this model by `python -m watcher._config_doc`.
    """

    model_config = SettingsConfigDict(
        env_prefix="WATCHER_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )

    # --- the application hook (`import watcher.auto`) ----------------------------------------------

    endpoint: str = "http://127.0.0.1:4318"
    """Base URL of the watcher daemon: spans go to `{endpoint}/v1/traces`, kill switches come from
    `{endpoint}/v1/killswitch`. Spans ignore it when the application has its own OpenTelemetry pipeline."""

    default_request_type: Annotated[str, Field(min_length=1, max_length=128)] = "unlabeled"
    """The request type of a call made outside any `watcher.request_type(...)`."""

    capture_content: bool = False
    """Put prompts and responses on spans. Off by default: spend data needs no content."""

    attribute_names: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["user", "tenant", "session", "conversation", "agent"]
    )
    """The dimension names `watcher.attributes(...)` and OpenTelemetry baggage may put on spans, comma-separated
    (docs/spans.md#dimensions); a name not listed is dropped, and logged once. `user`, `session`, `conversation`
    and `agent` go to their semantic-convention attributes, any other name to `watcher.attr.<name>`."""

    attribute_max_length: Annotated[int, Field(ge=1, le=4096)] = 128
    """The most characters a dimension's value keeps on a span; a longer value is cut to it and its name is
    listed in the span's `watcher.attributes.truncated`."""

    hash_user_ids: bool = False
    """Send a keyed hash of the `user` dimension in `enduser.id` instead of the id itself (HMAC-SHA256, 32 hex
    digits): equal users stay equal, ids are not revealed (docs/spans.md#hashing-user-ids)."""

    attribute_hash_key: SecretStr | None = None
    """The secret user ids are hashed with when WATCHER_HASH_USER_IDS is on; none means a random key kept in
    `user-id-hash.key` in the state directory, made on first use (0600). Give every process of a fleet the
    same key, or the same user hashes differently on each host."""

    prices_file: Path | None = None
    """A TOML file of model prices that adds to or overrides the shipped price table (docs/pricing.md)."""

    export_delay_ms: Annotated[int, Field(ge=1, le=1000)] = 500
    """Longest time, in milliseconds, a finished span waits before it is exported."""

    killswitch_poll_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    """How long, in seconds, the hook waits before asking the daemon again which kill switches are engaged
    after a failed request, or between polls of a daemon that does not long-poll (changes are otherwise
    pushed by long poll, off the call path); 0 turns enforcement off."""

    fail_mode: Literal["open", "closed"] = "open"
    """When the daemon cannot be reached, or refuses WATCHER_TOKEN (logged at ERROR): `open` lets calls
    through (logged once), `closed` refuses them with BudgetExceeded until it answers again."""

    allowances: bool = True
    """Whether the hook holds budgets by allowances (docs/enforcement.md): it leases headroom from the daemon
    and reserves each call's worst case before sending it, so concurrent calls cannot overshoot a kill
    line. Off, only the kill-switch flag applies: spend may pass the line by what is in flight."""

    reserve_count_tokens: bool = False
    """Before each Messages call a budget covers, ask the API's count_tokens endpoint for the call's input
    tokens and reserve its worst case at that count, not at the size estimate (docs/enforcement.md): the
    input as the API counts it, images and documents given by URL or file id included. Costs one extra
    request before each such call, free of charge but counted against the count_tokens rate limit;
    first-party API only (Bedrock and Vertex keep the estimate); a count that fails falls back to the estimate."""

    allowance_horizon_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    """How many seconds of this process's own spend the hook asks for in one allowance (it asks again,
    off the call path, when a quarter is left); the daemon grants less as a budget nears its line."""

    token: SecretStr | None = None
    """Bearer token for the daemon, required by a daemon listening beyond loopback. Sent by the
    hook with its spans and kill-switch polls, and by `watcher status`, `report` and `killswitch`."""

    enabled: bool = True
    """`false` makes `import watcher.auto` and `AnthropicSpendInstrumentor` (what `opentelemetry-instrument`
    loads) do nothing, for switching watcher off without a deploy."""

    spool_dir: Annotated[Path | None, BeforeValidator(_empty_is_none)] = Field(default_factory=_default_spool_dir)
    """Where the hook keeps the spans the daemon could not take, one subdirectory per endpoint,
    until it (or the next process on the same directory) re-sends them (docs/spans.md#daemon-outages-exit-and-fork);
    empty turns the spool off. Unused when the application has its own OpenTelemetry pipeline."""

    spool_max_mb: Annotated[float, Field(gt=0)] = 64
    """The most the spool directory of one endpoint may hold, in MB; spans beyond it are dropped,
    counted, logged and reported to the daemon (`X-Watcher-Dropped-Spans`)."""

    # --- the daemon (`watcher serve`) ---------------------------------------------------------------

    listen: str = "127.0.0.1:4318"
    """HOST:PORT of the daemon's HTTP port: OTLP/HTTP, kill-switch API, metrics (`watcher serve --listen`).
    Beyond loopback the daemon refuses to start without WATCHER_TOKEN, and then every route but `/healthz`
    requires `Authorization: Bearer <token>`."""

    grpc_listen: str = "127.0.0.1:4317"
    """HOST:PORT of the daemon's OTLP/gRPC port (an OpenTelemetry Collector's load-balancing exporter speaks
    only gRPC); empty turns it off. Same token rule as WATCHER_LISTEN."""

    state_dir: Path = Field(default_factory=_default_state_dir)
    """Where the daemon keeps its ledger (`ledger.db`) and its alert and kill-switch state (`state.db`)."""

    database_url: str | None = Field(default=None, json_schema_extra=_CARRIES_PASSWORD)
    """The ledger (docs/ledger.md), e.g. `sqlite:///var/lib/watcher/ledger.db`; none means `ledger.db`
    in the state directory. A `postgresql://` URL holds the daemon's alert, kill-switch and allowance
    state too, shared by every daemon given it (docs/deploy.md); `watcher config show` masks its password."""

    alert_urls: Annotated[list[str], NoDecode] = Field(default_factory=list, json_schema_extra=_CARRIES_TOKENS)
    """Apprise URLs for alerts, comma-separated (`slack://...,mailto://...`); adds to the
    config file's `[alerts] urls` (docs/alerts.md). With none, alerts go to the daemon's log."""

    alert_max_attempts: Annotated[int, Field(ge=1, le=100)] = 16
    """Tries per alert and target before its delivery is given up as `failed`; retries wait 1 s, 2 s,
    4 s ... at most 5 minutes apart, so the default 16 span about 40 minutes (docs/alerts.md)."""

    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    """The `[alerts]` table of the config file: `urls = [...]` and `apprise_config = "path"`."""

    max_request_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    """The largest OTLP request body accepted, in bytes, before and after decompression (413 beyond)."""

    max_concurrent_exports: Annotated[int, Field(ge=1, le=64)] = 4
    """How many OTLP exports (HTTP and gRPC together) the daemon reads, decodes
    and stores at once; its memory grows with this times WATCHER_MAX_REQUEST_BYTES."""

    allowance_ttl_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    """How long, in seconds, an allowance the daemon lends lives unless its process renews it: what a
    process that died without giving it back keeps from its budgets until then."""

    busy_wait_s: Annotated[float, Field(ge=0, le=60)] = 5.0
    """How long, in seconds, an export waits for its turn before it is answered 503 with `Retry-After`
    (gRPC: `UNAVAILABLE`), so exporters back off; below their usual 10 s timeout, so they get the answer."""

    max_span_age_days: Annotated[int, Field(ge=1, le=3650)] = 30
    """The daemon rejects a span that ended longer ago than this many days (or more than an hour ahead of
    its clock), with reason `time_out_of_window` (docs/ingest.md); generous, so spans held back by an outage
    are still taken when they are re-sent."""

    cost_mismatch_factor: Annotated[float, Field(ge=0)] = 2.0
    """A watcher span whose claimed cost is more than this many times above, or below, what its tokens cost
    by the daemon's price table is stored as claimed but counted (`watcher_cost_mismatch_total`) and logged
    (docs/ingest.md); must be above 1, or 0 to turn the check off."""

    claude_code_source: Literal["logs", "metrics"] = "logs"
    """Where Claude Code's spend is taken from (docs/claude-code.md): `logs`, its `api_request` events
    (`/v1/logs`, one entry per API call, with tokens), or `metrics`, its `claude_code.cost.usage` metric
    (`/v1/metrics`, for when its events are off). Only the one chosen is counted, the other's exports are
    accepted and ignored: the two carry no shared key, so a call reported both ways would count twice."""

    @field_validator("cost_mismatch_factor")
    @classmethod
    def _factor_above_one(cls, value: float) -> float:
        if value != 0 and not 1 < value < float("inf"):
            raise ValueError(f"must be above 1 (e.g. 2), or 0 to turn the check off; got {value}")
        return value

    @field_validator("attribute_names", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("attribute_names")
    @classmethod
    def _names_are_identifiers(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not (name.isidentifier() and name.isascii() and len(name) <= 64)]
        if bad:
            raise ValueError(f"names must be ASCII identifiers of at most 64 characters (e.g. tenant), got {bad}")
        return value

    @field_validator("alert_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    def ledger_url(self) -> str:
        """The ledger's URL: WATCHER_DATABASE_URL, else a SQLite file in the state directory."""
        return self.database_url or f"sqlite:///{self.state_dir / 'ledger.db'}"

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}; e.g. http://127.0.0.1:4318")
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init, then environment, then `.env`, then the TOML config file (`config_file()`), its keys checked."""
        toml = _CheckedToml(settings_cls, toml_file=cls.config_file())
        return init_settings, env_settings, dotenv_settings, toml

    @classmethod
    def config_file(cls) -> Path | None:
        """The TOML file these settings read: the one given to `from_file`, else WATCHER_CONFIG, else `watcher.toml`
        when it exists; None when there is none.

        Raises ConfigError when a file named on purpose (`from_file`, `--config`, WATCHER_CONFIG) is not
        there: skipping it would start a daemon without its budgets. Only the implicit default may be absent.
        """
        given = cls.model_config.get("toml_file") or os.environ.get(CONFIG_FILE_ENV)
        if not isinstance(given, str | Path) or not str(given):
            return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None
        named = Path(given)
        if not named.expanduser().is_file():
            problem = "is a directory" if named.expanduser().is_dir() else "does not exist"
            fix = f"fix the path given to --config or {CONFIG_FILE_ENV}"
            raise ConfigError(f"{named}: the config file {problem}; {fix}")
        return named

    @classmethod
    def from_file(cls, config_file: Path, **values: Any) -> Settings:
        """Settings whose TOML source is `config_file`, whatever WATCHER_CONFIG says; `values` win over every source.

        The path goes to the TOML source through the model's config (pydantic-settings' `toml_file`),
        never through the process environment, so it cannot leak into a child process or a second
        Settings built later.
        """
        bound = type(cls.__name__, (cls,), {"model_config": {**cls.model_config, "toml_file": config_file}})
        settings: Settings = bound(**values)
        return settings


class _CheckedToml(TomlConfigSettingsSource):
    """pydantic-settings' TOML source, refusing bad syntax and unknown keys with `file:line: message`.

    Valid keys are decided once, from the model: its field names plus `budgets` at the top level,
    and the fields of each table that is a model (`[alerts]`).
    """

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path | None) -> None:
        fields = settings_cls.model_fields
        self._valid = (*fields, *_OTHER_KEYS)
        self._tables = {
            name: tuple(field.annotation.model_fields)
            for name, field in fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        }
        super().__init__(settings_cls, toml_file=toml_file)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        source = str(file_path)
        try:
            text = Path(file_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{source}: cannot read the config file ({error}); check the file") from None
        document = parse(text, source)
        check_keys(document, text, source, self._valid, self._tables)
        return document
