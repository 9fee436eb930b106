"""What the running code's context says: its request type (a context variable), whether instrumentation is off."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context

__all__ = ["current_request_type", "request_type", "suppressed"]

_CURRENT: ContextVar[str | None] = ContextVar("watcher_request_type", default=None)
_F = TypeVar("_F", bound=Callable[..., Any])
MAX_NAME_LENGTH = 128


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
