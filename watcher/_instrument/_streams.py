"""Following a streamed response to its end, however it ends, and recording what it reported."""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx2

from ._estimate import ESTIMATE_FLAG
from ._failures import report_failure
from ._record import CallInfo, Recorder, field_of

__all__ = ["StreamTally", "attach_body_watch", "finish_live_streams", "observe", "observe_async"]

_live: weakref.WeakSet[StreamTally] = weakref.WeakSet()
_USAGE_COUNTS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
_USAGE_LABELS = ("service_tier", "inference_geo", "speed")


def _usage_json(usage: object) -> dict[str, Any]:
    """The usage fields pricing needs, as plain JSON, from an SDK model or a dict."""
    found: dict[str, Any] = {name: field_of(usage, name) for name in _USAGE_COUNTS + _USAGE_LABELS}
    if (creation := field_of(usage, "cache_creation")) is not None:
        found["cache_creation"] = {
            "ephemeral_5m_input_tokens": field_of(creation, "ephemeral_5m_input_tokens"),
            "ephemeral_1h_input_tokens": field_of(creation, "ephemeral_1h_input_tokens"),
        }
    if (tools := field_of(usage, "server_tool_use")) is not None:
        found["server_tool_use"] = {"web_search_requests": field_of(tools, "web_search_requests")}
    return found


class StreamTally:
    """The usage a stream has reported so far; records one cost span when the stream ends.

    `message_start` gives the input side; each `message_delta` carries CUMULATIVE counts, so a
    later value replaces an earlier one and nothing is summed (summing over-counts output).
    `finish` is idempotent: the first end wins, whichever of completion, failure, close, drop
    or interpreter exit comes first. Thread-safe enough for the one reader a stream has.
    """

    __slots__ = ("__weakref__", "_call", "_done", "_id", "_model", "_recorder", "_usage")
    # `_done` is a lock taken once: the first `finish` wins even when garbage collection (`__del__`
    # of the body) and the reading thread end the stream at the same moment.

    def __init__(self, recorder: Recorder, call: CallInfo) -> None:
        self._recorder = recorder
        self._call = call
        self._usage: dict[str, Any] | None = None
        self._model: str | None = None
        self._id: str | None = None
        self._done = threading.Lock()
        _live.add(self)

    def item(self, event: object) -> None:
        """Takes one parsed stream event. Never raises."""
        try:
            kind = field_of(event, "type")
            if kind == "message_start":
                message = field_of(event, "message")
                self._id = field_of(message, "id")
                self._model = field_of(message, "model")
                self._usage = _usage_json(field_of(message, "usage"))
            elif kind == "message_delta":
                self._merge(field_of(event, "usage"))
            elif kind == "message_stop":
                self.finish("complete")
        except Exception as exc:
            report_failure("read a stream event", exc)

    def _merge(self, delta: object) -> None:
        if delta is None:
            return
        usage = self._usage if self._usage is not None else {}
        for name, value in _usage_json(delta).items():
            if value is not None:
                usage[name] = value
        self._usage = usage

    def finish(self, outcome: str) -> None:
        """Records the cost span once, with `watcher.stream.outcome` = complete, failed or abandoned.

        A stream that ends before `message_start` reported no usage, but its input was sent and
        billed: it is recorded with the input estimated from the request's size (see
        `input_tokens_bound`), no output, and the span marked estimated, never at $0.
        """
        if not self._done.acquire(blocking=False):
            return
        _live.discard(self)
        usage, estimate = self._usage, None
        if usage is None:
            usage, estimate = {"input_tokens": self._call.input_tokens_bound, "output_tokens": 0}, ESTIMATE_FLAG
        self._recorder.record(
            self._call,
            usage,
            response_id=self._id,
            response_model=self._model,
            extra={"watcher.stream.outcome": outcome, "watcher.usage.reported": estimate is None},
            error=outcome == "failed",
            estimate=estimate,
        )


def observe(iterator: Iterator[Any], on_item: Callable[[object], None], on_end: Callable[[str], None]) -> Iterator[Any]:
    """Yields what `iterator` yields, showing each item to `on_item` and the way it ended to `on_end`."""
    try:
        for item in iterator:
            on_item(item)
            yield item
    except GeneratorExit:
        on_end("abandoned")
        raise
    except BaseException:
        on_end("failed")
        raise
    on_end("failed")  # the body ended without the final event


async def observe_async(
    iterator: AsyncIterator[Any], on_item: Callable[[object], None], on_end: Callable[[str], None]
) -> AsyncIterator[Any]:
    """The async twin of `observe`."""
    try:
        async for item in iterator:
            on_item(item)
            yield item
    except GeneratorExit:
        on_end("abandoned")
        raise
    except BaseException:
        on_end("failed")
        raise
    on_end("failed")  # the body ended without the final event


class _WatchedBody(httpx2.SyncByteStream):
    """A response body that tells `on_end` when the application closes or drops it unread."""

    def __init__(self, body: httpx2.SyncByteStream, on_end: Callable[[str], None]) -> None:
        self._body = body
        self._on_end = on_end

    @property
    def elapsed(self) -> timedelta | None:
        return getattr(self._body, "elapsed", None)

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except Exception:
            self._on_end("failed")  # before the SDK's own cleanup closes the body
            raise

    def close(self) -> None:
        self._on_end("abandoned")
        self._body.close()

    def __del__(self) -> None:
        if not sys.is_finalizing():
            self._on_end("abandoned")


class _WatchedAsyncBody(httpx2.AsyncByteStream):
    """The async twin of `_WatchedBody`."""

    def __init__(self, body: httpx2.AsyncByteStream, on_end: Callable[[str], None]) -> None:
        self._body = body
        self._on_end = on_end

    @property
    def elapsed(self) -> timedelta | None:
        return getattr(self._body, "elapsed", None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._body:
                yield chunk
        except Exception:
            self._on_end("failed")  # before the SDK's own cleanup closes the body
            raise

    async def aclose(self) -> None:
        self._on_end("abandoned")
        await self._body.aclose()

    def __del__(self) -> None:
        if not sys.is_finalizing():
            self._on_end("abandoned")


def attach_body_watch(response: httpx2.Response, on_end: Callable[[str], None]) -> None:
    """Wraps `response.stream` so that closing or dropping the body ends the tally."""
    body = response.stream
    if isinstance(body, httpx2.SyncByteStream):
        response.stream = _WatchedBody(body, on_end)
    elif isinstance(body, httpx2.AsyncByteStream):
        response.stream = _WatchedAsyncBody(body, on_end)


def finish_live_streams() -> None:
    """Records every stream still open, as abandoned; run at exit so no spend is lost on shutdown."""
    for tally in list(_live):
        tally.finish("abandoned")
