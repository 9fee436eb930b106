"""Spans the daemon cannot take are kept on disk and re-sent once it answers: by this process, or the next one."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from _support import wait_for
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_pipeline import app_env, run_app

import watcher
from watcher._instrument._delivery import DROPPED_SPANS_HEADER, Delivery, Drops
from watcher._instrument._otlp import FastOTLPSpanExporter, encode_spans
from watcher._instrument._spool import Spool, endpoint_dir
from watcher._instrument._tracer import TracerChoice
from watcher.testing import DaemonProcess, FakeAnthropic, OTLPReceiver

HI = [{"role": "user", "content": "hi"}]
JOB = """
import watcher.auto, anthropic
client = anthropic.Anthropic(base_url=BASE_URL, api_key="k")
for _ in range(CALLS):
    print(client.messages.create(model="claude-haiku-4-5", max_tokens=8,
                                 messages=[{"role": "user", "content": "hi"}]).id)
"""
IDLE_APP = "import sys, watcher.auto\nsys.stdin.read()\n"  # runs until its standard input is closed


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    state = tmp_path / "daemon"
    state.mkdir()
    with DaemonProcess(state_dir=state) as running:
        yield running


def ledger_ids(daemon: DaemonProcess) -> set[str]:
    with sqlite3.connect(daemon.state_dir / "ledger.db") as db:
        return {row[0] for row in db.execute("SELECT response_id FROM entries")}


def kept(spool: Path) -> list[Path]:
    return sorted(spool.rglob("*.otlp"))


def export_request(*names: str) -> bytes:
    """An encoded OTLP export request of one span per name, as the hook's exporter makes them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for name in names:
        provider.get_tracer("watcher").start_span(name).end()
    return encode_spans(exporter.get_finished_spans())


def down_port() -> int:
    """A loopback port where an OTLP receiver listened a moment ago and nothing listens now."""
    with OTLPReceiver() as receiver:
        return int(receiver.endpoint.rsplit(":", 1)[1])


def delivery_to(port: int, spool: Spool) -> Delivery:
    exporter = FastOTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
    return Delivery(exporter.post_once, spool, retry_s=(0.05, 0.2), idle_s=0.05)


def test_calls_made_while_the_daemon_is_down_reach_its_ledger_once_it_is_back(
    daemon: DaemonProcess, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    """The exporter spools what a killed daemon cannot take, and re-sends it when the daemon restarts."""
    watcher.instrument(watcher.Settings(endpoint=daemon.url, spool_dir=tmp_path / "spool", export_delay_ms=50))
    try:
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
            first = client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI).id
            assert watcher.flush()
            wait_for(lambda: first in ledger_ids(daemon), "the first span in the ledger")
            daemon.kill()
            made = {client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI).id for _ in range(20)}
            assert watcher.flush()
            assert kept(tmp_path / "spool"), "nothing was spooled"
            daemon.start()
            wait_for(lambda: made <= ledger_ids(daemon), "the spooled spans in the ledger")
            wait_for(lambda: not kept(tmp_path / "spool"), "the spool to empty")
    finally:
        watcher.uninstrument()
    assert ledger_ids(daemon) == {first} | made


def test_a_job_that_exits_during_an_outage_loses_nothing_the_next_process_sends_it(
    daemon: DaemonProcess, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    """A short job that ends while the daemon is down leaves its spans in the spool; the next process re-sends them."""
    env = {"WATCHER_ENDPOINT": daemon.url, "WATCHER_SPOOL_DIR": str(tmp_path / "spool")}
    daemon.kill()
    done = run_app(JOB.replace("CALLS", "5"), fake_api, **env)
    made = set(done.stdout.split())
    assert len(made) == 5 and kept(tmp_path / "spool")
    daemon.start()
    with subprocess.Popen([sys.executable, "-c", IDLE_APP], stdin=subprocess.PIPE, env=app_env(**env)) as next_app:
        try:
            wait_for(lambda: made <= ledger_ids(daemon), "the exited job's spans in the ledger")
        finally:
            assert next_app.stdin is not None
            next_app.stdin.close()
    assert ledger_ids(daemon) == made


def test_processes_that_share_a_spool_re_send_each_kept_span_exactly_once(
    fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    """Three processes started at once on one spool replay it between them without sending anything twice."""
    port = down_port()
    env = {
        "WATCHER_ENDPOINT": f"http://127.0.0.1:{port}",
        "WATCHER_SPOOL_DIR": str(tmp_path / "spool"),
        "WATCHER_EXPORT_DELAY_MS": "1",
    }
    made = set(run_app(JOB.replace("CALLS", "40"), fake_api, **env).stdout.split())
    assert len(kept(tmp_path / "spool")) > 1
    with OTLPReceiver(port=port) as receiver:
        apps = [
            subprocess.Popen([sys.executable, "-c", IDLE_APP], stdin=subprocess.PIPE, env=app_env(**env))
            for _ in range(3)
        ]
        try:
            wait_for(lambda: not kept(tmp_path / "spool"), "the spool to empty")
        finally:
            for app in apps:
                assert app.stdin is not None
                app.stdin.close()
                app.wait(timeout=30)
        ids = [span.attributes["gen_ai.response.id"] for span in receiver.spans]
    assert sorted(ids) == sorted(made)


def test_kept_requests_are_re_sent_oldest_first(tmp_path: Path) -> None:
    """Requests spooled during an outage reach the daemon in the order they were made."""
    port = down_port()
    delivery = delivery_to(port, Spool(tmp_path, max_bytes=1 << 20))
    for name in ("first", "second", "third"):
        assert delivery.deliver(export_request(name), 1)
    assert len(kept(tmp_path)) == 3
    with OTLPReceiver(port=port) as receiver:
        delivery.start()
        try:
            names = [span.name for span in receiver.wait_for(3)]
        finally:
            delivery.stop()
    assert names == ["first", "second", "third"]


def test_spans_a_full_spool_cannot_keep_are_reported_with_the_next_export_the_daemon_accepts(tmp_path: Path) -> None:
    """Past WATCHER_SPOOL_MAX_MB spans are dropped and counted; the next accepted export carries the count, once."""
    port = down_port()
    first = export_request("kept")
    delivery = delivery_to(port, Spool(tmp_path, max_bytes=len(first)))
    assert delivery.deliver(first, 1)
    assert delivery.deliver(export_request("dropped", "dropped too"), 2)
    with OTLPReceiver(port=port) as receiver:
        delivery.start()
        try:
            receiver.wait_for(1)
            wait_for(lambda: not kept(tmp_path), "the spool to empty")
            assert delivery.deliver(export_request("after"), 1)
            receiver.wait_for(2)
        finally:
            delivery.stop()
    header = DROPPED_SPANS_HEADER.lower()
    assert [span.name for span in receiver.spans] == ["kept", "after"]
    assert [headers.get(header) for headers in receiver.headers] == ["2", None]


def test_the_drop_warning_gives_the_count_and_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """One WARNING per minute at most, each with the spans dropped since the last one."""
    now = [0.0]
    drops = Drops("the spool", warn_every_s=60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="watcher")
    drops.add(3)
    drops.add(4)
    now[0] = 61.0
    drops.add(5)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert "dropped 3 spans" in warnings[0] and "dropped 9 spans" in warnings[1]
    assert drops.take() == 12 and drops.take() == 0


def test_drops_handed_to_a_request_that_fails_are_reported_by_a_later_one() -> None:
    """The count goes to one request at a time and comes back when that request is not accepted."""
    drops = Drops("the spool")
    drops.add(7)
    in_flight = drops.take()
    assert (in_flight, drops.take()) == (7, 0)  # a second request meanwhile reports nothing twice
    drops.add(1)
    drops.give_back(in_flight)
    assert drops.take() == 8


def test_a_request_the_daemon_refuses_for_good_is_not_kept(daemon: DaemonProcess, tmp_path: Path) -> None:
    """A body the daemon answers 400 to would be refused forever: it is dropped, not spooled."""
    exporter = FastOTLPSpanExporter(endpoint=f"{daemon.url}/v1/traces")
    delivery = Delivery(exporter.post_once, Spool(tmp_path, max_bytes=1 << 20))
    assert not delivery.deliver(b"\xff not protobuf", 1)
    assert delivery.deliver(export_request("fine"), 1)
    assert kept(tmp_path) == []


def test_only_one_process_at_a_time_replays_a_spool(tmp_path: Path) -> None:
    """The replay turn is a lock on the directory: a second holder is refused until the first lets go."""
    one, other = Spool(tmp_path, max_bytes=1024), Spool(tmp_path, max_bytes=1024)
    with one.turn() as first, other.turn() as second:
        assert first and not second
    with other.turn() as later:
        assert later


def test_each_endpoint_has_its_own_spool_directory(tmp_path: Path) -> None:
    """Spans are only re-sent to the endpoint they were meant for."""
    one = endpoint_dir(tmp_path, "http://127.0.0.1:4318/v1/traces")
    other = endpoint_dir(tmp_path, "http://127.0.0.1:4319/v1/traces")
    assert one != other and one.parent == tmp_path
    assert one.name.startswith("127.0.0.1_4318_v1_traces-")


def test_an_empty_spool_dir_turns_the_spool_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHER_SPOOL_DIR= (empty) means no spool: the exporter keeps its own retries, as without watcher's spool."""
    monkeypatch.setenv("WATCHER_SPOOL_DIR", "")
    assert watcher.Settings().spool_dir is None
    choice = TracerChoice(watcher.Settings())
    try:
        assert choice._delivery is None
    finally:
        choice.shutdown()


def test_the_default_spool_is_per_user_under_the_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """By default spans are kept under $XDG_STATE_HOME/watcher/spool."""
    monkeypatch.delenv("WATCHER_SPOOL_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert watcher.Settings().spool_dir == tmp_path / "watcher" / "spool"
