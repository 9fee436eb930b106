"""`kill -9` of the daemon loses nothing it acknowledged and double-counts nothing an exporter re-sends."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest
from test_daemon import _export_body

from watcher.testing import DaemonProcess


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(f"{url}/v1/traces", data=body, headers={"content-type": "application/x-protobuf"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return int(reply.status)


def _stored(state: Path) -> set[str]:
    with sqlite3.connect(state / "ledger.db") as db:
        return {row[0] for row in db.execute("SELECT response_id FROM entries")}


def test_acknowledged_spans_survive_kill_9_and_resends_add_nothing(tmp_path: Path) -> None:
    """Every span answered 200 before SIGKILL is in the ledger after restart; re-sending them all stores no copy."""
    bodies = [_export_body(cost=0.001, response_id=f"msg_{i}") for i in range(30)]
    daemon = DaemonProcess(state_dir=tmp_path).start()
    acknowledged = []
    for i, body in enumerate(bodies[:20]):
        assert _post(daemon.url, body) == 200
        acknowledged.append(f"msg_{i}")
    daemon.kill()
    assert set(acknowledged) <= _stored(tmp_path)
    with DaemonProcess(state_dir=tmp_path) as restarted:
        for body in bodies:  # an exporter retrying everything, acknowledged or not
            assert _post(restarted.url, body) == 200
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT response_id) FROM entries").fetchone() == (30, 30)


def test_a_daemon_that_does_not_stop_on_sigterm_is_killed_not_leaked() -> None:
    """DaemonProcess.stop waits, then kills a daemon that ignored SIGTERM (here: frozen) and says so."""
    daemon = DaemonProcess("").start()
    assert daemon.process is not None
    os.kill(daemon.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    # Wait until it has really stopped: a SIGTERM sent before the kernel acts on SIGSTOP is taken
    # first (lower signal numbers are delivered first), and the daemon would then exit on it.
    _, status = os.waitpid(daemon.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    with pytest.raises(subprocess.TimeoutExpired):
        daemon.stop(timeout=0.5)
    assert daemon.process.poll() is not None
