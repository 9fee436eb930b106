"""The hook's own failures: counted per kind and logged at WARNING, at most one line per kind a minute."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FailureLog", "flush_failures", "report_failure"]

log = logging.getLogger("watcher")
INTERVAL_S = 60.0
_UNAFFECTED = "the Anthropic call itself is unaffected"


@dataclass(slots=True)
class _Tally:
    """One kind of failure: how often in total, how often since its last line, and when that line was."""

    total: int = 0
    unlogged: int = 0
    logged_at: float | None = None


class FailureLog:
    """Counts the hook's failures per kind and logs them at WARNING, without flooding the application's log.

    `report` never raises and is thread-safe. The first failure of a kind is logged at once;
    later ones are counted, and a line naming how many happened since the last line and in
    total is logged at the next failure at least `interval_s` after that line (`clock` gives
    monotonic seconds; tests inject one). `flush` logs what is still counted and starts
    afresh; `uninstrument()` and interpreter exit call it. A kind is the operation that failed
    (`what`), the error's type and where it was raised: only those are logged, never the
    error's message or a traceback with locals, since a parsing error's message can quote the
    response and logs must carry no prompt or response content. Every failure is counted into
    a WARNING line because each one can be a span lost or mispriced: one line for thousands,
    the rest at DEBUG, hid them.
    """

    def __init__(self, *, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._lock = threading.Lock()

    def report(self, what: str, exc: BaseException) -> None:
        """Counts one failure of `what` with `exc`, and logs it unless this kind was logged within `interval_s`."""
        key = (what, _error(exc))
        now = self._clock()
        with self._lock:
            tally = self._tallies.setdefault(key, _Tally())
            tally.total += 1
            tally.unlogged += 1
            if tally.logged_at is not None and now - tally.logged_at < self._interval_s:
                return
            first, tally.logged_at = tally.logged_at is None, now
            unlogged, total, tally.unlogged = tally.unlogged, tally.total, 0
        if first:
            log.warning(
                "watcher could not %s (%s); %s; repeats are counted and logged at most every %g s",
                what,
                key[1],
                _UNAFFECTED,
                self._interval_s,
            )
        else:
            _log_counts(what, key[1], unlogged, total)

    def flush(self) -> None:
        """Logs every kind with failures not yet logged, then forgets all counts."""
        with self._lock:
            tallies, self._tallies = self._tallies, {}
        for (what, error), tally in tallies.items():
            if tally.unlogged:
                _log_counts(what, error, tally.unlogged, tally.total)


def _error(exc: BaseException) -> str:
    """The error's type and the place it was raised, e.g. `KeyError at .../_record.py:42`."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}"


def _log_counts(what: str, error: str, unlogged: int, total: int) -> None:
    log.warning(
        "watcher could not %s (%s) %d more time(s) since the last report, %d in total; %s",
        what,
        error,
        unlogged,
        total,
        _UNAFFECTED,
    )


_process_log = FailureLog()
report_failure = _process_log.report
flush_failures = _process_log.flush
