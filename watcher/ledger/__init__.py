"""The durable ledger of billed responses."""

from watcher.ledger._entry import Entry, Scope
from watcher.ledger._open import open_ledger
from watcher.ledger._sqlite import SCHEMA_VERSION, SqliteLedger
from watcher.ledger._store import DIMENSIONS, AppendResult, BreakdownRow, Ledger

__all__ = [
    "DIMENSIONS",
    "SCHEMA_VERSION",
    "AppendResult",
    "BreakdownRow",
    "Entry",
    "Ledger",
    "Scope",
    "SqliteLedger",
    "open_ledger",
]
