"""Claimed costs checked against the daemon's own price table: a mismatch is counted and logged, never changed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal

from watcher.ledger import Entry
from watcher.pricing import PriceTable

__all__ = ["Mismatch", "MismatchLog", "cost_checker"]

log = logging.getLogger("watcher.daemon")

Mismatch = tuple[Entry, Decimal, Decimal]
"""An entry whose claimed cost is off, with the least and the most its tokens cost by the daemon's table."""


def cost_checker(prices: PriceTable, factor: float) -> Callable[[Iterable[Entry]], list[Mismatch]]:
    """A function giving the entries among those passed whose claimed cost is more than `factor` times off.

    Only watcher's own entries (rank 2) claim a cost; others were priced by the daemon. An entry the
    hook priced by estimate, or of a model `prices` does not know, is not checked: there is nothing
    firm to check against. The claim is off when it is below the least its tokens cost divided by
    `factor`, or above the most (US-only inference and fast mode, which an entry does not record,
    priced in) times `factor` (`PriceTable.claim_checker`, about a microsecond an entry). With
    `factor` 0 the check is off: decided here, not per entry. Thread-safe.
    """
    if not factor:
        return lambda entries: []
    check = prices.claim_checker(Decimal(repr(factor)))

    def mismatched(entries: Iterable[Entry]) -> list[Mismatch]:
        found: list[Mismatch] = []
        for e in entries:
            if e.rank == 2 and not e.estimated:
                counts = (
                    e.input_tokens,
                    e.cache_write_5m_tokens,
                    e.cache_write_1h_tokens,
                    e.cache_read_tokens,
                    e.output_tokens,
                    e.web_search_requests,
                )
                bounds = check(e.model, e.time_us, counts, e.batch, e.cost_nanos)
                if bounds is not None:
                    found.append((e, *bounds))
        return found

    return mismatched


class MismatchLog:
    """Logs cost mismatches as warnings, at most one every `interval_s`, saying how many it held back.

    Thread-safe. `clock` (seconds, monotonic) is injected for tests.
    """

    def __init__(self, factor: float, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._factor, self._interval_s, self._clock = factor, interval_s, clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._held = 0

    def __call__(self, mismatches: list[Mismatch]) -> None:
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self._interval_s:
                self._held += len(mismatches)
                return
            held, self._held, self._last = self._held + len(mismatches) - 1, 0, now
        entry, least, most = mismatches[0]
        log.warning(
            "claimed cost %s USD of response %s (service %s, model %s) is more than %g times off what its tokens"
            " cost by the daemon's price table (%s to %s USD); stored as claimed%s",
            _usd(entry.cost_usd),
            entry.key,
            entry.service,
            entry.model,
            self._factor,
            _usd(least),
            _usd(most),
            f" ({held} more mismatches since the last such warning)" if held else "",
        )


def _usd(amount: Decimal) -> str:
    return f"{amount.normalize():f}"
