"""The SDK middleware: sees every HTTP attempt, and turns each billed response into a cost span."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from anthropic import APIRequest, Middleware

from ..exceptions import BudgetExceeded
from ..pricing import bedrock_endpoint, vertex_endpoint
from ._allowance import Allowances
from ._context import Dimensions, current_attributes, current_request_type, suppressed
from ._count import count_input, count_input_async
from ._estimate import input_tokens_bound
from ._failures import report_failure
from ._record import CallInfo, Recorder, field_of
from ._reserve import Reserver
from ._streams import StreamTally, attach_body_watch, observe, observe_async

__all__ = ["Hook", "WatcherMiddleware", "set_hook"]

MESSAGE, BATCH_CREATE, BATCH_RESULTS = "message", "batch_create", "batch_results"
_MAX_BATCHES = 10_000
_FIRST_PARTY, _BEDROCK, _VERTEX = "anthropic", "aws.bedrock", "gcp.vertex_ai"
REGIONAL = "regional"
_LOCATION = re.compile(r"/locations/([^/?]+)")
_NOTHING_WAITS: tuple[str, ...] = ()


def route_of(request: APIRequest) -> str | None:
    """Which billed operation a request is, from its method and path; None for everything else."""
    path = request.url.split("?", 1)[0].rstrip("/")
    method = request.method.lower()
    if method == "post":
        if path.endswith("/v1/messages"):
            return MESSAGE
        if path.endswith("/v1/messages/batches"):
            return BATCH_CREATE
    elif method == "get" and path.endswith("/results") and "/messages/batches/" in path:
        return BATCH_RESULTS
    return None


def endpoint_of(platform: str, model: str | None, url: str, location: str | None) -> str | None:
    """Where a call is served, as `TokenUsage.endpoint` prices it: on Bedrock the model id's profile
    (`global.` or not), on Vertex AI the `locations/{location}` of the request URL (or `location`, the
    client's, when the URL does not have it yet); None on the first-party API and Foundry."""
    if platform == _BEDROCK:
        return bedrock_endpoint(model) if model else None
    if platform == _VERTEX:
        found = _LOCATION.search(url)
        return vertex_endpoint(found.group(1) if found else location)
    return None


def _batch_id(request: APIRequest) -> str:
    return request.url.split("?", 1)[0].rstrip("/").split("/")[-2]


def _batch_models(body: Mapping[str, Any] | None) -> set[str | None]:
    """The models a batch-create body asks for (one check per model, not per request)."""
    requests = body.get("requests") if body else None
    if not isinstance(requests, list):
        return {None}
    params = (item.get("params") for item in requests if isinstance(item, Mapping))
    return {p.get("model") if isinstance(p, Mapping) else None for p in params} or {None}


def _noop(outcome: str) -> None:
    return None


class Hook:
    """What the middleware does while watcher is instrumented; one per `instrument()`.

    Runs on the application's thread (or event loop) inside the SDK's retry loop, once per HTTP
    attempt. A failed attempt (429, 529, 5xx) has no usage and costs nothing, so only a 2xx
    response is recorded; retries therefore never double-count. Everything it adds is caught
    and logged: it never breaks the call. With `count_tokens` (WATCHER_RESERVE_COUNT_TOKENS), a
    Messages call a budget covers on the first-party API is reserved at the API's count of its
    input, asked through the same client just before the call (awaited on an async client).
    """

    def __init__(
        self,
        recorder: Recorder,
        guard: Callable[[str, str | None], None] | None = None,
        allowances: Allowances | None = None,
        reserver: Reserver | None = None,
        count_tokens: bool = False,
    ) -> None:
        self.recorder = recorder
        self.guard = guard
        self.allowances, self.reserver = allowances, reserver
        self.count_tokens = count_tokens
        self._batch_types: OrderedDict[str, tuple[str, str | None, Dimensions | None]] = OrderedDict()
        self._batch_lock = threading.Lock()

    def begin(
        self, request: APIRequest, platform: str, route: str, location: str | None = None
    ) -> tuple[CallInfo | None, tuple[str, ...]]:
        """What is known of the call before it is sent (None when it is not to be recorded), and the budgets
        still to reserve its worst case from once the API has counted its input (`reserve_counted`).

        The call's endpoint (`CallInfo.endpoint`, which prices the regional premium) is known here:
        on Bedrock from the model id, on Vertex AI from the URL's `locations/{location}` (the
        client's `location`, as the SDK fills the path in later); None on other platforms.

        The second part is empty unless the call is a Messages call that a budget covers on the
        first-party API with `count_tokens` on: every other call is reserved here, at the size
        estimate, as are all calls to Bedrock and Vertex (their count endpoints differ).

        A call made while the caller's context suppresses instrumentation (OpenTelemetry's
        `suppress_instrumentation()`) gets no span, but the kill switch still applies to it: the
        key silences telemetry, it does not lift a budget. A batch created so still has its
        request type remembered for the results, which are recorded unless fetched suppressed too.
        """
        body = request.json if isinstance(request.json, Mapping) else None
        model = body.get("model") if body else None
        call = CallInfo(
            request_model=model if isinstance(model, str) else None,
            request_type=current_request_type() or self.recorder.default_request_type,
            platform=platform,
            start_ns=self.recorder.clock_ns(),
            stream=bool(request.stream and route == MESSAGE),
            dimensions=current_attributes(),
        )
        call.endpoint = endpoint_of(platform, call.request_model, request.url, location)
        if route == MESSAGE:
            if self.guard is not None:
                self.guard(call.request_type, call.request_model)
            if suppressed(call.parent):  # no span, so nothing to credit: no reservation (docs/enforcement.md)
                if self.allowances is not None:
                    self.allowances.uncovered()
                return None, _NOTHING_WAITS
            call.content = self.recorder.request_content(body)
            if call.stream:
                call.input_tokens_bound = _input_bound(body)
            budgets = self._covering(call, {call.request_model})
            if budgets and self.count_tokens and platform == _FIRST_PARTY:
                return call, budgets
            self._reserve(call, budgets, body, batch=False)
        elif route == BATCH_CREATE:
            models = _batch_models(body)
            if self.guard is not None:
                for model in models:
                    self.guard(call.request_type, model)
            self._reserve(call, self._covering(call, models), body, batch=True)
        elif route == BATCH_RESULTS:
            if suppressed(call.parent):
                return None, _NOTHING_WAITS
            call.batch_id = _batch_id(request)
            default = (self.recorder.default_request_type, None, call.dimensions)
            call.request_type, call.holder, call.dimensions = self._batch_types.get(call.batch_id, default)
        return call, _NOTHING_WAITS

    def _covering(self, call: CallInfo, models: set[str | None]) -> tuple[str, ...]:
        """The budgets whose allowances the call is reserved from; none without allowances, and for a call no
        budget covers (which `Allowances.uncovered` refuses while failing closed and the daemon is away)."""
        if self.allowances is None or self.reserver is None:
            return ()
        budgets: tuple[str, ...] = ()
        for model in models:
            budgets += tuple(b for b in self.allowances.budgets_for(call.request_type, model) if b not in budgets)
        if not budgets:
            self.allowances.uncovered()
        return budgets

    def _reserve(
        self,
        call: CallInfo,
        budgets: tuple[str, ...],
        body: Mapping[str, Any] | None,
        batch: bool,
        input_tokens: int | None = None,
    ) -> None:
        """Takes the call's worst case from `budgets`' allowances (docs/enforcement.md); raises BudgetExceeded.

        Nothing is taken for a call no budget covers. A body that cannot be priced goes without
        a reservation (the failure is logged): the API refuses such a body anyway. A Messages call
        is priced at `input_tokens` when the API counted them, else at the size estimate.
        """
        if not budgets or self.allowances is None or self.reserver is None:
            return
        try:
            if batch:
                amount = self.reserver.batch(body)
            else:
                amount = self.reserver.message(body, input_tokens, regional=call.endpoint == REGIONAL)
        except ValueError as exc:
            report_failure("price a request's worst case", exc)
            return
        call.reservation = self.allowances.reserve(budgets, amount)
        if call.reservation is not None:
            call.holder = call.reservation.holder

    def reserve_counted(
        self, call: CallInfo, budgets: tuple[str, ...], request: APIRequest, input_tokens: int | None
    ) -> None:
        """Reserves a call `begin` left waiting, at the API's count of its input (the size estimate when the
        count failed: None). Lets BudgetExceeded through; any other failure is logged and the call goes on
        without a reservation."""
        body = request.json if isinstance(request.json, Mapping) else None
        try:
            self._reserve(call, budgets, body, batch=False, input_tokens=input_tokens)
        except BudgetExceeded:
            raise
        except Exception as exc:
            report_failure("reserve a counted request", exc)

    def handle(
        self, request: APIRequest, call_next: Callable[[APIRequest], Any], platform: str, location: str | None = None
    ) -> Any:
        route = route_of(request)
        if route is None:
            return call_next(request)
        call, waiting = self._safe_begin(request, platform, route, location)
        if call is not None and waiting:
            self.reserve_counted(call, waiting, request, count_input(request, call_next))
        try:
            response = call_next(request)
        except BaseException:
            _unbilled(call)
            raise
        if call is not None and _succeeded(response):
            try:
                parsed = response.parse()
            except Exception as exc:
                parsed = _unparsed_body(response, call, exc)
            self._safe_after(route, call, response, parsed)
        else:
            _unbilled(call)
        return response

    async def handle_async(
        self,
        request: APIRequest,
        call_next: Callable[[APIRequest], Awaitable[Any]],
        platform: str,
        location: str | None = None,
    ) -> Any:
        route = route_of(request)
        if route is None:
            return await call_next(request)
        call, waiting = self._safe_begin(request, platform, route, location)
        if call is not None and waiting:
            self.reserve_counted(call, waiting, request, await count_input_async(request, call_next))
        try:
            response = await call_next(request)
        except BaseException:
            _unbilled(call)
            raise
        if call is not None and _succeeded(response):
            try:
                parsed = await response.parse()
            except Exception as exc:
                parsed = _unparsed_body(response, call, exc)
            self._safe_after(route, call, response, parsed)
        else:
            _unbilled(call)
        return response

    def _safe_begin(
        self, request: APIRequest, platform: str, route: str, location: str | None
    ) -> tuple[CallInfo | None, tuple[str, ...]]:
        try:
            return self.begin(request, platform, route, location)
        except BudgetExceeded:
            raise  # the one error the hook lets through: the call is refused before it is sent
        except Exception as exc:
            report_failure("inspect a request", exc)
            return None, _NOTHING_WAITS

    def _safe_after(self, route: str, call: CallInfo, response: Any, parsed: Any) -> None:
        """Records a billed response; a reservation whose cost cannot be learnt is settled at its worst case."""
        try:
            if parsed is not None:
                self._after(route, call, response, parsed)
                return
        except Exception as exc:
            report_failure("read a response", exc)
        if call.reservation is not None:
            call.reservation.settle(call.reservation.amount)

    def _after(self, route: str, call: CallInfo, response: Any, parsed: Any) -> None:
        if route == MESSAGE:
            if call.stream:
                self._follow_stream(call, response, parsed)
            else:
                self._record_message(call, parsed)
        elif route == BATCH_CREATE:
            if call.reservation is not None:
                call.reservation.keep()
            self._remember_batch(field_of(parsed, "id"), call)
        else:
            _wrap_items(parsed, lambda item: self._batch_item(call, item), _noop)

    def _record_message(self, call: CallInfo, message: object) -> None:
        self.recorder.record(
            call,
            field_of(message, "usage"),
            response_id=field_of(message, "id"),
            response_model=field_of(message, "model"),
            extra=self.recorder.response_content(message),
        )

    def _follow_stream(self, call: CallInfo, response: Any, stream: object) -> None:
        tally = StreamTally(self.recorder, call)
        attach_body_watch(response.http_response, tally.finish)
        _wrap_items(stream, tally.item, tally.finish)

    def _remember_batch(self, batch_id: object, call: CallInfo) -> None:
        """Keeps a created batch's request type, the allowance its worst case was reserved from (their cost is
        credited there) and its dimensions, with the baggage of the context it was created in, for its
        results; results of a batch not remembered take the dimensions of the context that fetches them."""
        if isinstance(batch_id, str):
            dimensions = {**self.recorder.dimensions.from_baggage(call.parent), **(call.dimensions or {})}
            with self._batch_lock:
                self._batch_types[batch_id] = (call.request_type, call.holder, dimensions)
                while len(self._batch_types) > _MAX_BATCHES:
                    self._batch_types.popitem(last=False)

    def _batch_item(self, call: CallInfo, item: object) -> None:
        result = field_of(item, "result")
        if field_of(result, "type") != "succeeded":
            return
        message = field_of(result, "message")
        self._record_message(dataclasses.replace(call, start_ns=self.recorder.clock_ns()), message)


def _input_bound(body: Mapping[str, Any] | None) -> int:
    """The streamed request's estimated input (0, and the failure logged, if it cannot be sized)."""
    try:
        return input_tokens_bound(body)
    except Exception as exc:
        report_failure("estimate a streamed request's input tokens", exc)
        return 0


def _unbilled(call: CallInfo | None) -> None:
    """A call that failed (an exception, or an error status: not billed) gives back its whole reservation."""
    if call is not None and call.reservation is not None:
        call.reservation.settle(0.0)


def _unparsed_body(response: Any, call: CallInfo, error: Exception) -> Any:
    """The JSON body of a billed response the SDK could not parse (a `messages.parse()` whose
    output failed validation is still billed); None for a stream, which the SDK cannot read either."""
    report_failure("parse a response with the SDK", error)
    if call.stream:
        return None
    try:
        return response.http_response.json()
    except Exception as exc:
        report_failure("read a response body", exc)
        return None


def _succeeded(response: Any) -> bool:
    status = getattr(response, "status_code", None)
    return isinstance(status, int) and 200 <= status < 300


def _wrap_items(source: Any, on_item: Callable[[object], None], on_end: Callable[[str], None]) -> None:
    """Makes `source` (an SDK Stream, AsyncStream or JSONL decoder) show its items to `on_item`.

    Both iteration paths of these classes, `for` and `next()`, read `_iterator`, so wrapping it
    sees every item whichever path the application (or a helper such as `messages.stream()`) takes.
    """
    inner = source._iterator
    if hasattr(inner, "__anext__"):
        source._iterator = observe_async(inner, on_item, on_end)
    else:
        source._iterator = observe(inner, on_item, on_end)


class WatcherMiddleware(Middleware):
    """The middleware watcher adds to every client; it does nothing unless watcher is instrumented.

    One instance per client (its platform differs); it finds the active `Hook` at call time, so
    `uninstrument()` turns existing clients back into plain ones without touching them.
    """

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.client: Callable[[], object] | None = None  # a Vertex AI client (weakly), for its location

    @property
    def location(self) -> str | None:
        """The Vertex AI client's region: the `locations/{region}` of each URL it sends Messages calls to,
        which the SDK fills in only after the middleware has run. None for other clients."""
        client = self.client() if self.client is not None else None
        try:
            region = getattr(client, "region", None)
        except Exception:  # the SDK's placeholder raises until the client has set its region
            return None
        return region if isinstance(region, str) else None

    def handle(self, request: APIRequest, call_next: Any) -> Any:
        hook = _active.hook
        if hook is None:
            return call_next(request)
        return hook.handle(request, call_next, self.platform, self.location)

    async def handle_async(self, request: APIRequest, call_next: Any) -> Any:
        hook = _active.hook
        if hook is None:
            return await call_next(request)
        return await hook.handle_async(request, call_next, self.platform, self.location)


class _Active:
    hook: Hook | None = None


_active = _Active()


def set_hook(hook: Hook | None) -> None:
    """Makes `hook` the one every WatcherMiddleware uses (None: pass every call straight through)."""
    _active.hook = hook
