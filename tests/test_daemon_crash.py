"""`kill -9` of the daemon loses nothing it acknowledged and double-counts nothing an exporter re-sends."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from test_daemon import _export_body


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(state: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "WATCHER_STATE_DIR": str(state),
        "WATCHER_LISTEN": f"127.0.0.1:{port}",
        "WATCHER_GRPC_LISTEN": "",
    }
    daemon = subprocess.Popen(
        [sys.executable, "-m", "watcher.cli", "serve", "--config", str(state / "none.toml")],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return daemon
        except OSError:
            if daemon.poll() is not None:
                raise RuntimeError("the daemon exited at start") from None
            time.sleep(0.05)  # a separate process binding its port: there is no event to wait on
    raise TimeoutError("the daemon did not start")


def _post(port: int, body: bytes) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces", data=body, headers={"content-type": "application/x-protobuf"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.status


def _stored(state: Path) -> set[str]:
    with sqlite3.connect(state / "ledger.db") as db:
        return {row[0] for row in db.execute("SELECT response_id FROM entries")}


def test_acknowledged_spans_survive_kill_9_and_resends_add_nothing(tmp_path: Path) -> None:
    """Every span answered 200 before SIGKILL is in the ledger after restart; re-sending them all stores no copy."""
    port = _free_port()
    daemon = _start(tmp_path, port)
    bodies = [_export_body(cost=0.001, response_id=f"msg_{i}") for i in range(30)]
    acknowledged = []
    for i, body in enumerate(bodies[:20]):
        assert _post(port, body) == 200
        acknowledged.append(f"msg_{i}")
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    assert set(acknowledged) <= _stored(tmp_path)
    daemon = _start(tmp_path, port)
    try:
        for body in bodies:  # an exporter retrying everything, acknowledged or not
            assert _post(port, body) == 200
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT response_id) FROM entries").fetchone() == (30, 30)
