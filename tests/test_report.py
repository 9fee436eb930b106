"""`watcher report` and `watcher status` read the right ledger: the daemon's, or a file named on purpose."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import pytest
from _support import http
from pydantic import SecretStr

import watcher
from watcher.cli import main
from watcher.daemon import Running, build
from watcher.exceptions import ConfigError
from watcher.ledger import SCHEMA_VERSION, SqliteLedger, open_ledger
from watcher.testing import FakeAnthropic, FakeReply

pytestmark = pytest.mark.usefixtures("isolated")

TOKEN = "s3cret"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SPENT_AT = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)
USAGE = {"input_tokens": 1000, "output_tokens": 100}  # claude-haiku-4-5: $0.0015 a call


@pytest.fixture
def daemon(tmp_path: Path, fake_api: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    """A daemon whose clock reads NOW, holding 3 extraction calls ($0.0045) and 2 summarise calls ($0.0030)
    spent through the hook at SPENT_AT; WATCHER_ENDPOINT and WATCHER_TOKEN point the CLI at it."""
    settings = watcher.Settings(
        listen="127.0.0.1:0", grpc_listen="", state_dir=tmp_path / "daemon", token=SecretStr(TOKEN)
    )
    running = build(settings, budgets=[], clock=lambda: NOW).start(tick_s=3600)
    try:
        spend(running, fake_api, {"extraction": 3, "summarise": 2})
        monkeypatch.setenv("WATCHER_ENDPOINT", running.address)
        monkeypatch.setenv("WATCHER_TOKEN", TOKEN)
        yield running
    finally:
        running.stop()


def spend(daemon: Running, fake: FakeAnthropic, calls: dict[str, int]) -> None:
    """Real SDK calls through the hook, exported over OTLP to `daemon`, their spans stamped SPENT_AT."""
    settings = watcher.Settings(endpoint=daemon.address, token=SecretStr(TOKEN), killswitch_poll_s=0)
    watcher.instrument(settings, clock_ns=lambda: int(SPENT_AT.timestamp() * 1e9))
    try:
        with anthropic.Anthropic(base_url=fake.base_url, api_key="k") as client:
            for request_type, count in calls.items():
                with watcher.request_type(request_type):
                    for _ in range(count):
                        fake.reply(FakeReply(usage=USAGE))
                        client.messages.create(
                            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                        )
        assert watcher.flush()
    finally:
        watcher.uninstrument()


def report_rows(out: str) -> dict[str, tuple[str, str]]:
    """The (cost, requests) of each row of a rendered report, by key."""
    lines = out.splitlines()
    first, last = (n for n, line in enumerate(lines) if line.startswith("---"))
    return {key: (cost, requests) for key, cost, requests, *_ in (line.split() for line in lines[first + 1 : last])}


def test_report_asks_the_daemon_and_says_so(daemon: Running, capsys: pytest.CaptureFixture[str]) -> None:
    """`watcher report` shows the daemon's spend, its window read by the daemon's clock, and names the daemon."""
    assert main(["report", "--since", "1d"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == [
        f"from the daemon at {daemon.address}",
        "spend from 2026-11-24 12:00 to 2026-11-25 12:00 UTC, by request type",
    ]
    assert report_rows(out) == {"extraction": ("0.0045", "3"), "summarise": ("0.0030", "2")}


def test_report_passes_since_until_and_by_to_the_daemon(daemon: Running, capsys: pytest.CaptureFixture[str]) -> None:
    """`--since`, `--until` and `--by` choose the daemon's window and grouping: a window before the calls is empty."""
    assert main(["report", "--since", "2026-11-25T10:00", "--until", "2026-11-25T10:59", "--by", "model"]) == 0
    out = capsys.readouterr().out
    assert "spend from 2026-11-25 10:00 to 2026-11-25 10:59 UTC, by model" in out and report_rows(out) == {}
    assert main(["report", "--since", "2d", "--until", "2026-11-26", "--by", "model"]) == 0
    out = capsys.readouterr().out
    assert "spend from 2026-11-24 00:00 to 2026-11-26 00:00 UTC" in out
    assert report_rows(out) == {"claude-haiku-4-5": ("0.0075", "5")}


def test_the_report_endpoint_needs_the_token_and_answers_exact_rows(daemon: Running) -> None:
    """GET /v1/report takes the bearer token, and answers the window and rows with money as exact strings."""
    assert http(daemon.address + "/v1/report")[0] == 401
    status, body = http(daemon.address + "/v1/report?since=1d&by=request_type", token=TOKEN)
    assert status == 200, body
    document = json.loads(body)
    assert {k: document[k] for k in ("version", "generated_at", "since", "until", "by")} == {
        "version": 1,
        "generated_at": "2026-11-25T12:00:00Z",
        "since": "2026-11-24T12:00:00Z",
        "until": "2026-11-25T12:00:00Z",
        "by": "request_type",
    }
    extraction = document["rows"][0]
    assert (extraction["key"], extraction["requests"], extraction["cost_usd"]) == ("extraction", 3, "0.004500000")
    assert extraction["input_tokens"] == 3000 and extraction["estimated_cost_usd"] == "0.000000000"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("since=yesterday", "--since 'yesterday': use 24h, 7d, 2w or an ISO date"),
        ("until=soon", "--until 'soon': use 24h"),
        ("since=2026-11-26&until=2026-11-25", "is not before --until"),
        ("by=colour", "cannot group by 'colour'"),
        ("sinse=7d", "unknown query parameter 'sinse'"),
    ],
)
def test_the_report_endpoint_refuses_a_bad_query_with_400(daemon: Running, query: str, error: str) -> None:
    """A parameter the report cannot use is answered 400 with the fix, not ignored."""
    status, body = http(f"{daemon.address}/v1/report?{query}", token=TOKEN)
    assert status == 400 and error in json.loads(body)["error"], body


def test_a_bad_report_option_is_one_line_from_the_daemon_and_exit_2(
    daemon: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    """`watcher report --since yesterday` prints the daemon's refusal in one line and exits 2."""
    assert main(["report", "--since", "yesterday"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"the daemon at {daemon.address} refused: 400 --since 'yesterday': " + (
        "use 24h, 7d, 2w or an ISO date such as 2026-11-01"
    )


def test_report_never_creates_a_ledger_when_the_daemon_cannot_be_reached(
    isolated: Path, refused_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no daemon answering, `watcher report` says so in one line and how to read a file, and writes nothing."""
    assert main(["report"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"cannot reach the daemon at {refused_endpoint} (Connection refused); start it")
    assert line.endswith("or read a file: --ledger PATH")
    assert not (isolated / "home-state").exists()


def test_report_reads_a_ledger_file_named_by_ledger_without_writing_it(
    daemon: Running,
    isolated: Path,
    refused_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--ledger PATH` reports from that file, names it, and leaves its bytes as they were."""
    daemon.stop()
    ledger = isolated / "daemon" / "ledger.db"
    before = ledger.read_bytes()
    assert main(["report", "--ledger", "daemon/ledger.db", "--since", "2026-11-25", "--until", "2026-11-26"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"from the ledger file {ledger}"
    assert report_rows(out) == {"extraction": ("0.0045", "3"), "summarise": ("0.0030", "2")}
    assert ledger.read_bytes() == before
    monkeypatch.setenv("WATCHER_STATE_DIR", str(isolated / "daemon"))  # the settings' ledger exists: name it
    assert main(["report"]) == 1
    assert capsys.readouterr().err.rstrip().endswith(f"or read a file: --ledger {ledger}")


def test_report_refuses_a_ledger_file_that_is_not_there_and_creates_none(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--ledger` naming no file is a one-line error, exit 2, and the file is not created."""
    assert main(["report", "--ledger", "nope.db"]) == 2
    assert (
        capsys.readouterr().err
        == f"no ledger file at {isolated / 'nope.db'}; check the path (reading a ledger never creates one)\n"
    )
    assert not (isolated / "nope.db").exists()


def test_status_names_the_daemon_it_asked(daemon: Running, capsys: pytest.CaptureFixture[str]) -> None:
    """`watcher status` starts with the daemon it read its budgets from."""
    assert main(["status"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"from the daemon at {daemon.address}"


def test_status_without_a_daemon_is_one_line_naming_the_endpoint(
    refused_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`watcher status` with no daemon answering says which endpoint it tried and what to do, in one line."""
    assert main(["status"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"cannot reach the daemon at {refused_endpoint} (Connection refused); start it")


def test_a_ledger_opened_read_only_is_never_migrated(isolated: Path) -> None:
    """A ledger file of another schema version is refused by a read-only open, and left as it was."""
    path = isolated / "old.db"
    SqliteLedger(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM schema_version WHERE version = ?", (SCHEMA_VERSION,))
    conn.close()
    before = path.read_bytes()
    older = f"has schema version {SCHEMA_VERSION - 1}, this watcher reads {SCHEMA_VERSION}: let this watcher's daemon"
    with pytest.raises(ConfigError, match=older):
        open_ledger(f"sqlite:///{path}", read_only=True)
    assert path.read_bytes() == before
