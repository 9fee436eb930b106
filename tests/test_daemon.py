"""The daemon end to end: real OTLP in, durable ledger, budgets, exactly-once alerts, kill switches the apps obey."""

from __future__ import annotations

import gzip
import json
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest
from _support import http, metrics_text, sample
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import watcher
from watcher.budgets import parse_budgets
from watcher.daemon import Running, build
from watcher.exceptions import ConfigError
from watcher.ledger import Scope
from watcher.testing import FakeAnthropic, FakeReply

HI = [{"role": "user", "content": "hi"}]
BUDGETS = """
[[budgets]]
name = "extraction-daily"
limit_usd = 0.01
period = "day"
scope = { request_type = "extraction" }
"""


class Clock:
    """A settable clock: tests move time, nothing sleeps."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    """A notifier that keeps what it was sent; `fail` makes deliveries fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail = False
        self.arrived = threading.Condition()

    def send(self, title: str, body: str) -> bool:
        if self.fail:
            return False
        with self.arrived:
            self.sent.append((title, body))
            self.arrived.notify_all()
        return True

    def wait_for(self, count: int) -> list[tuple[str, str]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.sent) >= count, 10), self.sent
            return list(self.sent)


Start = Callable[..., Running]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    running: list[Running] = []

    def _start(
        budgets: str = BUDGETS, clock: Clock | None = None, notifier: Recorder | None = None, **settings: object
    ) -> Running:
        config = watcher.Settings(listen="127.0.0.1:0", grpc_listen="127.0.0.1:0", state_dir=tmp_path, **settings)  # type: ignore[arg-type]
        daemon = build(config, budgets=parse_budgets(budgets), clock=clock or Clock(), notifier=notifier or Recorder())
        running.append(daemon.start(tick_s=3600))
        return daemon

    yield _start
    for daemon in running:
        daemon.stop()


def spend_through_hook(
    daemon: Running, fake: FakeAnthropic, request_type: str, calls: int, usage: dict[str, int]
) -> None:
    """Real SDK calls through the hook, exported over real OTLP/HTTP to the daemon, and flushed.

    The hook's spans carry the daemon's clock, so they fall in the window the daemon evaluates
    whatever the date the test runs on.
    """
    clock = daemon.server.clock
    settings = watcher.Settings(endpoint=daemon.address, killswitch_poll_s=0)
    watcher.instrument(settings, clock_ns=lambda: int(clock().timestamp() * 1e9))
    try:
        with anthropic.Anthropic(base_url=fake.base_url, api_key="k") as client, watcher.request_type(request_type):
            for _ in range(calls):
                fake.reply(FakeReply(usage=usage))
                client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
        assert watcher.flush()
    finally:
        watcher.uninstrument()


def get(daemon: Running, path: str, token: str | None = None) -> dict[str, object]:
    status, body = http(daemon.address + path, token=token)
    assert status == 200, (status, body)
    return json.loads(body)  # type: ignore[no-any-return]


def post(
    daemon: Running, body: bytes, content_type: str = "application/x-protobuf", **headers: str
) -> tuple[int, bytes]:
    return http(daemon.address + "/v1/traces", body, **{"content-type": content_type, **headers})


def budget(daemon: Running, name: str = "extraction-daily") -> dict[str, object]:
    return next(b for b in get(daemon, "/v1/budgets")["budgets"] if b["name"] == name)  # type: ignore[attr-defined, index]


def test_spans_from_the_hook_land_in_the_ledger_and_count_against_their_budget(
    start: Start, fake_api: FakeAnthropic
) -> None:
    """Three haiku calls of 1000 in / 100 out ($0.0015 each) are $0.0045 of the extraction budget."""
    daemon = start()
    spend_through_hook(daemon, fake_api, "extraction", 3, {"input_tokens": 1000, "output_tokens": 100})
    spend_through_hook(daemon, fake_api, "other", 2, {"input_tokens": 1000, "output_tokens": 100})
    assert budget(daemon)["spend_usd"] == pytest.approx(0.0045)
    assert daemon.daemon.counters.stored == 5


def test_a_resent_export_is_not_counted_twice(start: Start) -> None:
    """An exporter retry of an acknowledged batch changes nothing."""
    daemon = start()
    body = _export_body(cost=0.002, response_id="msg_1")
    assert post(daemon, body)[0] == 200
    assert post(daemon, body)[0] == 200
    assert budget(daemon)["spend_usd"] == pytest.approx(0.002)
    assert daemon.daemon.counters.duplicates == 1


def test_bad_bodies_get_4xx_and_the_daemon_keeps_serving(start: Start) -> None:
    """Oversized, bombed, undecodable or mistyped bodies get 413/400/415; a good body still goes through."""
    daemon = start(max_request_bytes=2048)
    assert post(daemon, b"x" * 4096)[0] == 413
    assert post(daemon, gzip.compress(b"\0" * 100_000), **{"content-encoding": "gzip"})[0] == 413
    assert post(daemon, b"\xff\xfenot protobuf")[0] == 400
    assert post(daemon, b"{}", content_type="text/plain")[0] == 415
    assert post(daemon, _export_body(cost=0.001, response_id="ok"))[0] == 200


def test_otlp_json_is_accepted_with_hex_ids(start: Start) -> None:
    """OTLP/JSON with hex trace and span ids is ingested like protobuf."""
    daemon = start()
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "chat claude-haiku-4-5",
                                "kind": 3,
                                "startTimeUnixNano": "1795604400000000000",
                                "endTimeUnixNano": "1795604400100000000",
                                "attributes": _json_attributes(0.003, "msg_json"),
                            }
                        ]
                    }
                ],
            }
        ]
    }
    status, _ = post(daemon, json.dumps(document).encode(), content_type="application/json")
    assert status == 200
    assert budget(daemon)["spend_usd"] == pytest.approx(0.003)


def test_the_80_percent_alert_is_sent_once_and_never_again_after_a_restart(start: Start) -> None:
    """Crossing 80% alerts once; more spend in the same period, or a restart, sends nothing more."""
    notifier = Recorder()
    daemon = start(notifier=notifier)
    post(daemon, _export_body(cost=0.0085, response_id="a"))
    [(title, body)] = notifier.wait_for(1)
    assert "alert" in title and "85%" in body and "$0.01" in body and "extraction" in body
    post(daemon, _export_body(cost=0.0001, response_id="b"))
    daemon.stop()
    again = Recorder()
    restarted = start(notifier=again)
    restarted.books.evaluate()
    restarted.dispatcher.deliver_due()
    assert again.sent == [] and len(notifier.sent) == 1


def test_concurrent_exports_crossing_a_budget_count_every_span_once_and_alert_once(start: Start) -> None:
    """Eight exporters racing, each re-sending some spans: the spend is the exact sum of distinct responses,
    and the alert and the kill switch are each sent once."""
    notifier = Recorder()
    daemon = start(notifier=notifier)
    bodies = [_export_body(cost=0.0005, response_id=f"r{i}") for i in range(40)]  # $0.02: 200% of $0.01

    def exporter(worker: int) -> None:
        for index in range(worker, len(bodies), 8):
            for _ in range(2 if index % 3 == 0 else 1):  # a retry after a lost answer
                assert post(daemon, bodies[index])[0] == 200

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(exporter, range(8)))
    assert budget(daemon)["spend_usd"] == pytest.approx(0.02)
    assert daemon.ledger.spend(Scope(), datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC)) == (
        Decimal("0.02")
    )
    titles = sorted(title for title, _ in notifier.wait_for(2))
    daemon.books.evaluate()
    daemon.dispatcher.deliver_due()
    assert len(notifier.sent) == 2 and "KILL SWITCH" in titles[0] and "alert" in titles[1], titles
    assert [switch["budget"] for switch in get(daemon, "/v1/killswitch")["engaged"]] == ["extraction-daily"]  # type: ignore[attr-defined]


def test_an_alert_that_could_not_be_delivered_before_a_crash_is_sent_after_restart(start: Start) -> None:
    """A recorded but undelivered alert is delivered when the daemon comes back."""
    failing = Recorder()
    failing.fail = True
    daemon = start(notifier=failing)
    post(daemon, _export_body(cost=0.009, response_id="a"))
    daemon.stop()
    working = Recorder()
    start(notifier=working)
    assert "alert" in working.wait_for(1)[0][0]


def test_the_kill_switch_at_120_percent_stops_the_app_until_the_period_rolls_over(
    start: Start, fake_api: FakeAnthropic
) -> None:
    """At 120% the switch engages, the hook refuses calls in scope, and the next day releases it with a notice."""
    clock, notifier = Clock(), Recorder()
    daemon = start(clock=clock, notifier=notifier)
    post(daemon, _export_body(cost=0.0125, response_id="big"))
    [switch] = get(daemon, "/v1/killswitch")["engaged"]  # type: ignore[misc]
    assert switch["budget"] == "extraction-daily" and switch["reason"] == "threshold"
    assert switch["resets_at"] == "2026-11-26T00:00:00Z"
    watcher.instrument(watcher.Settings(endpoint=daemon.address, killswitch_poll_s=60))
    try:
        from watcher._instrument._hook import _installed

        poller = _installed[-1][2]
        assert poller is not None
        poller.refresh()
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
            with watcher.request_type("extraction"), pytest.raises(watcher.BudgetExceeded):
                client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
            client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
            clock.now += timedelta(days=1)
            daemon.books.evaluate()
            poller.refresh()
            with watcher.request_type("extraction"):
                client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    finally:
        watcher.uninstrument()
    titles = [title for title, _ in notifier.wait_for(3)]
    assert any("KILL" in t for t in titles) and any("released" in t for t in titles)


def test_kill_switches_can_be_engaged_and_released_by_hand(start: Start) -> None:
    """The admin endpoints engage a switch until the period ends, and release it."""
    daemon = start()
    status, body = http(daemon.address + "/v1/killswitch/extraction-daily/engage", b"")
    assert status == 200 and json.loads(body)["engaged"] is True
    assert get(daemon, "/v1/killswitch")["engaged"][0]["reason"] == "manual"  # type: ignore[index]
    assert http(daemon.address + "/v1/killswitch/extraction-daily/release", b"")[0] == 200
    assert get(daemon, "/v1/killswitch")["engaged"] == []


def test_a_token_is_required_when_set_and_beyond_loopback(start: Start) -> None:
    """With a token every route but /healthz needs it; listening beyond loopback without one is refused."""
    daemon = start(token="s3cret")
    assert get(daemon, "/healthz")["status"] == "ok"
    assert http(daemon.address + "/v1/killswitch")[0] == 401
    assert get(daemon, "/v1/killswitch", token="s3cret")["engaged"] == []
    assert post(daemon, _export_body(cost=0.001, response_id="x"))[0] == 401
    with pytest.raises(ConfigError, match="WATCHER_TOKEN"):
        build(watcher.Settings(listen="0.0.0.0:0"), budgets=[])


def _json_attributes(cost: float, response_id: str) -> list[dict[str, object]]:
    values: dict[str, object] = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.response.model": "claude-haiku-4-5",
        "gen_ai.response.id": response_id,
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 10,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.cache_write.input_tokens": 0,
        "gen_ai.usage.cost.amount": cost,
        "watcher.cost.input_usd": cost,
        "watcher.pricing.version": "2026-11-25",
        "watcher.request_type": "extraction",
        "watcher.cost.estimated": False,
    }
    out = []
    for key, value in values.items():
        kind = (
            "boolValue"
            if isinstance(value, bool)
            else "stringValue"
            if isinstance(value, str)
            else ("doubleValue" if isinstance(value, float) else "intValue")
        )
        out.append({"key": key, "value": {kind: str(value) if kind == "intValue" else value}})
    return out


def _export_body(cost: float, response_id: str, end: datetime | None = None) -> bytes:
    """A protobuf export of one watcher cost span, encoded by the official OTLP encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attributes = {item["key"]: next(iter(item["value"].values())) for item in _json_attributes(cost, response_id)}  # type: ignore[attr-defined]
    attributes = {k: int(v) if k.endswith("_tokens") else v for k, v in attributes.items()}
    end_ns = int((end or datetime(2026, 11, 25, 11, 0, tzinfo=UTC)).timestamp() * 1e9)
    provider.get_tracer("t").start_span("chat claude-haiku-4-5", attributes=attributes, start_time=end_ns - 1000).end(
        end_time=end_ns
    )
    return encode_spans(exporter.get_finished_spans()).SerializeToString()  # type: ignore[no-any-return]


def test_metrics_count_each_billed_response_once_and_show_budgets(start: Start) -> None:
    """/metrics has spend, requests and tokens by label (retries not double-counted) and the budget gauges."""
    daemon = start()
    body = _export_body(cost=0.0085, response_id="m1")
    post(daemon, body)
    post(daemon, body)
    text = metrics_text(daemon.address)
    labels = 'model="claude-haiku-4-5",request_type="extraction",service="unknown_service:python3"'
    assert f"watcher_requests_total{{{labels}}} 1.0" in text
    assert f"watcher_cost_usd_total{{{labels}}} 0.0085" in text
    assert f'watcher_tokens_total{{{labels},type="input"}} 100.0' in text
    assert 'watcher_budget_used_ratio{budget="extraction-daily"} 0.85' in text
    assert 'watcher_killswitch_engaged{budget="extraction-daily"} 0.0' in text
    assert "watcher_spans_duplicate_total 1.0" in text


def test_metrics_and_report_show_cache_and_batch_savings_and_estimated_spend(
    start: Start,
    fake_api: FakeAnthropic,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the hook: cache reads save, cache writes cost a premium, batches save their discount, and an
    unknown model's spend is counted as estimated, each under its own labels; `watcher report` sums the savings."""
    from watcher.cli import main

    daemon = start()
    cached = {"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 10_000}
    fake_api.reply(
        FakeReply(usage={**cached, "cache_creation_input_tokens": 1000}),
        FakeReply(model="claude-nova-1", usage={"input_tokens": 1000, "output_tokens": 0}),
        FakeReply(usage={"input_tokens": 1000, "output_tokens": 100}),
    )
    clock = daemon.server.clock
    settings = watcher.Settings(endpoint=daemon.address, killswitch_poll_s=0)
    watcher.instrument(settings, clock_ns=lambda: int(clock().timestamp() * 1e9))
    try:
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
            with watcher.request_type("chat"):
                client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
                client.messages.create(model="claude-nova-1", max_tokens=8, messages=HI)
            params = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": HI}
            with watcher.request_type("nightly"):
                batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])  # type: ignore[list-item]
            list(client.messages.batches.results(batch.id))
        assert watcher.flush()
    finally:
        watcher.uninstrument()
    text = metrics_text(daemon.address)
    chat = {"service": "unknown_service:python3", "request_type": "chat", "model": "claude-haiku-4-5"}
    nightly = {**chat, "request_type": "nightly"}
    nova = {**chat, "model": "claude-nova-1"}
    # haiku 4.5: input $1/MTok, cache read $0.10, 5m write $1.25; output $5; batch half of everything.
    assert sample(text, "watcher_cache_read_savings_usd_total", **chat) == pytest.approx(10_000 * 0.9e-6)
    assert sample(text, "watcher_cache_write_premium_usd_total", **chat) == pytest.approx(1000 * 0.25e-6)
    assert sample(text, "watcher_batch_cost_usd_total", **nightly) == pytest.approx(750e-6)
    assert sample(text, "watcher_batch_savings_usd_total", **nightly) == pytest.approx(750e-6)
    assert sample(text, "watcher_batch_cost_usd_total", **chat) == 0
    estimated = sample(text, "watcher_estimated_cost_usd_total", **nova)
    assert estimated == sample(text, "watcher_cost_usd_total", **nova) > 0
    assert sample(text, "watcher_estimated_cost_usd_total", **chat) == 0
    monkeypatch.setenv("WATCHER_ENDPOINT", daemon.address)  # the report asks the daemon that kept the books
    assert main(["report", "--since", "2026-11-25", "--until", "2026-11-26", "--by", "request_type"]) == 0
    out = capsys.readouterr().out
    assert "caching saved 0.0088 USD net (0.0090 on cache reads, 0.0002 paid above input rates" in out, out
    assert "batching saved 0.0008 USD" in out, out


def test_metrics_show_each_budgets_thresholds_projection_and_period_end(start: Start) -> None:
    """Budget gauges carry the alert and kill ratios, the projected spend and when the period ends."""
    clock = Clock()  # 2026-11-25 12:00 UTC: half the day gone
    daemon = start(clock=clock)
    post(daemon, _export_body(cost=0.0025, response_id="p1", end=clock.now - timedelta(hours=1)))
    text = metrics_text(daemon.address)
    name = {"budget": "extraction-daily"}
    assert sample(text, "watcher_budget_alert_ratio", **name) == 0.8
    assert sample(text, "watcher_budget_kill_ratio", **name) == 1.2
    assert sample(text, "watcher_budget_projected_usd", **name) == pytest.approx(0.005)
    assert (
        sample(text, "watcher_budget_period_end_timestamp_seconds", **name)
        == datetime(2026, 11, 26, tzinfo=UTC).timestamp()
    )


def test_status_and_report_commands_show_budgets_and_the_cost_breakdown(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`watcher status` tabulates budgets from the daemon; `watcher report` reads the ledger by request type."""
    from watcher.cli import main

    clock = Clock()
    daemon = start(clock=clock)
    moment = clock.now - timedelta(minutes=5)
    post(daemon, _export_body(cost=0.0085, response_id="r1", end=moment))
    monkeypatch.setenv("WATCHER_ENDPOINT", daemon.address)
    monkeypatch.setenv("WATCHER_STATE_DIR", str(tmp_path))
    assert main(["status"]) == 0
    assert re.search(r"extraction-daily\s+0\.01\s+0\.01\s+85%\s+0\.0000\s+alert", capsys.readouterr().out)
    assert main(["report", "--since", "1d", "--until", clock.now.isoformat(), "--by", "request_type"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^extraction\s+0\.0085\s+1\s", out, re.MULTILINE), out


def test_running_budget_totals_match_the_ledger_after_duplicates_and_resyncs(start: Start) -> None:
    """Spend kept incrementally per batch equals the ledger's own sum, before and after a resync."""
    clock = Clock()
    daemon = start(clock=clock)
    for response_id, cost in (("a", 0.001), ("b", 0.002), ("a", 0.001), ("c", 0.0005)):
        post(daemon, _export_body(cost=cost, response_id=response_id))
    assert budget(daemon)["spend_usd"] == pytest.approx(0.0035)
    clock.now += timedelta(seconds=61)
    daemon.books.evaluate()
    assert budget(daemon)["spend_usd"] == pytest.approx(0.0035)


def test_otlp_grpc_exports_from_the_real_exporter_are_ingested(start: Start) -> None:
    """A Collector-style OTLP/gRPC exporter delivers to the daemon's gRPC port, deduplicated like HTTP."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    daemon = start()
    assert daemon.grpc_address is not None
    host, port = daemon.grpc_address
    exporter = GrpcExporter(endpoint=f"{host}:{port}", insecure=True)
    spans = _spans_of(ExportTraceServiceRequest.FromString(_export_body(cost=0.002, response_id="grpc_1")))
    assert exporter.export(spans).name == "SUCCESS"
    assert exporter.export(spans).name == "SUCCESS"
    exporter.shutdown()
    assert budget(daemon)["spend_usd"] == pytest.approx(0.002)


def _spans_of(request: object) -> list[object]:
    """The SDK spans behind an export body, rebuilt by making them again (the exporter takes SDK spans)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for resource_spans in request.resource_spans:  # type: ignore[attr-defined]
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}
                provider.get_tracer("t").start_span(
                    span.name, attributes=attributes, start_time=span.start_time_unix_nano
                ).end(end_time=span.end_time_unix_nano)
    return list(exporter.get_finished_spans())


_VALID_BODY = _export_body(cost=0.001, response_id="fuzz")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=2048),
        st.integers(0, 400).map(lambda cut: _VALID_BODY[:cut]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
            max_leaves=10,
        ).map(lambda doc: json.dumps({"resourceSpans": doc}).encode()),
    ),
    content_type=st.sampled_from(["application/x-protobuf", "application/json", "text/plain"]),
    encoding=st.sampled_from(["", "gzip", "deflate", "br"]),
)
def test_fuzzed_bodies_get_an_answer_below_500_and_the_daemon_keeps_serving(
    start: Start, body: bytes, content_type: str, encoding: str
) -> None:
    """Whatever arrives (garbage, truncated protobuf, odd JSON, bad encodings) is answered 200 or 4xx, never 5xx."""
    daemon = _fuzz_daemon(start)
    headers = {"content-encoding": encoding} if encoding else {}
    status, _ = post(daemon, body, content_type=content_type, **headers)
    assert status in (200, 400, 413, 415), status
    assert get(daemon, "/healthz")["status"] == "ok"


_FUZZ: dict[int, Running] = {}


def _fuzz_daemon(start: Start) -> Running:
    """One daemon for all examples of the fuzz test (keyed by the fixture instance)."""
    if id(start) not in _FUZZ:
        _FUZZ.clear()
        _FUZZ[id(start)] = start()
    return _FUZZ[id(start)]
