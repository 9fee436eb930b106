"""`watcher traffic`: real SDK calls reach the daemon as spend of every kind, paced, kill switches obeyed."""

from __future__ import annotations

import io
import json
import urllib.request
from collections.abc import Iterator
from contextlib import redirect_stdout

import pytest
from _support import metrics_text
from prometheus_client.parser import text_string_to_metric_families

from watcher import Settings
from watcher._demo import ROTATION, run_traffic
from watcher.cli import main
from watcher.testing import DaemonProcess, OTLPReceiver

EXTRACTION_BUDGET = """
[[budgets]]
name = "extraction"
limit_usd = 100
period = "day"
scope = { request_type = "extraction" }
"""


def no_sleep(seconds: float) -> None:
    return None


def metrics(daemon: DaemonProcess) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The daemon's /metrics, as sample name to (labels, value) pairs."""
    text = metrics_text(daemon.url)
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def spent(samples: list[tuple[dict[str, str], float]], label: str) -> set[str]:
    return {labels[label] for labels, value in samples if value > 0}


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as otlp:
        yield otlp


def test_one_rotation_books_every_kind_of_spend_in_the_daemon() -> None:
    """Ten calls reach the daemon as 13 spans over four request types and services, cached, batched and estimated."""
    with DaemonProcess() as daemon:
        stats = run_traffic(count=len(ROTATION), settings=Settings(endpoint=daemon.url), seed=3, sleep=no_sleep)
        found = metrics(daemon)
    assert (stats.calls, stats.refused) == (10, 0)
    cost = found["watcher_cost_usd_total"]
    assert spent(cost, "request_type") == {"extraction", "summarise", "agent", "backfill", "experiment"}
    assert spent(cost, "service") == {"checkout-api", "support-bot", "research-agent", "nightly-etl"}
    assert sum(value for _, value in found["watcher_requests_total"]) == 13  # a batch of 4 is 4 responses
    assert spent(found["watcher_tokens_total"], "type") == {"input", "output", "cache_read", "cache_write"}
    assert spent(found["watcher_estimated_cost_usd_total"], "model") == {"claude-nova-1"}
    assert spent(found["watcher_batch_cost_usd_total"], "request_type") == {"backfill"}


def test_refused_calls_are_counted_and_the_traffic_goes_on(receiver: OTLPReceiver) -> None:
    """With the extraction kill switch engaged, the four extraction calls are refused and the six others are made."""
    with DaemonProcess(EXTRACTION_BUDGET) as daemon:
        engage = urllib.request.Request(f"{daemon.url}/v1/killswitch/extraction/engage", data=b"", method="POST")
        with urllib.request.urlopen(engage, timeout=10) as reply:
            assert json.loads(reply.read())["engaged"] is True
        # fail_mode=closed makes the hook poll once before the first call, so no call races the first poll.
        settings = Settings(endpoint=daemon.url, killswitch_poll_s=0.2, fail_mode="closed")
        stats = run_traffic(count=len(ROTATION), settings=settings, sleep=no_sleep)
        found = metrics(daemon)
    assert (stats.calls, stats.refused, stats.by_request_type["extraction"]) == (10, 4, 4)
    cost = found["watcher_cost_usd_total"]
    assert spent(cost, "request_type") == {"summarise", "agent", "backfill", "experiment"}


def test_spans_go_to_the_otlp_endpoint_and_kill_switches_come_from_the_daemon(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT (a Collector) gets the spans, one resource per service; the daemon only the polls."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    with DaemonProcess(EXTRACTION_BUDGET) as daemon:
        engage = urllib.request.Request(f"{daemon.url}/v1/killswitch/extraction/engage", data=b"", method="POST")
        urllib.request.urlopen(engage, timeout=10).close()
        settings = Settings(endpoint=daemon.url, killswitch_poll_s=0.2, fail_mode="closed")
        stats = run_traffic(count=len(ROTATION), settings=settings, sleep=no_sleep)
        received_by_daemon = metrics(daemon)["watcher_spans_received_total"]
    spans = receiver.wait_for(9)  # six calls made, one of them a batch of four
    assert stats.refused == 4 and len(spans) == 9
    assert {span.resource["service.name"] for span in spans} == {"support-bot", "research-agent", "nightly-etl"}
    by_service = {(s.resource["service.name"], s.attributes["watcher.request_type"]) for s in spans}
    assert by_service == {
        ("support-bot", "summarise"),
        ("research-agent", "agent"),
        ("research-agent", "experiment"),
        ("nightly-etl", "backfill"),
    }
    assert received_by_daemon == [({}, 0.0)]


def test_calls_are_paced_at_the_requested_rate(receiver: OTLPReceiver) -> None:
    """At 4 calls a second, five calls start 0.25 s apart on the injected clock, whatever the calls themselves take."""
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    settings = Settings(endpoint=receiver.endpoint, killswitch_poll_s=0)
    run_traffic(rate=4, count=5, settings=settings, clock=lambda: now[0], sleep=sleep)
    assert waits == pytest.approx([0.0, 0.25, 0.25, 0.25, 0.25])
    assert now[0] == pytest.approx(101.0)


def test_the_same_seed_gives_the_same_usage(receiver: OTLPReceiver) -> None:
    """Token counts are jittered by up to 30%, and repeatable with a seed."""
    settings = Settings(endpoint=receiver.endpoint, killswitch_poll_s=0)
    runs = []
    for _ in range(2):
        run_traffic(count=2, settings=settings, seed=11, sleep=no_sleep)
        spans = receiver.wait_for(2)
        runs.append(
            sorted((s.attributes["watcher.request_type"], s.attributes["gen_ai.usage.input_tokens"]) for s in spans)
        )
        receiver.spans.clear()
    assert runs[0] == runs[1]
    extraction = dict(runs[0])["extraction"]
    planned = ROTATION[0].usage["input_tokens"]
    assert extraction != planned and abs(extraction - planned) <= 0.3 * planned


def test_the_traffic_command_makes_the_calls_asked_for(receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """`watcher traffic --count 3` makes three calls, sends their spans to WATCHER_ENDPOINT and says what it did."""
    monkeypatch.setenv("WATCHER_ENDPOINT", receiver.endpoint)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["traffic", "--count", "3", "--rate", "1000"]) == 0
    assert out.getvalue() == "3 calls, 0 refused by a kill switch\n"
    assert len(receiver.wait_for(3)) == 3


def test_the_traffic_command_refuses_a_rate_that_is_not_positive(capsys: pytest.CaptureFixture[str]) -> None:
    """`--rate 0` is an error with exit code 2, not a division by zero or an endless burst."""
    assert main(["traffic", "--rate", "0", "--count", "1"]) == 2
    assert "rate must be above 0" in capsys.readouterr().err
