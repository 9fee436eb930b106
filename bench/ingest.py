"""Daemon ingestion throughput: OTLP/HTTP protobuf batches of 512 cost spans, through to the committed ledger.

Usage: python bench/ingest.py [--batches N] [--senders K] [--cpu C] [--database-url URL]

Starts `watcher serve` as its own process (fresh state directory, one budget so evaluation runs
on every batch), sends N export requests of 512 distinct watcher cost spans from K sender
threads, and prints spans per second end to end (every request answered 200 only after its
spans were committed), the ledger's row count, and the daemon's peak memory (VmHWM) after the
first and the last batch. Baseline, measured in this run on the same bodies: a plain Python
decode that turns every attribute of every span into dicts. Target: at least 30k spans/s.
With `--cpu C` every thread of the daemon is pinned to CPU C and the senders to the others,
so the figure is the daemon's on one core.

With `--database-url postgresql://USER@HOST:PORT/DB` (a server on which the bench may create and drop
databases), it measures in the same run, on the same bodies: one daemon on SQLite, one daemon on a
fresh PostgreSQL database, and two daemons sharing a fresh PostgreSQL database with the senders
split between them (any replica takes any span: dedupe is global). Target: two replicas on
PostgreSQL at least match one on SQLite.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from watcher.testing import DaemonProcess

CONFIG = """
[[budgets]]
name = "all-daily"
limit_usd = 1000000
period = "day"
"""
BATCH = 512


def cost_span_bodies(batches: int) -> list[bytes]:
    """`batches` export bodies of 512 spans each, as watcher's hook makes them, with distinct response ids."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("watcher")
    template = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.response.model": "claude-haiku-4-5",
        "gen_ai.usage.input_tokens": 1300,
        "gen_ai.usage.output_tokens": 200,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.cache_write.input_tokens": 0,
        "anthropic.usage.uncached_input_tokens": 300,
        "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 0,
        "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 0,
        "anthropic.usage.server_tool_use.web_search_requests": 0,
        "anthropic.response.service_tier": "standard",
        "gen_ai.usage.cost.amount": 0.0014,
        "gen_ai.usage.cost.currency": "USD",
        "gen_ai.usage.cost.source": "local",
        "watcher.cost.input_usd": 0.0003,
        "watcher.cost.output_usd": 0.001,
        "watcher.cost.cache_read_usd": 0.0001,
        "watcher.cost.cache_write_usd": 0.0,
        "watcher.cost.tools_usd": 0.0,
        "watcher.cost.estimated": False,
        "watcher.pricing.version": "2026-11-25",
        "watcher.pricing.model": "claude-haiku-4-5",
        "watcher.platform": "anthropic",
    }
    bodies = []
    for b in range(batches):
        exporter.clear()
        for i in range(BATCH):
            attributes = {**template, "gen_ai.response.id": f"msg_{b}_{i}", "watcher.request_type": f"type{i % 8}"}
            tracer.start_span("chat claude-haiku-4-5", attributes=attributes).end()
        bodies.append(encode_spans(exporter.get_finished_spans()).SerializeToString())
    return bodies


def naive_decode_rate(bodies: list[bytes]) -> float:
    """Spans/s of the baseline: protobuf decode, then every attribute of every span into a dict."""
    start = time.perf_counter()
    count = 0
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}
                    count += 1
    return count / (time.perf_counter() - start)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/x-protobuf"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200


def send_all(urls: list[str], bodies: list[bytes], senders: int) -> float:
    """Sends `bodies` from `senders` threads, sender i to `urls[i % len(urls)]`; the seconds it took."""
    queue = list(reversed(bodies))
    lock = threading.Lock()

    def sender(url: str) -> None:
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            post(f"{url}/v1/traces", body)

    start = time.perf_counter()
    threads = [threading.Thread(target=sender, args=(urls[n % len(urls)],)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new database on `server` for one configuration, dropped after."""
    import psycopg

    name = f"watcher_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(bodies: list[bytes], senders: int, replicas: int, database_url: str | None) -> float:
    """Spans/s end to end through `replicas` daemons on `database_url` (None: SQLite), after one warm-up batch."""
    previous = os.environ.get("WATCHER_DATABASE_URL")
    if database_url:
        os.environ["WATCHER_DATABASE_URL"] = database_url
    daemons = [DaemonProcess(CONFIG).start() for _ in range(replicas)]
    try:
        for daemon in daemons:
            post(f"{daemon.url}/v1/traces", bodies[0])
        elapsed = send_all([d.url for d in daemons], bodies[1:], senders)
        return (len(bodies) - 1) * BATCH / elapsed
    finally:
        for daemon in daemons:
            daemon.stop()
        if previous is None:
            os.environ.pop("WATCHER_DATABASE_URL", None)
        else:
            os.environ["WATCHER_DATABASE_URL"] = previous


def compare_backends(bodies: list[bytes], senders: int, server: str) -> None:
    """One daemon on SQLite against one and two daemons on PostgreSQL, in this run on the same bodies."""
    sqlite = measure(bodies, senders, 1, None)
    with fresh_database(server) as url:
        one = measure(bodies, senders, 1, url)
    with fresh_database(server) as url:
        two = measure(bodies, senders * 2, 2, url)
    print(f"{(len(bodies) - 1) * BATCH} spans, {senders} senders a daemon:")
    print(f"  one daemon on SQLite:          {sqlite:>9,.0f} spans/s")
    print(f"  one daemon on PostgreSQL:      {one:>9,.0f} spans/s  ({one / sqlite:.2f} x SQLite)")
    print(f"  two daemons on PostgreSQL:     {two:>9,.0f} spans/s  ({two / sqlite:.2f} x SQLite)")
    print(f"{'PASS' if two >= sqlite else 'FAIL'}  two replicas on PostgreSQL at least match one on SQLite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--cpu", type=int, default=None, help="pin the daemon to this CPU (one core, measured)")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to compare backends on")
    args = parser.parse_args()
    bodies = cost_span_bodies(args.batches)
    if args.database_url:
        compare_backends(bodies, args.senders, args.database_url)
        return
    before = naive_decode_rate(bodies[:20])
    daemon = DaemonProcess(CONFIG).start()
    url, state = daemon.url, daemon.state_dir
    if args.cpu is not None:  # every thread of the daemon on one core; the senders stay elsewhere
        for task in Path(f"/proc/{daemon.pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), {args.cpu})
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - {args.cpu} or {args.cpu})
    try:
        post(f"{url}/v1/traces", bodies[0])
        first_peak = peak_rss_mb(daemon.pid)
        queue = list(reversed(bodies[1:]))
        lock = threading.Lock()

        def sender() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                post(f"{url}/v1/traces", body)

        start = time.perf_counter()
        threads = [threading.Thread(target=sender) for _ in range(args.senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        after = naive_decode_rate(bodies[:20])  # the machine's speed can drift during the run
        baseline = (before + after) / 2
        spans = (len(bodies) - 1) * BATCH
        rate = spans / elapsed
        rows = sqlite3.connect(state / "ledger.db").execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        print(f"{spans} spans in {elapsed:.2f} s: {rate:,.0f} spans/s end to end ({args.senders} senders)")
        print(
            f"baseline (naive full-attribute decode only, no storage): {baseline:,.0f} spans/s "
            f"(mean of {before:,.0f} before and {after:,.0f} after the run); ratio {rate / baseline:.2f}"
        )
        print(
            f"ledger rows: {rows}; daemon peak RSS {first_peak:.0f} MB after the first batch, "
            f"{peak_rss_mb(daemon.pid):.0f} MB after the last"
        )
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
