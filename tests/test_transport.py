"""The daemon's two ports under abuse and load: auth before the body, strict framing, turns, health, bursts."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_daemon import Clock, Recorder, _export_body

import watcher
from watcher.daemon import Running, build

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
BODY = _export_body(cost=0.001, response_id="transport")
Make = Callable[..., Running]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    """Builds daemons on free loopback ports (HTTP and gRPC); starts them unless `start=False`; stops them all."""
    built: list[Running] = []

    def _make(start: bool = True, **settings: object) -> Running:
        config = watcher.Settings(listen="127.0.0.1:0", grpc_listen="127.0.0.1:0", state_dir=tmp_path, **settings)  # type: ignore[arg-type]
        running = build(config, budgets=[], clock=Clock(), notifier=Recorder())
        built.append(running.start(tick_s=3600) if start else running)
        return running

    yield _make
    for running in built:
        running.stop()


# --- bursts and memory ------------------------------------------------------------------------


def test_a_burst_of_200_connections_is_queued_not_dropped_and_each_is_answered(make: Make) -> None:
    """200 connections opened at once all complete their handshake even before the daemon accepts any (none waits
    on SYN retries), and each gets its /healthz answer once it serves."""
    daemon = make(start=False)
    host, port = daemon.server.server_address[:2]
    sockets = [socket.socket() for _ in range(200)]
    started = False
    try:
        for sock in sockets:
            sock.setblocking(False)
            sock.connect_ex((str(host), port))
        pending = set(sockets)
        while pending:  # a handshake the kernel dropped for a full queue never completes while nobody accepts
            _, writable, _ = select.select([], list(pending), [], 30)
            assert writable, f"{len(pending)} of 200 connections never completed their handshake"
            pending -= set(writable)
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for sock in sockets)
        started = bool(daemon.start(tick_s=3600))
        for sock in sockets:
            sock.setblocking(True)
            sock.settimeout(30)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert all(sock.recv(100).startswith(b"HTTP/1.1 200 ") for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
        if not started:
            daemon.start(tick_s=3600)  # stop() waits for the serving loop
