"""Delivering budget events: a one-method Notifier, apprise behind it, retries with backoff."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ._state import BudgetEvent, StateStore

__all__ = ["AppriseNotifier", "Dispatcher", "LogNotifier", "Notifier", "redact"]

log = logging.getLogger("watcher.alerts")
TITLES = {
    "alert": "watcher: budget alert",
    "kill": "watcher: KILL SWITCH engaged",
    "engaged": "watcher: kill switch engaged by hand",
    "release": "watcher: kill switch released",
}


class Notifier(Protocol):
    """Sends one message; True when it was delivered. Must not raise for a failed delivery."""

    def send(self, title: str, body: str) -> bool: ...


class LogNotifier:
    """Alerts into the daemon's log, for a daemon with no alert URL configured: a newcomer still sees them."""

    def send(self, title: str, body: str) -> bool:
        log.warning("%s\n%s", title, body)
        return True


def redact(url: str) -> str:
    """An apprise URL with everything after the scheme hidden: URLs carry tokens and passwords."""
    scheme, _, _ = url.partition("://")
    return f"{scheme}://***"


class AppriseNotifier:
    """Delivers through apprise to every configured URL (Slack, email, webhooks, ...).

    Built once from the URLs and an optional apprise config file; raises ValueError naming the
    bad URL (redacted) at construction. apprise's `notify` returns a result that is truthy only
    when every service accepted the message (older versions: True, False, or None when nothing
    was sent); only a truthy result counts as delivered.
    """

    def __init__(self, urls: Sequence[str], config_file: str | None = None) -> None:
        import apprise

        self._apprise = apprise.Apprise()
        for url in urls:
            if not self._apprise.add(url):
                raise ValueError(f"apprise does not accept the alert URL {redact(url)}; check its scheme and fields")
        if config_file:
            config = apprise.AppriseConfig()
            if not config.add(config_file):
                raise ValueError(f"apprise cannot read the config file {config_file}")
            self._apprise.add(config)

    def send(self, title: str, body: str) -> bool:
        try:
            return bool(self._apprise.notify(title=title, body=body))
        except Exception as exc:  # a notifier plugin bug must not take the daemon down
            log.warning("alert delivery raised %s", type(exc).__name__)
            return False


class Dispatcher:
    """Delivers events on a background thread, retrying failures with exponential backoff.

    An event is marked delivered in the state store only after the notifier says so, so an
    event due at a crash is sent after the restart (`resume()`), and a delivered one never
    again. Counts `sent` and `failures` for the metrics. `clock` and `sleep_until` are injected
    so tests control time.
    """

    def __init__(
        self,
        notifier: Notifier,
        store: StateStore,
        *,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier, self._store, self._clock = notifier, store, clock
        self._base, self._max = base_delay_s, max_delay_s
        self._queue: list[tuple[float, int, int, BudgetEvent]] = []
        self._counter = 0
        self._wake = threading.Condition()
        self._stopped = False
        self.sent = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="watcher-alerts", daemon=True)

    def start(self) -> Dispatcher:
        self.resume()
        self._thread.start()
        return self

    def resume(self) -> None:
        """Queues every event recorded but not yet delivered (after a restart)."""
        for event in self._store.undelivered():
            self.submit(event)

    def submit(self, event: BudgetEvent, attempt: int = 0, at: float | None = None) -> None:
        with self._wake:
            self._counter += 1
            heapq.heappush(self._queue, (self._clock() if at is None else at, self._counter, attempt, event))
            self._wake.notify()

    def deliver_due(self) -> int:
        """Delivers every event due now, in the calling thread; returns how many were tried."""
        tried = 0
        while (item := self._pop_due()) is not None:
            _, _, attempt, event = item
            tried += 1
            self._deliver(event, attempt)
        return tried

    def _pop_due(self) -> tuple[float, int, int, BudgetEvent] | None:
        with self._wake:
            if self._queue and self._queue[0][0] <= self._clock():
                return heapq.heappop(self._queue)
            return None

    def _deliver(self, event: BudgetEvent, attempt: int) -> None:
        if self._notifier.send(TITLES.get(event.kind, "watcher"), event.message):
            self._store.mark_delivered(event)
            self.sent += 1
            return
        self.failures += 1
        delay = min(self._max, self._base * 2**attempt)
        log.warning("alert for budget %r not delivered; retrying in %.0f s", event.budget, delay)
        self.submit(event, attempt + 1, self._clock() + delay)

    def _run(self) -> None:
        while not self._stopped:
            self.deliver_due()
            with self._wake:
                timeout = max(0.0, self._queue[0][0] - self._clock()) if self._queue else None
                self._wake.wait(timeout)

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
