"""Several services' spans from one process: one TracerProvider per service name behind one provider."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.util.types import Attributes

__all__ = ["ServiceProviders"]

_SERVICE = otel_context.create_key("watcher.traffic.service")


class _ServiceTracer(trace.Tracer):
    """Starts each span in the provider of the service named in the span's parent context."""

    def __init__(self, pick: Callable[[otel_context.Context | None], trace.Tracer]) -> None:
        self._pick = pick

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        return self._pick(context).start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )

    @contextmanager  # the API's own decorator is private; the hook only calls start_span
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        tracer = self._pick(context)
        with tracer.start_as_current_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception, end_on_exit
        ) as span:
            yield span


class ServiceProviders(trace.TracerProvider):
    """One SDK TracerProvider per service name, behind one provider that `watcher.instrument()` can take.

    OpenTelemetry puts `service.name` on the provider's Resource, not on spans, so one process
    that plays several services needs a provider for each. The hook starts every cost span with
    the context captured when the call was made; `as_service(name)` puts the name there, and
    the span goes to that service's provider. Spans outside `as_service` go to `default`.
    """

    def __init__(self, services: Sequence[str], make_exporter: Callable[[], SpanExporter], delay_ms: int) -> None:
        self.providers: dict[str, TracerProvider] = {}
        for service in services:
            provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
            provider.add_span_processor(BatchSpanProcessor(make_exporter(), schedule_delay_millis=delay_ms))
            self.providers[service] = provider
        self.default = services[0]

    @contextmanager
    def as_service(self, service: str) -> Iterator[None]:
        token = otel_context.attach(otel_context.set_value(_SERVICE, service))
        try:
            yield
        finally:
            otel_context.detach(token)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        tracers = {
            service: provider.get_tracer(
                instrumenting_module_name, instrumenting_library_version, schema_url, attributes
            )
            for service, provider in self.providers.items()
        }

        def pick(context: otel_context.Context | None) -> trace.Tracer:
            service = otel_context.get_value(_SERVICE, context)
            return tracers.get(service if isinstance(service, str) else self.default, tracers[self.default])

        return _ServiceTracer(pick)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all([provider.force_flush(timeout_millis) for provider in self.providers.values()])

    def shutdown(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()
