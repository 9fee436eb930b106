"""The JSON and SSE shapes of the Anthropic Messages API, built from a `FakeReply`."""

from __future__ import annotations

import json
import secrets
from http import HTTPStatus

from watcher._fake._reply import FakeReply

__all__ = [
    "Json",
    "dumps",
    "error_json",
    "message_json",
    "new_id",
    "reason_phrase",
    "retry_headers",
    "sse_frame",
    "stream_events",
    "usage_json",
]

Json = dict[str, object]
Event = tuple[str, Json]

# The usage keys `message_delta` repeats, cumulatively, as the live API does.
_DELTA_USAGE_KEYS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "server_tool_use",
    "output_tokens_details",
)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def dumps(value: object) -> bytes:
    """Encode `value` as compact UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":")).encode()


def new_id(prefix: str) -> str:
    """Return a fresh id such as `msg_fake_3f2a...` (24 hex digits after `prefix`)."""
    return prefix + secrets.token_hex(12)


def usage_json(reply: FakeReply) -> Json:
    """Return the `usage` object for `reply`: its own mapping with token counts filled in, or the default."""
    if reply.usage is None:
        return {
            "input_tokens": 12,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 8,
            "service_tier": "standard",
        }
    return {"input_tokens": 12, "output_tokens": 8, **reply.usage}


def message_json(reply: FakeReply, model: str, *, service_tier: str | None = None) -> Json:
    """Return the non-streamed Message JSON; a `service_tier` (batches: "batch") overrides the usage's."""
    usage = usage_json(reply)
    if service_tier is not None:
        usage["service_tier"] = service_tier
    return _message(reply, model, [{"type": "text", "text": reply.text}], reply.stop_reason, usage)


def stream_events(reply: FakeReply, model: str) -> list[Event]:
    """Return the SSE events of a streamed reply, in the order the live API sends them.

    `message_start` reports one output token; `message_delta` reports the cumulative totals.
    """
    usage = usage_json(reply)
    start_usage = {key: value for key, value in usage.items() if key != "output_tokens_details"}
    start_usage["output_tokens"] = 1
    start = _message(reply, model, [], None, start_usage)
    events: list[Event] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", _block_start()),
        ("ping", {"type": "ping"}),
    ]
    events.extend(("content_block_delta", _text_delta(piece)) for piece in _split(reply.text))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(("message_delta", _message_delta(reply.stop_reason, usage)))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def sse_frame(event: str, data: Json) -> bytes:
    """Encode one server-sent event as `event: X\\ndata: {json}\\n\\n`."""
    return b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def error_json(status: int, message: str, request_id: str) -> Json:
    """Return the API's error body for `status`, e.g. `rate_limit_error` for 429."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def retry_headers(status: int) -> list[tuple[str, str]]:
    """Return the headers that make the SDK retry `status` at once, or refuse to retry it.

    The SDK treats `retry-after: 0` as "no advice" and backs off for half a second, so a
    one-millisecond `retry-after-ms` (which it reads first) is sent too.
    """
    if status in (408, 409, 429) or status >= 500:
        return [("retry-after", "0"), ("retry-after-ms", "1"), ("x-should-retry", "true")]
    return [("x-should-retry", "false")]


def reason_phrase(status: int) -> str:
    """Return the HTTP reason phrase for `status` ("Overloaded" for Anthropic's 529)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Unknown"


def _message(reply: FakeReply, model: str, content: list[Json], stop_reason: str | None, usage: Json) -> Json:
    return {
        "id": reply.id or new_id("msg_fake_"),
        "type": "message",
        "role": "assistant",
        "model": reply.model or model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _block_start() -> Json:
    return {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}


def _text_delta(piece: str) -> Json:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}


def _message_delta(stop_reason: str, usage: Json) -> Json:
    delta_usage = {key: usage[key] for key in _DELTA_USAGE_KEYS if key in usage}
    delta_usage["output_tokens"] = usage["output_tokens"]
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": delta_usage,
    }


def _split(text: str, parts: int = 3) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]
