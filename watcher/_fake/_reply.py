"""What the fake answers with (`FakeReply`), what it saw (`RecordedRequest`), and the reply queue."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_TEXT", "FakeReply", "RecordedRequest", "ReplyQueue"]

DEFAULT_TEXT = "Hello from the fake Anthropic API."


@dataclass(frozen=True)
class FakeReply:
    """One scripted answer of the fake API; every field has a realistic default.

    `usage` is reported verbatim as the API's `usage` JSON; only a missing `input_tokens` (12)
    or `output_tokens` (8) is filled in. With `usage=None` the fake reports 12 input and 8 output
    tokens, zero cache tokens and `service_tier` "standard". A `status` other than 200 answers with
    an Anthropic-shaped error body instead of a message. `cut_after_events` applies to streamed
    replies only: the connection is dropped after that many SSE events. `delay_s` is slept in the
    server thread before answering. count_tokens answers with the next reply's `input_tokens`,
    or, when its `count_status` is not 200, with an error of that status (the reply stays queued).
    """

    model: str | None = None
    usage: Mapping[str, object] | None = None
    text: str = DEFAULT_TEXT
    stop_reason: str = "end_turn"
    id: str | None = None
    status: int = 200
    cut_after_events: int | None = None
    delay_s: float = 0.0
    count_status: int = 200


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the fake received: `path` keeps its query; header names are lowercase.

    `json` is the decoded body, or None when the body was empty or not valid JSON.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: object


class ReplyQueue:
    """A thread-safe FIFO of replies that falls back to `default` when empty."""

    def __init__(self, default: FakeReply) -> None:
        self.default = default
        self._queue: deque[FakeReply] = deque()
        self._lock = threading.Lock()

    def extend(self, replies: tuple[FakeReply, ...]) -> None:
        """Append `replies` in order behind those already queued."""
        with self._lock:
            self._queue.extend(replies)

    def take(self) -> FakeReply:
        """Remove and return the oldest queued reply, or return `default` without removing anything."""
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def peek(self) -> FakeReply:
        """Return the reply `take()` would return, without consuming it."""
        with self._lock:
            return self._queue[0] if self._queue else self.default

    def clear(self) -> None:
        """Drop every queued reply; `default` stays."""
        with self._lock:
            self._queue.clear()
