"""The worst-case USD of a request, from its body alone, to reserve against a budget before it is sent."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from watcher._instrument._estimate import input_tokens_bound
from watcher.pricing import Ceiling, PriceTable

__all__ = ["WEB_SEARCH_USES", "Reserver"]

WEB_SEARCH_USES = 10
"""Searches assumed for a web-search tool without `max_uses`: an assumption, not a bound (the API sets none)."""

_NS_PER_DAY = 86_400 * 10**9
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CACHE_LIMIT = 4096

_Key = tuple[str, bool, bool, bool, bool]  # model, batch, fast, us_geo, regional


class Reserver:
    """The most a Messages request (or a whole Message Batch) can cost, computed before it is sent.

    The hook reserves this amount against a budget's allowance so a hard stop is never overshot:
    a budget cannot recover from spend reserved too low, while spend reserved too high is
    released when the real cost is known. Each request is priced with `Ceiling` (every prompt
    token at the highest input-side rate, long-context rates above the model's threshold) at
    `input_tokens_bound(body)` prompt tokens (or the API's count of them, when the hook asked
    count_tokens: WATCHER_RESERVE_COUNT_TOKENS), `max_tokens` output tokens and the request's web
    searches, with its fast-mode and US-only-inference modifiers.

    The result is a true bound only as far as its inputs are. `input_tokens_bound` errs high
    for what the body itself holds, but it cannot see tokens the body only points at (images or
    documents given by URL or file id; a count sees those) or that server tools add on the way (web search and web
    fetch results are billed as input). A web-search tool without `max_uses` is assumed to
    search `WEB_SEARCH_USES` times. US-only inference is taken from the request's
    `inference_geo`; a workspace whose default is US-only bills more than this unless its
    requests say so.

    One `Ceiling` is cached per (model, batch, fast, us_geo, regional) for the UTC day of `clock_ns()`
    (wall-clock nanoseconds since the epoch) and the cache is dropped when that day changes, as
    prices change only from the start of a UTC day. Thread-safe: each day's cache is its own dict,
    so a call racing a day change at worst prices a ceiling twice.
    """

    __slots__ = ("_clock_ns", "_prices", "_state")

    def __init__(self, prices: PriceTable, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._prices = prices
        self._clock_ns = clock_ns
        self._state: tuple[int | None, dict[_Key, Ceiling]] = (None, {})

    def message(
        self, body: Mapping[str, Any] | None, input_tokens: int | None = None, *, regional: bool = False
    ) -> float:
        """The worst-case USD of one Messages request `body` (see the class docstring).

        `input_tokens`, when given, is the API's own count of the body's input (count_tokens),
        used instead of `input_tokens_bound(body)`: it sees what the body only points at.
        `regional` says the call goes to a regional Bedrock or Vertex AI endpoint, whose premium
        the worst case then includes on the models that have one.
        Raises `ValueError` when `body` has no `model` string or no non-negative int `max_tokens`:
        without them there is nothing to bound, and the caller skips reserving (and logs it).
        """
        params = _mapping(body, "the request body")
        return self._worst(params, batch=False, input_tokens=input_tokens, regional=regional)

    def batch(self, body: Mapping[str, Any] | None) -> float:
        """The worst-case USD of a Message Batches create `body` (`{"requests": [{"custom_id", "params"}]}`).

        The sum of each request's worst case (as `message` bounds it) at batch prices. Raises
        `ValueError`, naming the request, when `requests` is not a list or any request cannot be
        bounded.
        """
        requests = _mapping(body, "the batch body").get("requests")
        if not isinstance(requests, list | tuple):
            raise ValueError(f"the batch body's `requests` must be a list, got {type(requests).__name__}")
        return math.fsum(self._batch_request(index, request) for index, request in enumerate(requests))

    def _batch_request(self, index: int, request: object) -> float:
        params = request.get("params") if isinstance(request, Mapping) else None
        if not isinstance(params, Mapping):
            raise ValueError(f"batch request {index} has no `params` object; cannot bound its cost")
        try:
            return self._worst(params, batch=True)
        except ValueError as error:
            raise ValueError(f"batch request {index}: {error}") from None

    def _worst(
        self, params: Mapping[str, Any], *, batch: bool, input_tokens: int | None = None, regional: bool = False
    ) -> float:
        """The ceiling of one request's parameters, at batch prices when `batch`, with the regional premium
        when `regional`, at `input_tokens` when given, else at the size bound."""
        model = params.get("model")
        if not isinstance(model, str) or not model:
            raise ValueError(f"the request has no `model` string (got {model!r}); cannot bound its cost")
        max_tokens = params.get("max_tokens")
        if type(max_tokens) is not int or max_tokens < 0:
            raise ValueError(f"the request has no non-negative int `max_tokens` (got {max_tokens!r}); cannot bound it")
        fast, us_geo = params.get("speed") == "fast", params.get("inference_geo") == "us"
        ceiling = self._ceiling((model, batch, fast, us_geo, regional))
        prompt = input_tokens if input_tokens is not None else input_tokens_bound(params)
        return ceiling.cost(prompt, max_tokens, _web_searches(params.get("tools")))

    def _ceiling(self, key: _Key) -> Ceiling:
        """The cached ceiling for `key` on today's UTC day, priced at that day's start."""
        day = self._clock_ns() // _NS_PER_DAY
        cached_day, cache = self._state
        if cached_day != day:
            cache = {}
            self._state = (day, cache)
        ceiling = cache.get(key)
        if ceiling is None:
            model, batch, fast, us_geo, regional = key
            at = _EPOCH + timedelta(days=day)
            ceiling = self._prices.ceiling(model, at=at, batch=batch, fast=fast, us_geo=us_geo, regional=regional)
            if len(cache) < _CACHE_LIMIT:  # bounded: junk model names cost time, never memory
                cache[key] = ceiling
        return ceiling


def _mapping(body: object, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(body).__name__}; cannot bound its cost")
    return body


def _web_searches(tools: object) -> int:
    """The web searches a request's `tools` allow: each web-search tool's `max_uses`, else `WEB_SEARCH_USES`."""
    if not isinstance(tools, list | tuple):
        return 0
    searches = 0
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if isinstance(kind, str) and kind.startswith("web_search"):
            uses = tool.get("max_uses")
            searches += uses if type(uses) is int and uses >= 0 else WEB_SEARCH_USES
    return searches
