"""A queue between the application's calls and span building, so the call path only appends."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._fork import in_child

__all__ = ["Pending"]

log = logging.getLogger("watcher")
SLICE_S = 0.0005
"""How long the span worker works at most before letting an application thread have the GIL."""


def _let_go() -> None:
    """Releases the GIL for a moment: a thread waiting for it runs."""
    time.sleep(0)


class Pending:
    """Runs `work(item)` for each queued item on a background thread, soon after it is queued.

    `put` is the whole cost on the call path: a deque append, no lock, no I/O. A worker
    wakes every `interval_s` (or at once when `wake_at` items wait) and drains the queue, so
    pricing and span building run in bursts while the application waits on the network,
    instead of on every call. During a burst the worker lets go of the GIL once every
    `slice_s` of work (see `drain`). Nothing is dropped: past `max_items` waiting, `put` does the
    work inline rather than lose spend. `drain()` does all waiting work in the caller's
    thread; it is what `watcher.flush()`, `uninstrument()` and the exit hook call. The worker
    is restarted in a forked child, with an empty queue: what the parent had queued is the
    parent's to record.
    """

    def __init__(
        self,
        work: Callable[[Any], None],
        *,
        interval_s: float = 0.1,
        wake_at: int = 512,
        max_items: int = 20_000,
        slice_s: float = SLICE_S,
        clock: Callable[[], float] = time.perf_counter,
        pause: Callable[[], None] = _let_go,
    ) -> None:
        self._work = work
        self._slice_s, self._clock, self._pause = slice_s, clock, pause
        self._items: deque[Any] = deque()
        self._interval_s = interval_s
        self._wake_at = wake_at
        self._max_items = max_items
        self._wake = threading.Event()
        self._drain_lock = threading.Lock()
        self._stopped = False
        self._start()
        in_child(self.restart_in_child)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="watcher-spans", daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        """Queues `item`; never blocks on I/O. Thread-safe."""
        waiting = len(self._items)
        if waiting >= self._max_items:
            self._work(item)
            return
        self._items.append(item)
        if waiting + 1 == self._wake_at:
            self._wake.set()

    def drain(self, *, yielding: bool = False) -> None:
        """Does the work of every item queued so far, in the calling thread.

        The worker passes `yielding`: it lets go of the GIL whenever `slice_s` of work has
        passed since it last did, so an application thread whose response just arrived waits
        at most about that long instead of for the whole burst (CPython hands the GIL over only
        every 5 ms otherwise). Not after every item: each hand-over wakes the other thread and
        takes the GIL back, and at one per span that switching cost more CPU than the spans.
        """
        with self._drain_lock:
            due = self._clock() + self._slice_s if yielding else 0.0
            while True:
                try:
                    item = self._items.popleft()
                except IndexError:
                    return
                try:
                    self._work(item)
                except Exception:
                    log.exception("watcher could not record a queued span")
                if yielding and self._clock() >= due:
                    self._pause()
                    due = self._clock() + self._slice_s

    def stop(self) -> None:
        """Drains what is waiting and ends the worker. Idempotent."""
        self._stopped = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.drain()

    def restart_in_child(self) -> None:
        """In a forked child: fresh locks, an empty queue and a new worker, unless stopped."""
        if self._stopped:
            return
        self._items.clear()
        self._wake = threading.Event()
        self._drain_lock = threading.Lock()
        self._start()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            self.drain(yielding=True)
