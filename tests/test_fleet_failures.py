"""A fleet on PostgreSQL when things go wrong: a daemon killed under load loses nothing it acknowledged, a daemon
older than its database refuses to start, and an outage of the database is answered retry-later (the hook spools)
and ends without a restart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import psycopg
import pytest
from _postgres import fresh_database
from _proxy import Proxy
from _support import http, wait_for

import watcher
from watcher.budgets import parse_budgets
from watcher.daemon import Running, build, open_state_store
from watcher.ledger import Entry, open_ledger
from watcher.testing import DaemonProcess, FakeAnthropic

BUDGETS = """
[[budgets]]
name = "daily"
limit_usd = 1000
period = "day"
"""  # far from its lines: every export evaluates it, reading the state store as well as the ledger
HI = [{"role": "user", "content": "hi"}]
PROTOBUF = {"content-type": "application/x-protobuf"}


def export_body(ids: list[str], at: datetime) -> bytes:
    """One OTLP/protobuf export of a watcher cost span per response id, ended a minute before `at`."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    end_ns = int(at.timestamp() * 1e9) - 60_000_000_000
    for response_id in ids:
        attributes = {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-haiku-4-5",
            "gen_ai.response.id": response_id,
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.usage.cost.amount": 0.01,
            "watcher.cost.input_usd": 0.01,
            "watcher.pricing.version": "2026-11-25",
            "watcher.request_type": "extraction",
        }
        span = provider.get_tracer("t").start_span("chat claude-haiku-4-5", attributes=attributes, start_time=end_ns)
        span.end(end_time=end_ns + 1000)
    return encode_spans(exporter.get_finished_spans()).SerializeToString()  # type: ignore[no-any-return]


def post(url: str, body: bytes, timeout_s: float = 9.0) -> tuple[int, str | None]:
    """(status, Retry-After header) of an OTLP export to `url`; status 0 when no answer came (refused, reset, or
    none within `timeout_s`: just under the 10 s an OTLP exporter waits by default, so an answer that comes later
    counts as none)."""
    request = urllib.request.Request(f"{url}/v1/traces", data=body, headers=PROTOBUF, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            reply.read()
            return reply.status, reply.headers.get("retry-after")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("retry-after")
    except OSError:
        return 0, None


def stored_ids(database: str) -> dict[str, int]:
    """Each response id in the ledger's entries, with how many entries carry it."""
    with psycopg.connect(database, autocommit=True) as db:
        rows = db.execute("SELECT response_id, COUNT(*) FROM ledger_entries GROUP BY response_id").fetchall()
    return {response_id: int(count) for response_id, count in rows}


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def assert_each_stored_once(database: str, must_hold: set[str]) -> dict[str, int]:
    """Every id of `must_hold` is in the ledger, each response once, and the hourly rollups count each entry once
    (an export stored by one daemon and resent to another added nothing); returns the ids stored."""
    stored = stored_ids(database)
    missing = sorted(must_hold - stored.keys())
    assert len(missing) == 0, f"{len(missing)} acknowledged responses are not in the ledger, e.g. {missing[:3]}"
    assert set(stored.values()) == {1}
    with psycopg.connect(database, autocommit=True) as db:
        (requests,) = db.execute("SELECT COALESCE(SUM(requests), 0) FROM ledger_hourly").fetchone() or (0,)
    assert int(requests) == len(stored)
    return stored


# --- a daemon killed under load ------------------------------------------------------------------------------


@pytest.fixture
def two_daemons(database: str, tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    """Two `watcher serve` processes on one database; whatever is still running at the end is stopped."""
    daemons = []
    try:
        for index in range(2):
            state = tmp_path / f"d{index}"
            state.mkdir()
            daemons.append(DaemonProcess(f"database_url = {json.dumps(database)}\n", state).start())
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()


def test_a_daemon_killed_under_load_loses_no_export_it_acknowledged(
    two_daemons: list[DaemonProcess], database: str
) -> None:
    """Four exporters alternate between two daemons, each failed send retried on the other; one daemon is
    SIGKILLed mid-load. Every export either daemon answered 200 is in the ledger, and nothing is counted twice."""
    daemons = two_daemons
    acknowledged: list[str] = []
    sent: set[str] = set()
    resent = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def exporter(index: int) -> None:
        batch = 0
        while not stop.is_set():
            ids = [f"msg_kill_{index}_{batch:04d}_{n}" for n in range(5)]
            with lock:
                sent.update(ids)
            body = export_body(ids, datetime.now(UTC))
            turn = index + batch
            while post(daemons[turn % 2].url, body)[0] != 200:  # refused, reset or 5xx: resend to the other
                turn += 1
                with lock:
                    resent[0] += 1
            with lock:
                acknowledged.extend(ids)
            batch += 1

    threads = [threading.Thread(target=exporter, args=(n,), name=f"test-exporter-{n}") for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(acknowledged) >= 200, "exports taken by both daemons")
        daemons[0].kill()
        killed_at = len(acknowledged)
        wait_for(lambda: len(acknowledged) >= killed_at + 200, "exports taken by the survivor")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert resent[0] > 0  # the kill was felt: sends failed and went to the survivor
    stored = assert_each_stored_once(database, set(acknowledged))
    assert stored.keys() <= sent
    status, body = http(f"{daemons[1].url}/healthz")
    assert status == 200, body


# --- a daemon older than its database -----------------------------------------------------------------------


def _state_newer(database: str) -> tuple[int, int]:
    from watcher.daemon._schema_postgres import VERSION

    with psycopg.connect(database, autocommit=True) as db:
        db.execute("UPDATE state_schema_version SET version = %s", (VERSION + 1,))
    return VERSION + 1, VERSION


def _ledger_newer(database: str) -> tuple[int, int]:
    from watcher.ledger._postgres import SCHEMA_VERSION

    with psycopg.connect(database, autocommit=True) as db:
        db.execute("INSERT INTO ledger_schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    return SCHEMA_VERSION + 1, SCHEMA_VERSION


def database_contents(database: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of the database and all its rows, sorted: to show a refused start changed nothing."""
    with psycopg.connect(database, autocommit=True) as db:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
            )
        ]
        return {table: sorted(map(repr, db.execute(f'SELECT * FROM "{table}"'))) for table in tables}  # type: ignore[misc]


@pytest.mark.parametrize("newer", [_state_newer, _ledger_newer], ids=["state", "ledger"])
def test_a_daemon_on_a_database_a_newer_watcher_migrated_refuses_to_start_in_one_line(
    newer: Callable[[str], tuple[int, int]], database: str, tmp_path: Path
) -> None:
    """`watcher serve` on a schema newer than its own exits 2 with one line naming both versions (no traceback),
    and leaves the database as it found it."""
    ledger = open_ledger(database)
    ledger.append([Entry.of("msg_before", datetime.now(UTC), "api", "prod", "chat", "claude-haiku-4-5")])
    ledger.close()
    open_state_store(watcher.Settings(state_dir=tmp_path / "setup", database_url=database)).close()
    found, ours = newer(database)
    before = database_contents(database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    env |= {
        "WATCHER_DATABASE_URL": database,
        "WATCHER_STATE_DIR": str(tmp_path / "state"),
        "WATCHER_LISTEN": "127.0.0.1:0",
        "XDG_STATE_HOME": str(tmp_path / "xdg"),
    }
    command = [sys.executable, "-m", "watcher.cli", "serve"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(rf"version {found}\b.*\b{ours}\b", done.stderr), done.stderr
    assert database_contents(database) == before


# --- the database goes away and comes back -----------------------------------------------------------------


@dataclass
class Stream:
    """One exporter sending batch after batch of new response ids to a daemon, each resent until answered 200."""

    target: str
    answers: list[tuple[int, str | None]] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def run(self) -> None:
        batch = 0
        while not self.stop.is_set():
            ids = [f"msg_stream_{batch:05d}_{n}" for n in range(3)]
            while True:  # a collector's retry: the same batch until it is taken
                status, retry_after = post(self.target, export_body(ids, datetime.now(UTC)))
                self.answers.append((status, retry_after))
                if status == 200:
                    self.acknowledged.extend(ids)
                    break
                if self.stop.wait(0.05):  # the exporter's back-off, shortened
                    return
            batch += 1

    def __enter__(self) -> Stream:
        self.thread = threading.Thread(target=self.run, name="test-stream")
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join()

    def answered_since(self, start: int, wanted: Callable[[tuple[int, str | None]], bool]) -> bool:
        return any(wanted(answer) for answer in self.answers[start:])


def health(address: str) -> tuple[int, dict[str, Any]]:
    status, body = http(f"{address}/healthz")
    return status, json.loads(body)


def degraded(address: str) -> bool:
    status, body = health(address)
    return status == 503 and body.get("status") == "degraded"


def spooled(spool: Path) -> list[Path]:
    return sorted(spool.rglob("*.otlp"))


@pytest.fixture
def behind_proxy(database: str, tmp_path: Path) -> Iterator[tuple[Running, Proxy]]:
    """A daemon whose only way to the database is through a proxy the test can cut."""
    with Proxy() as proxy:
        settings = watcher.Settings(listen="127.0.0.1:0", state_dir=tmp_path / "d", database_url=proxy.url(database))
        running = build(settings, budgets=parse_budgets(BUDGETS)).start(tick_s=3600)
        try:
            yield running, proxy
        finally:
            running.stop()


def test_a_database_outage_is_answered_retry_later_the_hook_spools_and_the_daemon_recovers_by_itself(
    behind_proxy: tuple[Running, Proxy], database: str, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    """With the database cut off mid-stream, exports are answered 503 with Retry-After, /healthz says degraded and
    the hook keeps its spans in the spool; once it is back, the same daemon takes exports again, reports ok, and
    every span (streamed or spooled) is in the ledger exactly once."""
    running, proxy = behind_proxy
    spool = tmp_path / "spool"
    watcher.instrument(watcher.Settings(endpoint=running.address, spool_dir=spool, export_delay_ms=50))
    try:
        with Stream(running.address) as stream, anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
            wait_for(lambda: len(stream.acknowledged) >= 6, "exports taken before the outage")
            made = [client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI).id]
            assert watcher.flush()

            proxy.cut()
            cut_at = len(stream.answers)
            wait_for(
                lambda: stream.answered_since(cut_at, lambda a: a[0] == 503 and a[1] is not None and int(a[1]) > 0),
                "an export answered 503 with Retry-After",
            )
            wait_for(lambda: degraded(running.address), "/healthz degraded")
            made += [client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI).id for _ in range(5)]
            assert watcher.flush(timeout_s=30)
            assert spooled(spool), "the hook kept nothing while the daemon answered 503"
            assert not stream.answered_since(cut_at, lambda a: a[0] not in (200, 503))

            proxy.restore()
            restored_at, acknowledged = len(stream.answers), len(stream.acknowledged)
            wait_for(
                lambda: stream.answered_since(restored_at, lambda a: a[0] == 200),
                "an export taken after the outage",
            )
            wait_for(lambda: health(running.address)[0] == 200, "/healthz ok again")
            assert health(running.address)[1]["status"] == "ok"
            wait_for(lambda: not spooled(spool), "the spool to empty")
            wait_for(lambda: len(stream.acknowledged) >= acknowledged + 6, "the stream flowing again")
            answers = stream.answers[restored_at:]
            recovered = answers.index((200, None))
            relapses = [answer for answer in answers[recovered:] if answer == (503, "5")]  # a commit that failed
            assert not relapses, answers[recovered:]  # e.g. on a connection the outage killed, kept in a pool
    finally:
        watcher.uninstrument()
    stored = assert_each_stored_once(database, {*made, *stream.acknowledged})
    assert running.daemon.counters.stored == len(stored)
