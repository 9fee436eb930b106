"""Shared fixtures: the fake Anthropic API, and watcher instrumented into an in-memory span catcher."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

import watcher
from watcher.settings import Settings
from watcher.testing import FakeAnthropic, SpanCapture

# The SDK's own call spans are switched off unless a test turns them on: tests count spans.
os.environ.setdefault("ANTHROPIC_OPEN_TELEMETRY", "false")
# No daemon runs during tests unless a test starts one: do not poll for kill switches by default.
os.environ.setdefault("WATCHER_KILLSWITCH_POLL_S", "0")


@pytest.fixture(autouse=True, scope="session")
def _spool_out_of_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Spans a test's exporter cannot deliver are spooled under the session's temporary directory, never the
    user's. A test that spools on purpose passes its own `spool_dir`: ports are reused, so a shared spool could
    replay one test's spans into another's receiver."""
    os.environ.setdefault("WATCHER_SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))


@pytest.fixture
def fake_api() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def capture() -> Iterator[SpanCapture]:
    """watcher instrumented for the test, its spans kept in memory; uninstrumented after."""
    spans = SpanCapture()
    watcher.instrument(Settings(), tracer_provider=spans.provider)
    try:
        yield spans
    finally:
        watcher.uninstrument()
        spans.provider.shutdown()


@pytest.fixture
def client(capture: SpanCapture, fake_api: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake_api.base_url, api_key="test-key", max_retries=2) as instrumented:
        yield instrumented


@pytest.fixture
def async_client(capture: SpanCapture, fake_api: FakeAnthropic) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fake_api.base_url, api_key="test-key", max_retries=2)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory and state directory of the test's own, and no WATCHER_* naming a file or daemon:
    for tests of what the CLI and the settings read when nothing is set."""
    monkeypatch.chdir(tmp_path)
    for name in ("WATCHER_CONFIG", "WATCHER_ENDPOINT", "WATCHER_TOKEN", "WATCHER_STATE_DIR", "WATCHER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "home-state"))
    return tmp_path


@pytest.fixture
def refused_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """WATCHER_ENDPOINT set to a loopback port that is bound but not listening, so connecting is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{bound.getsockname()[1]}"
        monkeypatch.setenv("WATCHER_ENDPOINT", endpoint)
        yield endpoint
