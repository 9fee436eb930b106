"""Time from the acknowledgement of the span that crosses a kill threshold to the first refused call.

Usage: python bench/enforcement.py [--runs N] [--poll S]

Starts `watcher serve` as its own process with one budget per run (scope: request type runN),
instruments this process (kill-switch poll every S seconds, default 1), and per run: posts the
span that takes the budget past 120%, notes when the daemon acknowledged it, then calls the
fake Anthropic API in that request type until the hook raises BudgetExceeded. Prints the
median, p90 and max delay over the runs against the baseline, the poll interval itself.
Target: no call started more than 2 s after the acknowledgement goes through.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import anthropic

import watcher
from watcher.testing import DaemonProcess, FakeAnthropic

sys.path.insert(0, str(Path(__file__).parent))
from ingest import post

HI = [{"role": "user", "content": "hi"}]


def crossing_body(run: int) -> bytes:
    """One watcher cost span of $1.30 in request type `run{run}` (its budget's limit is $1)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attributes = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-opus-4-7",
        "gen_ai.response.model": "claude-opus-4-7",
        "gen_ai.response.id": f"msg_cross_{run}",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
        "gen_ai.usage.cost.amount": 1.3,
        "watcher.cost.input_usd": 1.3,
        "watcher.pricing.version": "2026-11-25",
        "watcher.request_type": f"run{run}",
    }
    provider.get_tracer("watcher").start_span("chat claude-opus-4-7", attributes=attributes).end()
    return encode_spans(exporter.get_finished_spans()).SerializeToString()  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args()
    config = "".join(
        f'[[budgets]]\nname = "run{i}"\nlimit_usd = 1\nperiod = "day"\nscope = {{ request_type = "run{i}" }}\n\n'
        for i in range(args.runs)
    )
    daemon = DaemonProcess(config).start()
    url = daemon.url
    delays: list[float] = []
    try:
        os.environ["ANTHROPIC_OPEN_TELEMETRY"] = "false"
        watcher.instrument(watcher.Settings(endpoint=url, killswitch_poll_s=args.poll))
        with FakeAnthropic() as fake, anthropic.Anthropic(base_url=fake.base_url, api_key="bench") as client:
            for run in range(args.runs):
                post(f"{url}/v1/traces", crossing_body(run))
                acknowledged = time.perf_counter()
                with watcher.request_type(f"run{run}"):
                    while True:
                        try:
                            client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
                        except watcher.BudgetExceeded:
                            delays.append(time.perf_counter() - acknowledged)
                            break
        watcher.uninstrument()
    finally:
        daemon.stop()
    delays.sort()
    p90 = delays[int(0.9 * (len(delays) - 1))]
    print(f"{len(delays)} runs, poll every {args.poll:.2f} s (the baseline: the longest a poll can lag)")
    print(
        f"acknowledged -> first refused call: median {statistics.median(delays):.3f} s, p90 {p90:.3f} s, "
        f"max {delays[-1]:.3f} s; max / poll interval = {delays[-1] / args.poll:.2f}"
    )


if __name__ == "__main__":
    main()
