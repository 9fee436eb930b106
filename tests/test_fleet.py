"""Several daemons on one PostgreSQL database keep one set of books: each response counted once, each alert
sent once, each kill switch engaged once, whichever daemon each export (and each retry of it) reaches."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from _postgres import fresh_database
from _support import http, wait_for

import watcher
from watcher.budgets import parse_budgets
from watcher.daemon import Running, build

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BUDGETS = """
[[budgets]]
name = "fleet-daily"
limit_usd = 1
period = "day"
"""
RESPONSES = 200
COST = 0.01  # $2.00 in all: past the alert line ($0.80) and the kill line ($1.20)


class Inbox:
    """One alert target shared by every daemon: what each of them sent, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def send(self, title: str, body: str) -> bool:
        with self._lock:
            self.sent.append(title)
        return True


def export_body(ids: list[str]) -> bytes:
    """One OTLP/protobuf export of a watcher cost span per response id, encoded by the official encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    end_ns = int(NOW.timestamp() * 1e9) - 60_000_000_000
    for response_id in ids:
        attributes = {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-haiku-4-5",
            "gen_ai.response.id": response_id,
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.usage.cost.amount": COST,
            "watcher.cost.input_usd": COST,
            "watcher.pricing.version": "2026-11-25",
            "watcher.request_type": "extraction",
        }
        span = provider.get_tracer("t").start_span("chat claude-haiku-4-5", attributes=attributes, start_time=end_ns)
        span.end(end_time=end_ns + 1000)
    return encode_spans(exporter.get_finished_spans()).SerializeToString()  # type: ignore[no-any-return]


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def fleet(database: str, tmp_path: Path) -> Iterator[tuple[list[Running], Inbox]]:
    """Three daemons on one database, sharing one alert target."""
    inbox = Inbox()
    daemons = []
    try:
        for index in range(3):
            settings = watcher.Settings(listen="127.0.0.1:0", state_dir=tmp_path / f"d{index}", database_url=database)
            running = build(settings, budgets=parse_budgets(BUDGETS), clock=lambda: NOW, notifier=inbox)
            daemons.append(running.start(tick_s=3600))
        yield daemons, inbox
    finally:
        for running in daemons:
            running.stop()


def test_three_daemons_racing_exporters_count_each_response_alert_and_switch_once(
    fleet: tuple[list[Running], Inbox],
) -> None:
    """Eight exporters send every batch to a random daemon and retry it on another (some twice): the ledger
    holds each response once, every daemon reads the same spend, and one alert and one kill are sent."""
    daemons, inbox = fleet
    ids = [f"msg_fleet_{n:04d}" for n in range(RESPONSES)]
    batches = [ids[start : start + 10] for start in range(0, RESPONSES, 10)]
    chooser = random.Random(7)
    plans = [(export_body(batch), chooser.sample(daemons, k=chooser.choice([2, 3]))) for batch in batches]
    failures: list[str] = []

    def exporter(mine: list[tuple[bytes, list[Running]]]) -> None:
        for body, targets in mine:
            for target in targets:  # the first send, then retries that reach other daemons
                status, answer = http(f"{target.address}/v1/traces", body, **{"content-type": "application/x-protobuf"})
                if status != 200:
                    failures.append(f"{status} {answer[:200]!r}")

    threads = [threading.Thread(target=exporter, args=(plans[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    for running in daemons:
        running.books.evaluate()
        assert running.books.views["fleet-daily"].state.spend_usd == Decimal(str(COST)) * RESPONSES
        status, body = http(f"{running.address}/v1/killswitch")
        assert status == 200 and [s["budget"] for s in json.loads(body)["engaged"]] == ["fleet-daily"]
    wait_for(lambda: len(inbox.sent) >= 2, "the alert and the kill notice")
    for running in daemons:
        running.books.evaluate()
        running.dispatcher.stop()  # no delivery in flight: what was sent is all there will be
    assert sorted(inbox.sent) == ["watcher: KILL SWITCH engaged", "watcher: budget alert"]
    stored = sum(running.daemon.counters.stored for running in daemons)
    assert stored == RESPONSES  # stored once in all, the rest duplicates
