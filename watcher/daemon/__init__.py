"""The watcher daemon: receives OTLP exports, keeps the ledger and the budgets, alerts, serves kill switches."""

from watcher.daemon._alerts import AppriseNotifier, Dispatcher, LogNotifier, Notifier, apprise_targets, redact
from watcher.daemon._books import Books, BudgetView, Hold
from watcher.daemon._core import Daemon, IngestResult
from watcher.daemon._decode import DecodeError, decode_request
from watcher.daemon._normalize import MAX_REASONS, Normalized, normalize
from watcher.daemon._otlp import RESOURCE_KEYS, SPAN_KEYS, SpanRecord
from watcher.daemon._serve import Running, build, parse_listen, serve
from watcher.daemon._state import BudgetEvent, Delivery, EventRecord, Override, StateStorage, StateStore
from watcher.daemon._state_open import open_state_store, upgrade_state_store

__all__ = [
    "MAX_REASONS",
    "RESOURCE_KEYS",
    "SPAN_KEYS",
    "AppriseNotifier",
    "Books",
    "BudgetEvent",
    "BudgetView",
    "Daemon",
    "DecodeError",
    "Delivery",
    "Dispatcher",
    "EventRecord",
    "Hold",
    "IngestResult",
    "LogNotifier",
    "Normalized",
    "Notifier",
    "Override",
    "Running",
    "SpanRecord",
    "StateStorage",
    "StateStore",
    "apprise_targets",
    "build",
    "decode_request",
    "normalize",
    "open_state_store",
    "parse_listen",
    "redact",
    "serve",
    "upgrade_state_store",
]
