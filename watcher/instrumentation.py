"""`AnthropicSpendInstrumentor`: the hook as an OpenTelemetry instrumentor, found by `opentelemetry-instrument`."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from ._instrument._hook import instrument, uninstrument
from .settings import Settings

__all__ = ["AnthropicSpendInstrumentor"]

_INSTRUMENTS = ("anthropic >= 2.10, < 3",)


class AnthropicSpendInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """`watcher.instrument()` / `watcher.uninstrument()` behind OpenTelemetry's instrumentor interface.

    Registered as the `anthropic_spend` entry point of the `opentelemetry_instrumentor` group, so
    `opentelemetry-instrument python app.py` turns the hook on with no change to the application
    (`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=anthropic_spend` leaves it off). Calling it by hand works
    too: `AnthropicSpendInstrumentor().instrument(tracer_provider=...)`. A singleton, idempotent
    (BaseInstrumentor ignores a second `instrument()`), and a no-op when the installed anthropic is
    not one the hook supports (the dependency check logs why). Like `import watcher.auto`, it does
    nothing when WATCHER_ENABLED is false.

    Keyword arguments of `instrument()`: `tracer_provider` (the spans' provider, as for
    `watcher.instrument`) and `settings` (default `Settings()`).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        """The anthropic versions the hook supports, in requirements syntax."""
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        settings = kwargs.get("settings") or Settings()
        if settings.enabled:
            instrument(settings, tracer_provider=kwargs.get("tracer_provider"))

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstrument()
