"""A forked child (gunicorn --preload, celery prefork, multiprocessing) enforces kill switches and sends its spans."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support import wait_for
from test_pipeline import app_env, run_app

from watcher.testing import DaemonProcess, FakeAnthropic, OTLPReceiver

BUDGET = '[[budgets]]\nname = "forked"\nlimit_usd = 1000\nperiod = "day"\n'


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    state = tmp_path / "daemon"
    state.mkdir()
    with DaemonProcess(BUDGET, state_dir=state) as running:
        yield running


def ledger_ids(daemon: DaemonProcess) -> set[str]:
    with sqlite3.connect(daemon.state_dir / "ledger.db") as db:
        return {row[0] for row in db.execute("SELECT response_id FROM entries")}


@pytest.mark.parametrize("poll_s", ["0.1", "60"])
def test_a_forked_child_refuses_calls_once_a_kill_switch_is_engaged(
    daemon: DaemonProcess, fake_api: FakeAnthropic, tmp_path: Path, poll_s: str
) -> None:
    """The kill-switch poller runs again in the child, long polls too: a switch engaged after the fork refuses the
    child's calls, well before a 60 s poll would have seen it."""
    script = f"""
    import os, sys, time, urllib.request
    import anthropic, watcher, watcher.auto
    client = anthropic.Anthropic(base_url=BASE_URL, api_key="k")
    pid = os.fork()
    if pid == 0:
        engage = urllib.request.Request("{daemon.url}/v1/killswitch/forked/engage", data=b"", method="POST")
        urllib.request.urlopen(engage).close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the application keeps calling, as a worker would
            try:
                client.messages.create(model="claude-haiku-4-5", max_tokens=8,
                                       messages=[{{"role": "user", "content": "hi"}}])
            except watcher.BudgetExceeded:
                os._exit(0)
            time.sleep(0.05)
        os._exit(1)
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """
    run_app(script, fake_api, WATCHER_ENDPOINT=daemon.url, WATCHER_KILLSWITCH_POLL_S=poll_s)


def test_a_multiprocessing_child_that_returns_at_once_still_delivers_its_spans(
    daemon: DaemonProcess, fake_api: FakeAnthropic
) -> None:
    """A multiprocessing child leaves by os._exit, without atexit: its spans are recorded and sent as it ends."""
    script = """
    import multiprocessing, sys
    import anthropic, watcher.auto

    def work():
        client = anthropic.Anthropic(base_url=BASE_URL, api_key="k")
        print(client.messages.create(model="claude-haiku-4-5", max_tokens=8,
                                     messages=[{"role": "user", "content": "hi"}]).id, flush=True)

    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join()
    sys.exit(child.exitcode)
    """
    done = run_app(script, fake_api, WATCHER_ENDPOINT=daemon.url, WATCHER_KILLSWITCH_POLL_S="0")
    assert ledger_ids(daemon) == set(done.stdout.split())


def test_a_forked_child_spools_during_an_outage_and_re_sends_on_its_own(
    fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    """The child's own replayer sends what the child spooled; the parent, uninstrumented, sends nothing."""
    with OTLPReceiver() as gone:
        port = int(gone.endpoint.rsplit(":", 1)[1])
    spool = tmp_path / "spool"
    script = """
    import os, sys
    import anthropic, watcher, watcher.auto
    pid = os.fork()
    if pid != 0:
        watcher.uninstrument()
        sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    client = anthropic.Anthropic(base_url=BASE_URL, api_key="k")
    for _ in range(3):
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    watcher.flush()
    sys.stdin.read()  # until the test has seen the spans arrive
    os._exit(0)
    """
    code = f"BASE_URL = {fake_api.base_url!r}\n" + textwrap.dedent(script)
    env = app_env(
        WATCHER_ENDPOINT=f"http://127.0.0.1:{port}", WATCHER_SPOOL_DIR=str(spool), WATCHER_KILLSWITCH_POLL_S="0"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env=env) as app:
        assert app.stdin is not None
        try:
            wait_for(lambda: list(spool.rglob("*.otlp")), "the child to spool its spans")
            with OTLPReceiver(port=port) as back:
                spans = back.wait_for(3, timeout=30)
        finally:
            app.stdin.close()
        assert app.wait(timeout=30) == 0
    assert len(spans) == 3
