"""What the running code's context says: its request type and its dimensions (context variables), whether
instrumentation is off."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context

__all__ = ["attributes", "current_attributes", "current_request_type", "request_type", "suppressed"]

_CURRENT: ContextVar[str | None] = ContextVar("watcher_request_type", default=None)
_F = TypeVar("_F", bound=Callable[..., Any])
MAX_NAME_LENGTH = 128
MAX_ATTRIBUTE_NAME_LENGTH = 64
Dimensions = Mapping[str, str | None]
"""A block's dimensions: name to value; None hides the name (from outer blocks and from baggage)."""
_NO_DIMENSIONS: Dimensions = MappingProxyType({})
_DIMENSIONS: ContextVar[Dimensions] = ContextVar("watcher_attributes", default=_NO_DIMENSIONS)


def current_request_type() -> str | None:
    """The innermost active request type, or None outside any `request_type` block."""
    return _CURRENT.get()


def suppressed(context: Context) -> bool:
    """Whether `context` tells instrumentations to record nothing: OpenTelemetry's suppress-instrumentation key
    (what `opentelemetry.instrumentation.utils.suppress_instrumentation()` sets), or the plain string key
    older instrumentations set. Two dict lookups: it runs on every call, on the application's thread.
    """
    return bool(context.get(_SUPPRESS_INSTRUMENTATION_KEY) or context.get(_SUPPRESS_PLAIN_KEY))


_SUPPRESS_PLAIN_KEY = "suppress_instrumentation"


class request_type:
    """Labels every Anthropic call made inside it with a request type; nests, innermost wins.

    Use as a context manager (`with request_type("extraction"):`) or a decorator on a sync or
    async function. It follows the code through threads started with `contextvars.copy_context`
    and through asyncio tasks, because it is a context variable. Raises ValueError at
    construction for an empty name or one longer than 128 characters.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"request type must be a non-empty string, got {name!r}")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"request type is {len(name)} characters; keep it to {MAX_NAME_LENGTH} or fewer")
        self.name = name
        self._tokens: list[Token[str | None]] = []

    def __enter__(self) -> request_type:
        self._tokens.append(_CURRENT.set(self.name))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _CURRENT.reset(self._tokens.pop())

    def __call__(self, func: _F) -> _F:
        """Decorates `func` so each of its calls runs inside this request type."""
        name = self.name
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = _CURRENT.set(name)
                try:
                    return await func(*args, **kwargs)
                finally:
                    _CURRENT.reset(token)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _CURRENT.set(name)
            try:
                return func(*args, **kwargs)
            finally:
                _CURRENT.reset(token)

        return wrapper  # type: ignore[return-value]


def current_attributes() -> Dimensions:
    """The dimensions the innermost `attributes` block gives, merged with its outer blocks' (read-only).

    One context-variable read: the hook calls it on the application's thread for every call.
    """
    return _DIMENSIONS.get()


class attributes:
    """Sets dimensions (who and what a call is for) on every Anthropic call made inside it; blocks nest and merge.

    `watcher.attributes(user="u-42", tenant="acme")` is a context manager and a decorator on a
    sync or async function. An inner block adds to its outer blocks' values, and wins per name;
    a value of None (or "") hides the name inside the block: its calls carry no value for it,
    neither the outer block's nor OpenTelemetry baggage's. Like `request_type`, it is a context
    variable, so it follows asyncio tasks and `contextvars.copy_context`, and stays out of
    other threads. Which names reach spans, how long values may be, and user-id hashing are
    settings applied when the span is built (docs/spans.md#dimensions), never here.

    Raises TypeError at construction for a value that is not a string or None, and ValueError for
    a name that is not an identifier of at most 64 characters: mistakes in the application's own
    code, reported where they are written rather than lost on a background thread.
    """

    def __init__(self, **values: str | None) -> None:
        for name, value in values.items():
            if not name.isidentifier() or not name.isascii() or len(name) > MAX_ATTRIBUTE_NAME_LENGTH:
                raise ValueError(f"attribute name {name!r} must be an ASCII identifier of at most 64 characters")
            if value is not None and not isinstance(value, str):
                raise TypeError(f"attribute {name}= must be a string or None, got {type(value).__name__}")
        self.values: Dimensions = MappingProxyType({name: value or None for name, value in values.items()})
        self._tokens: list[Token[Dimensions]] = []

    def _merged(self) -> Dimensions:
        outer = _DIMENSIONS.get()
        return MappingProxyType({**outer, **self.values}) if outer else self.values

    def __enter__(self) -> attributes:
        self._tokens.append(_DIMENSIONS.set(self._merged()))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _DIMENSIONS.reset(self._tokens.pop())

    def __call__(self, func: _F) -> _F:
        """Decorates `func` so each of its calls runs inside these dimensions, merged with the caller's."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = _DIMENSIONS.set(self._merged())
                try:
                    return await func(*args, **kwargs)
                finally:
                    _DIMENSIONS.reset(token)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _DIMENSIONS.set(self._merged())
            try:
                return func(*args, **kwargs)
            finally:
                _DIMENSIONS.reset(token)

        return wrapper  # type: ignore[return-value]
