"""`DaemonProcess`: a real `watcher serve` in its own process, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["DaemonProcess"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DaemonProcess:
    """Runs `watcher serve --config CONFIG` with its own state directory and a free loopback port.

    `start()` returns once `/healthz` answers (it polls: a separate process binding a port sends
    no event to wait on), or raises RuntimeError if the process exits first. gRPC is off unless
    `grpc=True`. `kill()` sends SIGKILL, for crash tests; `stop()` a clean SIGTERM.
    """

    def __init__(self, config: str = "", state_dir: Path | None = None, *, grpc: bool = False) -> None:
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="watcher-daemon-"))
        self.config = self.state_dir / "watcher.toml"
        if config or not self.config.exists():
            self.config.write_text(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port() if grpc else None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> DaemonProcess:
        env = {
            **os.environ,
            "WATCHER_STATE_DIR": str(self.state_dir),
            "WATCHER_LISTEN": f"127.0.0.1:{self.port}",
            "WATCHER_GRPC_LISTEN": f"127.0.0.1:{self.grpc_port}" if self.grpc_port else "",
        }
        command = [sys.executable, "-m", "watcher.cli", "serve", "--config", str(self.config)]
        self.process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"watcher serve exited with {self.process.returncode} at start") from None
                time.sleep(0.05)
        raise TimeoutError(f"watcher serve did not answer on {self.url} within {timeout_s} s")

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: the daemon gets no chance to flush or close anything."""
        os.kill(self.pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then wait up to `timeout` s; a daemon still running then is killed (never leaked) and
        `subprocess.TimeoutExpired` raised, since not stopping on SIGTERM is a bug worth failing on."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
