"""Delivering export requests to the daemon through outages: spool what it cannot take, re-send it in order."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from ._fork import in_child
from ._spool import Spool

__all__ = ["DROPPED_SPANS_HEADER", "Delivery", "Drops", "Post"]

log = logging.getLogger("watcher")

DROPPED_SPANS_HEADER = "X-Watcher-Dropped-Spans"
"""Sent with an export request when N > 0: spans dropped (spool full) since the last export the daemon accepted."""

_KEPT_STATUSES = frozenset({401, 403, 408, 429})


class Post(Protocol):
    """Sends one encoded export request once; returns the HTTP status, None when no answer came."""

    def __call__(self, data: bytes, headers: Mapping[str, str]) -> int | None: ...


def _accepted(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def _refused_for_good(status: int | None) -> bool:
    """The daemon read the request and will never take it (400 undecodable, 413 too large): keeping it is useless.

    Auth failures (401, 403) are kept: the next process may have the right token.
    """
    return status is not None and 400 <= status < 500 and status not in _KEPT_STATUSES


class Drops:
    """Spans lost because the spool was full, until the daemon has been told; with a rate-limited warning.

    Thread-safe. `take` hands the count to one request at a time, so two requests in flight
    never report the same drops; `give_back` returns it when the request was not accepted.
    """

    def __init__(self, where: str, *, warn_every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._where = where
        self._warn_every_s = warn_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._unreported = 0
        self._unwarned = 0
        self._warned_at: float | None = None

    def add(self, count: int) -> None:
        with self._lock:
            self._unreported += count
            self._unwarned += count
            now = self._clock()
            if self._warned_at is not None and now - self._warned_at < self._warn_every_s:
                return
            dropped, self._unwarned, self._warned_at = self._unwarned, 0, now
        log.warning(
            "watcher dropped %d spans: the spool at %s is full (WATCHER_SPOOL_MAX_MB) and the daemon is not "
            "taking them; the daemon is told the count",
            dropped,
            self._where,
        )

    def take(self) -> int:
        with self._lock:
            count, self._unreported = self._unreported, 0
            return count

    def give_back(self, count: int) -> None:
        if count:
            with self._lock:
                self._unreported += count


class Delivery:
    """Sends encoded export requests with `post`; what the daemon does not take is kept in `spool` and re-sent.

    `deliver` runs on the exporter's thread (the batch processor's, never the application's).
    While anything this process kept is still waiting, new requests are kept behind it, so the
    daemon gets them in order. A replayer thread re-sends the spool oldest first, one process at
    a time (`Spool.turn`), retrying after a jittered backoff of `retry_s` (first, most) until the
    daemon answers, and looks every `idle_s` for requests other processes left. It replays at
    start, so the next process on the same spool sends what an exited one kept. Every request
    carries `X-Watcher-Dropped-Spans` while spans were dropped for a full spool and not yet
    reported. Restarted with fresh state in a forked child.
    """

    def __init__(
        self,
        post: Post,
        spool: Spool,
        *,
        retry_s: tuple[float, float] = (0.5, 5.0),
        idle_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._post, self._spool = post, spool
        self._retry_s, self._idle_s = retry_s, idle_s
        self._clock = clock
        self._fresh()
        in_child(self.restart_in_child)

    def _fresh(self) -> None:
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.drops = Drops(str(self._spool.path), clock=self._clock)
        self._backlog = False
        self._outage = False
        self._thread = threading.Thread(target=self._run, name="watcher-spool", daemon=True)

    def start(self) -> Delivery:
        self._thread.start()
        return self

    def deliver(self, data: bytes, count: int) -> bool:
        """Sends or keeps one request of `count` spans; False only when the daemon refused it for good."""
        with self._lock:
            if self._backlog:
                self._keep(data, count)
                return True
        status = self._send(data)
        if _accepted(status):
            return True
        if _refused_for_good(status):
            log.warning("watcher's daemon refused %d spans with HTTP %s; they are dropped", count, status)
            return False
        with self._lock:
            self._backlog = True
            self._keep(data, count)
        self._lost_contact(status)
        return True

    def stop(self, timeout_s: float = 1.0) -> None:
        """Ends the replayer; what is still kept stays for the next process. Idempotent."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def restart_in_child(self) -> None:
        """In a forked child: fresh locks, counters and replayer (the parent's drops are the parent's to report)."""
        if self._stopped.is_set():
            return
        self._fresh()
        self.start()

    def _keep(self, data: bytes, count: int) -> None:
        try:
            kept = self._spool.add(data)
        except OSError as error:
            log.warning("watcher cannot write its spool at %s (%s)", self._spool.path, error)
            kept = False
        if not kept:
            self.drops.add(count)

    def _send(self, data: bytes) -> int | None:
        dropped = self.drops.take()
        headers = {DROPPED_SPANS_HEADER: str(dropped)} if dropped else {}
        try:
            status = self._post(data, headers)
        except Exception:
            log.debug("watcher could not send an export request", exc_info=True)
            status = None
        if not _accepted(status):
            self.drops.give_back(dropped)
        return status

    def _lost_contact(self, status: int | None) -> None:
        if not self._outage:
            self._outage = True
            why = f"HTTP {status}" if status is not None else "no answer"
            log.warning(
                "watcher cannot deliver spans to its daemon (%s); keeping them in %s to re-send", why, self._spool.path
            )

    def _run(self) -> None:
        delay = self._retry_s[0]
        while not self._stopped.is_set():
            if self._replay():
                delay, timeout = self._retry_s[0], self._idle_s
            else:
                timeout = delay * random.uniform(0.5, 1.0)
                delay = min(delay * 2, self._retry_s[1])
            self._stopped.wait(timeout)

    def _replay(self) -> bool:
        """Re-sends what the spool holds, oldest first; True once it is empty (the backlog is then over)."""
        while not self._stopped.is_set():
            with self._lock:
                if not self._spool.waiting():
                    self._backlog = False
                    self._regained_contact()
                    return True
            with self._spool.turn() as mine:
                if not mine or not self._replay_waiting():
                    return False
        return False

    def _regained_contact(self) -> None:
        if self._outage:
            self._outage = False
            log.warning("watcher delivered the spans it had kept in %s", self._spool.path)

    def _replay_waiting(self) -> bool:
        """One pass over the spool while holding the turn; False when the daemon stopped answering."""
        for path in self._spool.waiting():
            if self._stopped.is_set():
                return False
            data = self._spool.read(path)
            if data is None:
                continue
            status = self._send(data)
            if _refused_for_good(status):
                log.warning("watcher's daemon refused a kept export request with HTTP %s; dropping it", status)
            elif not _accepted(status):
                self._lost_contact(status)
                return False
            self._spool.remove(path)
        return True
