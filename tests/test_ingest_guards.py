"""Hostile and mistaken spans reaching a real daemon: each gets a clear reason and a count, and the books hold."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from _support import corrupt_a_page_of_entries, http, metrics_text, sample
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import watcher
from watcher.budgets import parse_budgets
from watcher.daemon import Running, build
from watcher.daemon._metrics import SpendCounters
from watcher.daemon._mismatch import Mismatch, MismatchLog
from watcher.exceptions import ConfigError
from watcher.ledger import Entry, Scope, SqliteLedger

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BUDGETS = """
[[budgets]]
name = "all-daily"
limit_usd = 100
period = "day"

[[budgets]]
name = "chat-daily"
limit_usd = 100
period = "day"
scope = { request_type = "chat" }
"""
# haiku 4.5 at $1 / $5 per million: 1000 in + 100 out is $0.0015
COST_SPAN: dict[str, Any] = {
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-haiku-4-5",
    "gen_ai.response.model": "claude-haiku-4-5",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 100,
    "gen_ai.usage.cache_read.input_tokens": 0,
    "gen_ai.usage.cache_write.input_tokens": 0,
    "anthropic.usage.uncached_input_tokens": 1000,
    "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 0,
    "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 0,
    "gen_ai.usage.cost.amount": 0.0015,
    "watcher.cost.input_usd": 0.001,
    "watcher.cost.output_usd": 0.0005,
    "watcher.cost.estimated": False,
    "watcher.pricing.version": "2026-11-25",
    "watcher.request_type": "chat",
}


class Clock:
    """A fixed clock the test can move."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def export(*spans: dict[str, Any], end: datetime = NOW - timedelta(minutes=1), service: str = "app") -> bytes:
    """A protobuf export of spans with these attributes (None values left out), all ending at `end`."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    end_ns = int(end.timestamp() * 1e9)
    for attributes in spans:
        present = {key: value for key, value in attributes.items() if value is not None}
        provider.get_tracer("t").start_span("chat", attributes=present, start_time=max(end_ns - 1000, 0)).end(end_ns)
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans()).SerializeToString()  # type: ignore[no-any-return]


def cost_span(response_id: str, **changes: Any) -> dict[str, Any]:
    return {**COST_SPAN, "gen_ai.response.id": response_id, **changes}


def post(daemon: Running, body: bytes) -> int:
    """The number of spans the daemon rejected (OTLP partial success); AssertionError unless it answered 200."""
    status, reply = http(daemon.address + "/v1/traces", body, **{"content-type": "application/x-protobuf"})
    assert status == 200, (status, reply)
    return int(ExportTraceServiceResponse.FromString(reply).partial_success.rejected_spans)


Start = Callable[..., Running]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    running: list[Running] = []

    def _start(clock: Clock | None = None, **settings: Any) -> Running:
        config = watcher.Settings(listen="127.0.0.1:0", grpc_listen="", state_dir=tmp_path, **settings)
        daemon = build(config, budgets=parse_budgets(BUDGETS), clock=clock or Clock())
        running.append(daemon.start(tick_s=3600))
        return daemon

    yield _start
    for daemon in running:
        daemon.stop()


def rejected(daemon: Running, reason: str) -> float:
    return sample(metrics_text(daemon.address), "watcher_spans_rejected_total", reason=reason)


def test_int64_token_counts_are_rejected_as_implausible_and_the_report_still_runs(
    start: Start, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spans claiming int64's largest token counts are rejected with a counted reason; the plain span beside them
    is stored, and `watcher report` (whose sums would overflow) runs."""
    from watcher.cli import main

    daemon = start()
    huge = {"gen_ai.usage.output_tokens": 2**63 - 1}
    body = export(cost_span("big1", **huge), cost_span("big2", **huge), cost_span("fine"))
    assert post(daemon, body) == 2
    assert rejected(daemon, "implausible_tokens") == 2
    assert rejected(daemon, "malformed") == 0
    assert daemon.ledger.count() == 1  # type: ignore[attr-defined]
    monkeypatch.setenv("WATCHER_ENDPOINT", daemon.address)
    assert main(["report", "--since", "2026-11-25", "--until", "2026-11-26"]) == 0
    assert "chat" in capsys.readouterr().out
    assert (
        main(["report", "--ledger", str(tmp_path / "ledger.db"), "--since", "2026-11-25", "--until", "2026-11-26"]) == 0
    )
    assert "chat" in capsys.readouterr().out


def test_spans_far_from_the_daemons_clock_are_rejected_and_a_week_old_replay_is_taken(start: Start) -> None:
    """Spans ending in 1970, in 2100, or two hours ahead are rejected as out of window; one from a week ago
    (re-sent after an outage) and one a little ahead (clock skew) are stored, each in its own day."""
    daemon = start()
    ends = {
        "epoch": datetime(1970, 1, 1, tzinfo=UTC),
        "future": datetime(2100, 1, 1, tzinfo=UTC),
        "ahead": NOW + timedelta(hours=2),
        "replayed": NOW - timedelta(days=7),
        "skewed": NOW + timedelta(minutes=30),
    }
    refused = sum(post(daemon, export(cost_span(name), end=end)) for name, end in ends.items())
    assert refused == 3
    assert rejected(daemon, "time_out_of_window") == 3
    ever = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2101, 1, 1, tzinfo=UTC))
    assert daemon.ledger.spend(Scope(), *ever) == Decimal("0.003")
    all_daily = daemon.books.evaluate()["all-daily"]
    assert all_daily.state.spend_usd == Decimal("0.0015")  # today's: the skewed span, not last week's


def test_the_accepted_age_is_a_setting(start: Start) -> None:
    """With WATCHER_MAX_SPAN_AGE_DAYS=3 a span from four days ago is rejected, one from two days ago stored."""
    daemon = start(max_span_age_days=3)
    assert post(daemon, export(cost_span("old"), end=NOW - timedelta(days=4))) == 1
    assert post(daemon, export(cost_span("recent"), end=NOW - timedelta(days=2))) == 0
    assert rejected(daemon, "time_out_of_window") == 1


def test_the_daemon_refuses_to_start_on_a_corrupt_ledger(tmp_path: Path) -> None:
    """`build` raises ConfigError naming the ledger file when a page of it is damaged."""
    with SqliteLedger(tmp_path / "ledger.db") as ledger:
        ledger.append([Entry(f"k{i}", 0, None, "app", "prod", "chat", "claude-haiku-4-5") for i in range(2000)])
    corrupt_a_page_of_entries(tmp_path / "ledger.db")
    settings = watcher.Settings(listen="127.0.0.1:0", grpc_listen="", state_dir=tmp_path)
    with pytest.raises(ConfigError, match=f"ledger {tmp_path / 'ledger.db'} is corrupt"):
        build(settings, budgets=[], clock=Clock())


def test_hundreds_of_models_and_an_overlong_service_name_fold_into_other_on_metrics(start: Start) -> None:
    """Spans naming 300 models, from a service with a 300-character name, give /metrics at most 50 model values
    plus `other`, no label value over 128 characters, and the same total spend as the ledger."""
    daemon = start()
    spans = [cost_span(f"r{i}", **{"gen_ai.response.model": f"claude-model-{i}"}) for i in range(300)]
    assert post(daemon, export(*spans, service="s" * 300)) == 0
    families = {f.name: f for f in text_string_to_metric_families(metrics_text(daemon.address))}
    samples = families["watcher_cost_usd"].samples
    assert len({s.labels["model"] for s in samples}) == 51
    assert {s.labels["service"] for s in samples} == {"other"}
    assert max(len(value) for s in samples for value in s.labels.values()) <= 128
    assert sum(Decimal(str(s.value)) for s in samples) == daemon.ledger.spend(Scope(), NOW - timedelta(days=1), NOW)


LABELS = st.text(alphabet="ab", min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(st.tuples(LABELS, LABELS, LABELS, st.integers(0, 2**63 - 1), st.integers(0, 10**10)), max_size=60),
    caps=st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 10)),
)
def test_folding_labels_keeps_every_total_and_bounds_every_label(
    rows: list[tuple[str, str, str, int, int]], caps: tuple[int, int, int]
) -> None:
    """Whatever the label values, the folded counters add up to the same cost, requests and tokens, no label has
    more than its cap of distinct values (plus `other`) or a value over the length cap, and the label sets stay
    within their cap (plus the all-`other` set)."""
    max_values, max_length, max_series = caps
    counters = SpendCounters(max_values=max_values, max_length=max_length, max_series=max_series)
    entries = [
        Entry(f"k{i}", 0, None, svc, "prod", kind, model, cost_nanos=cost, output_tokens=tokens)
        for i, (svc, kind, model, cost, tokens) in enumerate(rows)
    ]
    counters.add(entries)
    snapshot = counters.snapshot()
    assert sum(sums[0] for _, sums in snapshot) == sum(e.cost_nanos for e in entries)
    assert sum(sums[6] for _, sums in snapshot) == len(entries)
    assert sum(sums[8] for _, sums in snapshot) == sum(e.output_tokens for e in entries)
    for position in range(3):
        values = {labels[position] for labels, _ in snapshot} - {"other"}
        assert len(values) <= max_values
        assert all(len(value) <= max_length for value in values)
    assert len({labels for labels, _ in snapshot} - {("other",) * 3}) <= max_series


def test_the_ledgers_cache_of_stored_dimension_values_is_bounded_and_globs_still_see_every_value() -> None:
    """Appending 12,000 distinct models remembers at most 10,000 dimension values in memory; a glob still
    matches a model written after the cache was full."""
    with SqliteLedger() as ledger:
        for batch in range(12):
            ledger.append(
                [
                    Entry(f"k{batch}-{i}", 0, None, "app", "prod", "chat", f"m-{batch}-{i}", cost_nanos=1)
                    for i in range(1000)
                ]
            )
        assert len(ledger._seen) <= 10_000  # the private cache itself: what this test is about
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        assert ledger.spend(Scope(model="m-11-*"), epoch, epoch + timedelta(days=1)) == Decimal("0.000001")


SDK_SPAN: dict[str, Any] = {  # the anthropic SDK's own span of a call: priced by the daemon at $0.0015
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-haiku-4-5",
    "gen_ai.response.model": "claude-haiku-4-5",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 100,
}


def spend_and_counters(daemon: Running) -> tuple[Decimal, Decimal, Decimal, Decimal, float]:
    """(ledger total today, the two budgets' running spend, the cost counters' total, the requests counter)."""
    views = daemon.books.evaluate()
    text = metrics_text(daemon.address)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counted = sum(Decimal(str(s.value)) for s in families["watcher_cost_usd"].samples)
    requests = sum(s.value for s in families["watcher_requests"].samples)
    today = daemon.ledger.spend(Scope(), NOW - timedelta(hours=12), NOW + timedelta(hours=12))
    return today, views["all-daily"].state.spend_usd, views["chat-daily"].state.spend_usd, counted, requests


def test_an_upgrade_to_watchers_span_moves_the_budgets_and_the_cost_counter_by_the_difference(start: Start) -> None:
    """The SDK's span of a response, then watcher's span of it at a higher cost: both budgets' running spend
    (the one over everything, and the one scoped to watcher's request type) and watcher_cost_usd_total equal
    the ledger's sum, and the response is still one request."""
    daemon = start()
    assert post(daemon, export({**SDK_SPAN, "gen_ai.response.id": "msg_up"})) == 0
    assert spend_and_counters(daemon) == (Decimal("0.0015"), Decimal("0.0015"), 0, Decimal("0.0015"), 1)
    assert post(daemon, export(cost_span("msg_up", **{"gen_ai.usage.cost.amount": 0.0021}))) == 0
    assert spend_and_counters(daemon) == (Decimal("0.0021"), Decimal("0.0021"), Decimal("0.0021"), Decimal("0.0021"), 1)


def test_an_upgrade_to_a_lower_cost_moves_the_budgets_down_but_never_a_counter(start: Start) -> None:
    """watcher's span of a response the SDK's span priced higher: the budgets follow the ledger down; the cost
    counter keeps its figure, since a Prometheus counter that went down would read as a restart."""
    daemon = start()
    assert post(daemon, export({**SDK_SPAN, "gen_ai.response.id": "msg_down"})) == 0
    assert post(daemon, export(cost_span("msg_down", **{"gen_ai.usage.cost.amount": 0.0012}))) == 0
    assert spend_and_counters(daemon) == (Decimal("0.0012"), Decimal("0.0012"), Decimal("0.0012"), Decimal("0.0015"), 1)


def mismatches(daemon: Running) -> dict[str, float]:
    families = {f.name: f for f in text_string_to_metric_families(metrics_text(daemon.address))}
    return {s.labels["service"]: s.value for s in families["watcher_cost_mismatch"].samples}


def test_a_claimed_cost_far_from_its_tokens_price_is_stored_as_claimed_but_counted_and_logged(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """Claims of $1 and of $0 for tokens the daemon prices at $0.0015 are stored as claimed, counted per service
    and logged; a claim within the factor, an estimated one, one of a model the table does not know and a span
    the daemon priced itself are not."""
    daemon = start()
    spans = [
        cost_span("dear", **{"gen_ai.usage.cost.amount": 1.0, "watcher.cost.input_usd": 1.0}),
        cost_span("free", **{"gen_ai.usage.cost.amount": 0.0, "watcher.cost.input_usd": 0.0}),
        cost_span("close", **{"gen_ai.usage.cost.amount": 0.0029}),
        cost_span("guess", **{"gen_ai.usage.cost.amount": 1.0, "watcher.cost.estimated": True}),
        cost_span("unknown", **{"gen_ai.usage.cost.amount": 1.0, "gen_ai.response.model": "claude-nova-1"}),
        {**SDK_SPAN, "gen_ai.response.id": "sdk"},
    ]
    with caplog.at_level("WARNING", logger="watcher.daemon"):
        assert post(daemon, export(*spans)) == 0
    assert mismatches(daemon) == {"app": 2}
    assert daemon.ledger.get("dear").cost_usd == 1  # type: ignore[attr-defined]
    [warning] = [r.getMessage() for r in caplog.records if "claimed cost" in r.getMessage()]
    assert "cost 1 USD of response dear (service app, model claude-haiku-4-5) is more than 2 times off" in warning
    # the most is 1.1x the least: Haiku 4.5 may have run on a regional Bedrock or Vertex AI endpoint
    assert "(0.0015 to 0.00165 USD); stored as claimed (1 more mismatches since the last such warning)" in warning


@pytest.mark.parametrize(("factor", "counted"), [(0, {}), (1.5, {"app": 1})])
def test_the_mismatch_factor_is_a_setting_and_zero_turns_the_check_off(
    start: Start, factor: float, counted: dict[str, float]
) -> None:
    """WATCHER_COST_MISMATCH_FACTOR=1.5 counts a claim 1.9 times the price; 0 counts not even a $1 claim."""
    daemon = start(cost_mismatch_factor=factor)
    claim = 0.00285 if factor else 1.0
    post(daemon, export(cost_span("r", **{"gen_ai.usage.cost.amount": claim})))
    assert mismatches(daemon) == counted


@pytest.mark.parametrize("factor", [0.5, 1, -2, float("inf")])
def test_a_mismatch_factor_that_is_not_above_one_is_refused(factor: float) -> None:
    """A factor of 1 or less (other than 0) would flag rounding; it fails when the settings are built."""
    with pytest.raises(ValueError, match="cost_mismatch_factor"):
        watcher.Settings(cost_mismatch_factor=factor)


def test_mismatch_warnings_are_at_most_one_a_minute_and_count_what_they_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three batches of mismatches within a minute log one warning; the next, a minute on, says 3 were held."""
    now = [0.0]
    warn = MismatchLog(2.0, clock=lambda: now[0])
    one: list[Mismatch] = [(Entry("k", 0, "k", "app", "prod", "chat", "m", cost_nanos=10**9), Decimal(0), Decimal(0))]
    with caplog.at_level("WARNING", logger="watcher.daemon"):
        for at in (0.0, 10.0, 59.0, 60.0):
            now[0] = at
            warn(one * 2 if at == 10.0 else one)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].endswith("stored as claimed")
    assert messages[1].endswith("(3 more mismatches since the last such warning)")
