"""The durable ledger of billed responses: entries, the Ledger verbs, and the units amounts are kept in.

`PostgresLedger` is imported on first use: it needs psycopg, the `postgres` extra.
"""

from typing import TYPE_CHECKING, Any

from watcher.ledger._entry import (
    MAX_MICROS,
    MAX_TOKENS,
    MAX_USD,
    NANOS_PER_USD,
    Entry,
    Scope,
    float_to_nanos,
    from_micros,
    from_nanos,
    to_micros,
    to_nanos,
)
from watcher.ledger._open import open_ledger
from watcher.ledger._sqlite import SCHEMA_VERSION, SqliteLedger
from watcher.ledger._store import DIMENSIONS, AppendResult, BreakdownRow, Ledger

__all__ = [
    "DIMENSIONS",
    "MAX_MICROS",
    "MAX_TOKENS",
    "MAX_USD",
    "NANOS_PER_USD",
    "SCHEMA_VERSION",
    "AppendResult",
    "BreakdownRow",
    "Entry",
    "Ledger",
    "PostgresLedger",
    "Scope",
    "SqliteLedger",
    "float_to_nanos",
    "from_micros",
    "from_nanos",
    "open_ledger",
    "to_micros",
    "to_nanos",
]

if TYPE_CHECKING:
    from watcher.ledger._postgres import PostgresLedger


def __getattr__(name: str) -> Any:
    """`PostgresLedger`, imported when first asked for, so SQLite users need no psycopg."""
    if name == "PostgresLedger":
        from watcher.ledger._postgres import PostgresLedger

        return PostgresLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
