"""`watcher demo`: real SDK calls against the fake API, through the hook, summed into a cost breakdown."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from .._fake._capture import COST

__all__ = ["run_demo"]

HI = [{"role": "user", "content": "Summarise this invoice."}]
# (request type, model, usage the fake reports, how the call is made)
TRAFFIC: list[tuple[str, str, dict[str, Any], str]] = [
    ("extraction", "claude-haiku-4-5", {"input_tokens": 1800, "output_tokens": 350}, "plain"),
    (
        "extraction",
        "claude-haiku-4-5",
        {
            "input_tokens": 200,
            "output_tokens": 340,
            "cache_read_input_tokens": 1600,
            "cache_creation_input_tokens": 0,
        },
        "plain",
    ),
    ("summarise", "claude-sonnet-4-6", {"input_tokens": 9000, "output_tokens": 1200}, "stream"),
    (
        "summarise",
        "claude-sonnet-4-6",
        {
            "input_tokens": 500,
            "output_tokens": 1100,
            "cache_creation_input_tokens": 8500,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 8500},
        },
        "stream",
    ),
    (
        "agent",
        "claude-opus-4-7",
        {"input_tokens": 25000, "output_tokens": 4000, "server_tool_use": {"web_search_requests": 3}},
        "plain",
    ),
    ("backfill", "claude-haiku-4-5", {"input_tokens": 1800, "output_tokens": 350}, "batch"),
    ("experiment", "claude-nova-1", {"input_tokens": 1000, "output_tokens": 100}, "plain"),
]


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _drive(client: Any, fake: Any, kind: str, model: str, usage: dict[str, Any]) -> None:
    from ..testing import FakeReply

    if kind == "batch":
        fake.reply(*(FakeReply(usage=usage) for _ in range(4)))
        params = {"model": model, "max_tokens": 512, "messages": HI}
        batch = client.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": params} for i in range(4)])
        list(client.messages.batches.results(batch.id))
        return
    fake.reply(FakeReply(usage=usage))
    if kind == "stream":
        with client.messages.stream(model=model, max_tokens=2048, messages=HI) as stream:
            stream.get_final_message()
    else:
        client.messages.create(model=model, max_tokens=2048, messages=HI)


def _number(attributes: Any, key: str) -> float:
    value = attributes.get(key, 0)
    return float(value) if isinstance(value, int | float) else 0.0


def _table(spans: list[ReadableSpan], out: IO[str]) -> None:
    rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    estimated: set[tuple[str, str]] = set()
    for span in spans:
        a = span.attributes or {}
        key = (
            str(a["watcher.request_type"]),
            str(a.get("gen_ai.request.model") or a["gen_ai.response.model"]),
        )
        row = rows[key]
        row[0] += 1
        row[1] += _number(a, "gen_ai.usage.input_tokens")
        row[2] += _number(a, "gen_ai.usage.output_tokens")
        row[3] += _number(a, "gen_ai.usage.cache_read.input_tokens")
        row[4] += _number(a, COST)
        if a.get("watcher.cost.estimated"):
            estimated.add(key)
    header = (
        f"{'request type':<12} {'model':<18} {'calls':>5} {'input':>8} {'output':>7} {'cached':>7} {'cost USD':>10}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for (rtype, model), (calls, inp, outp, cached, cost) in sorted(rows.items(), key=lambda kv: -kv[1][4]):
        mark = " *" if (rtype, model) in estimated else ""
        print(
            f"{rtype:<12} {model:<18} {calls:>5.0f} {inp:>8.0f} {outp:>7.0f} {cached:>7.0f} {cost:>10.6f}{mark}",
            file=out,
        )
    print("-" * len(header), file=out)
    print(
        f"{'total':<12} {'':<18} {len(spans):>5} {'':>8} {'':>7} {'':>7} {sum(r[4] for r in rows.values()):>10.6f}",
        file=out,
    )
    if estimated:
        print(
            "* model not in the price table: cost estimated by family or default, and flagged on the span",
            file=out,
        )


def run_demo(out: IO[str]) -> int:
    """Drives several request types through the real SDK and the hook, then prints cost by type and model."""
    import anthropic

    from .. import instrument, request_type, uninstrument
    from ..testing import FakeAnthropic

    os.environ.setdefault("ANTHROPIC_OPEN_TELEMETRY", "false")
    keep = _Keep()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(keep))
    instrument(tracer_provider=provider)
    try:
        with FakeAnthropic() as fake, anthropic.Anthropic(base_url=fake.base_url, api_key="demo") as client:
            print(f"fake Anthropic API at {fake.base_url}; no API key, no network", file=out)
            for rtype, model, usage, kind in TRAFFIC:
                with request_type(rtype):
                    _drive(client, fake, kind, model, usage)
    finally:
        uninstrument()
    spans = [span for span in keep.spans if span.attributes and COST in span.attributes]
    print(f"{len(spans)} cost spans recorded\n", file=out)
    _table(spans, out)
    from ._loop import run_loop

    return run_loop(out)
