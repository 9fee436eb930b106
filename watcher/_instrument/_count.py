"""The API's own count of a Messages request's input tokens, asked before the request is sent (opt-in).

With WATCHER_RESERVE_COUNT_TOKENS the hook reserves a covered call's worst case at this count
instead of the size estimate of `_estimate.py`, which cannot see images and documents given by
URL or file id. The count goes through the client's own transport (the rest of the middleware
chain, one HTTP attempt), so it has the request's base URL, auth, beta headers and proxies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from anthropic import APIRequest

from ._failures import report_failure

__all__ = ["COUNTED_FIELDS", "COUNT_TIMEOUT_S", "count_input", "count_input_async", "count_request"]

COUNT_TIMEOUT_S = 5.0
"""The longest the call waits for its count before it is reserved at the size estimate instead."""

COUNTED_FIELDS = (
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "cache_control",
    "output_config",
    "speed",
    "mcp_servers",
    "context_management",
    "compaction",
    "billing_policy",
)
"""The body fields count_tokens accepts (its plain and beta forms); the rest (`max_tokens`, `stream`,
sampling, metadata) it refuses or ignores, and none of them is input."""

_RAW_RESPONSE_HEADER = "x-stainless-raw-response"  # "stream" would leave the count's body unread
_WHAT = "count a request's input tokens"


class CountFailed(Exception):
    """count_tokens answered, but not with a count: an error status or an unexpected body."""


def count_request(request: APIRequest) -> APIRequest:
    """The count_tokens request for Messages `request`: same client, URL query, headers and qualifiers, its body
    reduced to `COUNTED_FIELDS`, not streamed, with a timeout of `COUNT_TIMEOUT_S`.

    A shallow copy of the request's options (pydantic's `model_copy`): the body's parts are
    shared, not copied, as the SDK only reads them, and a body can hold megabytes of images.
    """
    body = request.json if isinstance(request.json, Mapping) else {}
    path, sep, query = request.url.partition("?")
    headers = {name: value for name, value in request.headers.items() if name.lower() != _RAW_RESPONSE_HEADER}
    options = request.options.model_copy(
        update={
            "url": f"{path.rstrip('/')}/count_tokens{sep}{query}",
            "headers": headers,
            "json_data": {field: body[field] for field in COUNTED_FIELDS if field in body},
            "extra_json": None,
            "timeout": COUNT_TIMEOUT_S,
        }
    )
    return APIRequest(options=options, cast_to=object)


def count_input(request: APIRequest, call_next: Callable[[APIRequest], Any]) -> int | None:
    """The API's count of `request`'s input tokens; None, and the failure logged, when it cannot be had."""
    try:
        return _input_tokens(call_next(count_request(request)))
    except Exception as exc:
        report_failure(_WHAT, exc)
        return None


async def count_input_async(request: APIRequest, call_next: Callable[[APIRequest], Awaitable[Any]]) -> int | None:
    """`count_input` for an async client: awaited, so the event loop goes on while the API counts."""
    try:
        return _input_tokens(await call_next(count_request(request)))
    except Exception as exc:
        report_failure(_WHAT, exc)
        return None


def _input_tokens(response: Any) -> int:
    """The `input_tokens` of a count_tokens answer (an SDK response read in full); raises CountFailed otherwise."""
    http_response = response.http_response
    if not 200 <= http_response.status_code < 300:
        raise CountFailed(f"count_tokens answered HTTP {http_response.status_code}")
    counted = http_response.json()
    tokens = counted.get("input_tokens") if isinstance(counted, Mapping) else None
    if type(tokens) is not int or tokens < 0:
        raise CountFailed("count_tokens answered without a non-negative int `input_tokens`")
    return tokens
