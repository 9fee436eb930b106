"""`/metrics` speaks the format the scraper asks for: OpenMetrics with created timestamps, or the text format."""

from __future__ import annotations

import gzip
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _support import sample
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

import watcher
from watcher.daemon import Running, build

STARTED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
# What Prometheus 2.x sends by default: OpenMetrics first, the text format as a fallback.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


class Silent:
    """A notifier that delivers nothing and reports success."""

    def send(self, title: str, body: str) -> bool:
        return True


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Running]:
    """A daemon built in-process with a fixed clock, serving on a free loopback port."""
    settings = watcher.Settings(listen="127.0.0.1:0", grpc_listen="127.0.0.1:0", state_dir=tmp_path)
    running = build(settings, budgets=[], clock=lambda: STARTED, notifier=Silent()).start(tick_s=3600)
    yield running
    running.stop()


def scrape(daemon: Running, **headers: str) -> tuple[dict[str, str], bytes]:
    """(headers, body) of `GET /metrics` sent with `headers`, the body as sent (not decompressed)."""
    request = urllib.request.Request(f"{daemon.address}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return {name.lower(): value for name, value in reply.headers.items()}, reply.read()


def test_an_openmetrics_scraper_gets_openmetrics_with_the_daemons_start_as_created(daemon: Running) -> None:
    """Accept as Prometheus sends it selects OpenMetrics 1.0.0, whose counters carry `_created` = daemon start."""
    headers, body = scrape(daemon, accept=PROMETHEUS_ACCEPT)
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0; charset=utf-8")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = list(openmetrics_families(text))
    assert sample_of(families, "watcher_spans_received_created") == STARTED.timestamp()
    assert sample_of(families, "watcher_spans_rejected_created", reason="malformed") == STARTED.timestamp()


def sample_of(families: list[object], name: str, **labels: str) -> float:
    for family in families:
        for found in family.samples:  # type: ignore[attr-defined]
            if found.name == name and found.labels == labels:
                return float(found.value)
    raise KeyError(f"{name}{labels}")


@pytest.mark.parametrize("accept", ["", "text/plain;version=0.0.4", "application/json", "*/*"])
def test_any_other_scraper_gets_the_text_format_without_created_series(daemon: Running, accept: str) -> None:
    """Without OpenMetrics in Accept the answer is text format 0.0.4, and no `_created` series are added to it."""
    headers, body = scrape(daemon, accept=accept)
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    assert sample(text, "watcher_spans_received_total") == 0
    assert "_created" not in text


def test_the_body_is_gzipped_when_the_scraper_accepts_gzip(daemon: Running) -> None:
    """`Accept-Encoding: gzip` gets a gzipped body marked `Content-Encoding: gzip`; otherwise it is sent as is."""
    headers, body = scrape(daemon, **{"accept": PROMETHEUS_ACCEPT, "accept-encoding": "gzip"})
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body).decode().endswith("# EOF\n")
    plain_headers, plain = scrape(daemon, accept=PROMETHEUS_ACCEPT)
    assert "content-encoding" not in plain_headers
    assert plain.decode().endswith("# EOF\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process_* metrics are read from /proc")
def test_the_daemons_process_metrics_are_exported_in_both_formats(daemon: Running) -> None:
    """`process_*` (memory, CPU, start time) and `python_info` are on `/metrics` next to watcher's own."""
    _, text = scrape(daemon)
    assert sample(text.decode(), "process_resident_memory_bytes") > 0
    assert sample(text.decode(), "process_start_time_seconds") > 0
    _, body = scrape(daemon, accept=PROMETHEUS_ACCEPT)
    families = list(openmetrics_families(body.decode()))
    assert sample_of(families, "process_resident_memory_bytes") > 0
    assert any(f.name == "python_info" for f in families)  # type: ignore[attr-defined]


def test_the_answer_says_it_varies_with_accept_and_accept_encoding(daemon: Running) -> None:
    """`Vary: Accept, Accept-Encoding` is sent, so a cache between scraper and daemon keeps the formats apart."""
    headers, _ = scrape(daemon)
    assert headers["vary"] == "Accept, Accept-Encoding"
