"""One billed response as the ledger keeps it: who spent what, when, on which model, and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

__all__ = ["Entry", "Scope"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One billed response. Never holds prompt or response content.

    `key` identifies the billed response across retries and instrumentations: the response id
    (`gen_ai.response.id`) when known, else `trace:{trace_id}:{span_id}`. `rank` says how
    authoritative the source is: 2 for watcher's own cost span (it carries the request type),
    1 for spans of other instrumentations that the daemon priced; a higher rank replaces a
    lower one stored under the same key, an equal or lower one is a duplicate.
    `time` is the end of the call, timezone-aware UTC.
    """

    key: str
    time: datetime
    service: str
    environment: str
    request_type: str
    model: str
    platform: str = "anthropic"
    response_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_search_requests: int = 0
    cost_usd: Decimal = Decimal(0)
    input_usd: Decimal = Decimal(0)
    output_usd: Decimal = Decimal(0)
    cache_read_usd: Decimal = Decimal(0)
    cache_write_usd: Decimal = Decimal(0)
    tools_usd: Decimal = Decimal(0)
    estimated: bool = False
    batch: bool = False
    rank: int = 1


@dataclass(frozen=True, slots=True)
class Scope:
    """Which entries a budget or query covers: each given field is a glob (fnmatch) the entry's
    field must match; None matches everything."""

    request_type: str | None = None
    model: str | None = None
    service: str | None = None
    environment: str | None = None
