"""`Revision`: the change marker of the engaged kill switches, which long polls wait on."""

from __future__ import annotations

import secrets
import threading
import time

__all__ = ["Revision"]


class Revision:
    """An opaque string, `START-N`, that changes whenever the engaged kill switches change. Thread-safe.

    `START` is drawn afresh each time a daemon starts, so a restarted daemon never repeats a value a
    client saw from its predecessor (its counter starts again at 0). `bump()` moves the marker on
    and wakes every `wait`; `close()` wakes them all for good, so a stopping daemon is not held up
    by the long polls it is serving.
    """

    def __init__(self, start: str | None = None) -> None:
        self._start = start or secrets.token_hex(6)
        self._count = 0
        self._closed = False
        self._changed = threading.Condition()
        self._waiting = 0

    @property
    def value(self) -> str:
        return f"{self._start}-{self._count}"

    @property
    def waiting(self) -> int:
        """How many `wait` calls are blocked now: the long polls the daemon is holding."""
        return self._waiting

    def bump(self) -> None:
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    def wait(self, seen: str | None, timeout_s: float) -> None:
        """Blocks while the marker equals `seen`, at most `timeout_s`; at once when they differ, or once closed."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            self._waiting += 1
            try:
                while self.value == seen and not self._closed and (left := deadline - time.monotonic()) > 0:
                    self._changed.wait(left)
            finally:
                self._waiting -= 1

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
