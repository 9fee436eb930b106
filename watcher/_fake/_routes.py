"""Maps a method and path of the Anthropic API (first-party, Vertex, Bedrock invoke) to a `Response`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from watcher._fake._batches import BatchStore
from watcher._fake._reply import FakeReply, ReplyQueue
from watcher._fake._wire import (
    Json,
    dumps,
    error_json,
    message_json,
    new_id,
    retry_headers,
    sse_frame,
    stream_events,
)

__all__ = ["Response", "Routes"]


@dataclass
class Response:
    """An answer to write: a JSON-ish `body`, or SSE `frames` sent chunked (cut after `cut_after`)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    frames: list[bytes] | None = None
    cut_after: int | None = None
    delay_s: float = 0.0
    request_id: str = field(default_factory=lambda: new_id("req_fake_"))


_Handler = Callable[["Routes", "re.Match[str]", object], Response]
_VERTEX_MODELS = "/v1/projects/[^/]+/locations/[^/]+/publishers/anthropic/models/"
_VERTEX_PREDICT = _VERTEX_MODELS + "(?P<model>[^/:]+):(?:rawPredict|streamRawPredict)"
_BEDROCK_INVOKE = "/model/(?P<model>[^/]+)/invoke"


class Routes:
    """The fake's endpoints over one reply queue and batch store; `base_url` is set once bound."""

    def __init__(self, replies: ReplyQueue, batches: BatchStore) -> None:
        self.replies = replies
        self.batches = batches
        self.base_url = ""

    def answer(self, method: str, path: str, body: object) -> Response:
        """Return the response to `method path` (query stripped) with decoded JSON `body`; never raises."""
        for route_method, pattern, handler in _ROUTES:
            match = pattern.fullmatch(path)
            if match is not None and route_method == method:
                return handler(self, match, body)
        return error_response(404, f"Not found: {method} {path}")

    def create_message(self, match: re.Match[str], body: object) -> Response:
        """Answer a message create with the next reply: JSON, SSE when `"stream": true`, or an error."""
        if not isinstance(body, dict):
            return error_response(400, "Expected a JSON object body.")
        reply = self.replies.take()
        if reply.status != 200:
            message = f"Fake error reply with status {reply.status}."
            return error_response(reply.status, message, reply.delay_s)
        model = _url_model(match) or str(body.get("model", "claude-fake"))
        if body.get("stream") is True:
            return _stream_response(reply, model)
        return Response(200, dumps(message_json(reply, model)), delay_s=reply.delay_s)

    def count_tokens(self, match: re.Match[str], body: object) -> Response:
        """Answer with the next reply's `input_tokens` (an error if its `count_status` says so), leaving it queued."""
        if not isinstance(body, dict):
            return error_response(400, "Expected a JSON object body.")
        reply = self.replies.peek()
        if reply.count_status != 200:
            return error_response(reply.count_status, f"Fake count_tokens error with status {reply.count_status}.")
        usage = reply.usage or {}
        return Response(200, dumps({"input_tokens": usage.get("input_tokens", 12)}))

    def create_batch(self, match: re.Match[str], body: object) -> Response:
        """Create a batch that has already ended, one queued reply per request."""
        try:
            return Response(200, dumps(self.batches.create(body, self.base_url)))
        except ValueError as error:
            return error_response(400, str(error))

    def get_batch(self, match: re.Match[str], body: object) -> Response:
        """Return the batch named in the path (cancelling an ended batch returns it unchanged)."""
        return _found(self.batches.get(match["batch_id"]), match["batch_id"])

    def delete_batch(self, match: re.Match[str], body: object) -> Response:
        """Delete the batch named in the path."""
        return _found(self.batches.delete(match["batch_id"]), match["batch_id"])

    def list_batches(self, match: re.Match[str], body: object) -> Response:
        """List every batch, newest first, on one page."""
        return Response(200, dumps(self.batches.page()))

    def batch_results(self, match: re.Match[str], body: object) -> Response:
        """Return the batch's results as JSONL."""
        results = self.batches.results(match["batch_id"])
        if results is None:
            return error_response(404, f"No batch {match['batch_id']!r}.")
        return Response(200, results, content_type="application/binary")


def error_response(status: int, message: str, delay_s: float = 0.0) -> Response:
    """Return an Anthropic-shaped error, with headers that tell the SDK whether to retry at once."""
    request_id = new_id("req_fake_")
    body = dumps(error_json(status, message, request_id))
    return Response(status, body, headers=retry_headers(status), delay_s=delay_s, request_id=request_id)


def _stream_response(reply: FakeReply, model: str) -> Response:
    frames = [sse_frame(event, data) for event, data in stream_events(reply, model)]
    return Response(
        200,
        content_type="text/event-stream; charset=utf-8",
        headers=[("cache-control", "no-cache")],
        frames=frames,
        cut_after=reply.cut_after_events,
        delay_s=reply.delay_s,
    )


def _found(value: Json | None, batch_id: str) -> Response:
    if value is None:
        return error_response(404, f"No batch {batch_id!r}.")
    return Response(200, dumps(value))


def _url_model(match: re.Match[str]) -> str | None:
    model = match.groupdict().get("model")
    return unquote(model) if model else None


def _route(method: str, pattern: str, handler: _Handler) -> tuple[str, re.Pattern[str], _Handler]:
    return method, re.compile(pattern), handler


_BATCH = "/v1/messages/batches/(?P<batch_id>[^/]+)"
_ROUTES = (
    _route("POST", "/v1/messages", Routes.create_message),
    _route("POST", "/v1/messages/count_tokens", Routes.count_tokens),
    _route("POST", "/v1/messages/batches", Routes.create_batch),
    _route("GET", "/v1/messages/batches", Routes.list_batches),
    _route("GET", _BATCH, Routes.get_batch),
    _route("POST", _BATCH + "/cancel", Routes.get_batch),
    _route("DELETE", _BATCH, Routes.delete_batch),
    _route("GET", _BATCH + "/results", Routes.batch_results),
    _route("POST", _VERTEX_MODELS + "count-tokens:rawPredict", Routes.count_tokens),
    _route("POST", _VERTEX_PREDICT, Routes.create_message),
    _route("POST", _BEDROCK_INVOKE, Routes.create_message),
)
