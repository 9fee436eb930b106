"""Adds watcher's middleware to every Anthropic client built while instrumented."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

from anthropic._base_client import AsyncAPIClient, SyncAPIClient

from ._middleware import WatcherMiddleware

__all__ = ["patch_clients", "platform_of", "unpatch_clients"]

_BASES = (SyncAPIClient, AsyncAPIClient)
_PLATFORMS = {
    "BaseBedrockClient": "aws.bedrock",
    "BaseMantleClient": "aws.bedrock",
    "BaseVertexClient": "gcp.vertex_ai",
    "BaseFoundryClient": "azure.foundry",
}
_VERTEX = "gcp.vertex_ai"
_originals: dict[type[Any], Callable[..., None]] = {}


def platform_of(client_type: type[Any]) -> str:
    """Where a client class sends its calls: anthropic, aws.bedrock, gcp.vertex_ai or azure.foundry."""
    for klass in client_type.__mro__:
        if klass.__name__ in _PLATFORMS:
            return _PLATFORMS[klass.__name__]
    return "anthropic"


def _patched(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, middleware: Any = None, **kwargs: Any) -> None:
        own = WatcherMiddleware(platform_of(type(self)))
        chain = tuple(middleware or ())
        if any(isinstance(entry, WatcherMiddleware) for entry in chain):
            # A copy's chain holds its original's: replaced in place, as the copy may have another region.
            chain = tuple(own if isinstance(entry, WatcherMiddleware) else entry for entry in chain)
        else:
            # Innermost, so it sees each attempt as sent, after any fallback middleware chose it.
            chain = (*chain, own)
        if own.platform == _VERTEX:
            own.client = weakref.ref(self)  # read at call time: a subclass sets its region after this runs
        original(self, *args, middleware=chain, **kwargs)

    return __init__


def patch_clients() -> None:
    """Wraps the SDK's two base client constructors; idempotent.

    Every client class (Anthropic, AsyncAnthropic, Bedrock, Vertex, Foundry, and each copy made
    by `with_options`) runs one of these, so every client built from now on carries the
    middleware exactly once: a copy's inherited one is replaced by its own, which knows the
    copy's Vertex AI location.
    """
    for base in _BASES:
        if base not in _originals:
            _originals[base] = base.__init__
            base.__init__ = _patched(base.__init__)  # type: ignore[method-assign]


def unpatch_clients() -> None:
    """Restores the constructors; idempotent. Clients built meanwhile keep an inert middleware."""
    for base, original in list(_originals.items()):
        base.__init__ = original
        del _originals[base]
