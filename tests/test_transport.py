"""The daemon's two ports under abuse and load: auth before the body, strict framing, turns, health, bursts."""

from __future__ import annotations

import json
import select
import socket
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from http.client import HTTPConnection
from pathlib import Path

import grpc
import pytest
from _support import http, metrics_text, sample, wait_for
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from test_daemon import Clock, Recorder, _export_body

import watcher
from watcher.daemon import Running, build
from watcher.testing import DaemonProcess

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


def _post(daemon: Running, body: bytes = BODY, **headers: str) -> tuple[int, bytes]:
    return http(f"{daemon.address}/v1/traces", body, **{"content-type": "application/x-protobuf", **headers})


def _grpc(daemon: Running, body: bytes = BODY, **metadata: str) -> bytes:
    """The raw answer of a gRPC Export of `body` (bytes as sent, so garbage can be sent); grpc.RpcError otherwise."""
    assert daemon.grpc_address is not None
    host, port = daemon.grpc_address
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        return channel.unary_unary(EXPORT)(body, metadata=tuple(metadata.items()), timeout=60)  # type: ignore[no-any-return]


def _grpc_error(daemon: Running, body: bytes = BODY, **metadata: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        _grpc(daemon, body, **metadata)
    return caught.value


def _retry_delay_s(error: grpc.RpcError) -> int:
    """The RetryInfo delay in the error's rich status (trailer `grpc-status-details-bin`)."""
    details = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]  # type: ignore[attr-defined]
    retry = RetryInfo()
    assert Status.FromString(details).details[0].Unpack(retry)
    return retry.retry_delay.seconds


def _raw(daemon: Running, request: bytes, *, close_write: bool = False) -> bytes:
    """Sends `request` byte for byte and returns everything the daemon sends until it closes the connection.

    The write side stays open unless `close_write`: a daemon that waits for more of the body never answers,
    and the read times out.
    """
    host, port = daemon.server.server_address[:2]
    with socket.create_connection((str(host), port), timeout=15) as sock:
        sock.sendall(request)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def _status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:100]
    return int(reply.split(b" ", 2)[1])


# --- authentication ---------------------------------------------------------------------------


def test_the_bearer_scheme_is_case_insensitive_on_both_ports_and_the_token_is_not(make: Make) -> None:
    """`bearer x` and `BEARER  x` are accepted over HTTP and gRPC; a wrong token or another scheme is not."""
    daemon = make(token="s3cret")
    for accepted in ("Bearer s3cret", "bearer s3cret", "BEARER  s3cret"):
        assert _post(daemon, authorization=accepted)[0] == 200, accepted
        assert _grpc(daemon, authorization=accepted) == b"", accepted
    for refused in ("Bearer S3CRET", "Basic s3cret", "s3cret", "Bearer s3cret2", ""):
        assert _post(daemon, authorization=refused)[0] == 401, refused
        assert _grpc_error(daemon, authorization=refused).code() == grpc.StatusCode.UNAUTHENTICATED, refused


@pytest.mark.parametrize(
    "framing",
    [b"content-length: -1\r\n", b"content-length: 999999999\r\n", b"transfer-encoding: chunked\r\n\r\n-1\r\n"],
    ids=["length -1", "length over the limit", "chunk size -1"],
)
def test_a_request_without_the_token_is_refused_before_its_body_is_read(make: Make, framing: bytes) -> None:
    """Without the token the answer is 401 and the connection closes, whatever body is announced and unsent."""
    daemon = make(token="s3cret")
    head = b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
    reply = _raw(daemon, head + framing + (b"" if b"chunked" in framing else b"\r\n"))
    assert _status_of(reply) == 401
    assert b"connection: close" in reply.lower()


# --- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "framing",
    [
        b"content-length: -1\r\n\r\n",
        b"content-length: abc\r\n\r\n",
        b"content-length: 1e3\r\n\r\n",
        b"content-length: 10\r\ncontent-length: 20\r\n\r\n",
        b"transfer-encoding: chunked\r\n\r\n-1\r\n",
        b"transfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"transfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"transfer-encoding: gzip\r\n\r\n",
    ],
    ids=["length -1", "length abc", "length 1e3", "two lengths", "chunk -1", "chunk zz", "chunk no CRLF", "gzip TE"],
)
def test_a_body_whose_framing_is_malformed_gets_400_and_the_daemon_keeps_serving(make: Make, framing: bytes) -> None:
    """A negative, non-numeric or doubled Content-Length, a bad chunk, or another transfer coding: 400, closed."""
    daemon = make()
    reply = _raw(daemon, b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n" + framing)
    assert _status_of(reply) == 400
    assert b"connection: close" in reply.lower()
    assert _post(daemon)[0] == 200


def test_a_chunked_export_with_extensions_and_trailers_is_stored(make: Make) -> None:
    """Chunked bodies are still read: sizes in hex with extensions, then trailers."""
    daemon = make()
    pieces = [BODY[i : i + 100] for i in range(0, len(BODY), 100)]
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    request = b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
    request += b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n" + chunks + b"0\r\nx-trailer: 1\r\n\r\n"
    assert _status_of(_raw(daemon, request)) == 200
    assert daemon.daemon.counters.stored == 1


# --- one ingest path for both ports -----------------------------------------------------------


def test_garbage_over_grpc_is_invalid_argument(make: Make) -> None:
    """Bytes that are no OTLP export get INVALID_ARGUMENT over gRPC (400 over HTTP), never INTERNAL."""
    daemon = make()
    assert _grpc_error(daemon, b"\xff\xfenot protobuf").code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _post(daemon, b"\xff\xfenot protobuf")[0] == 400
    assert _grpc(daemon) == b""


def test_both_ports_share_the_turns_and_a_busy_daemon_says_when_to_retry(make: Make) -> None:
    """While the one turn is held by an export still arriving, HTTP gets 503 with Retry-After, gRPC UNAVAILABLE with
    RetryInfo; once it is free both store again."""
    daemon = make(max_concurrent_exports=1, busy_wait_s=0)
    holder = _start_holding(daemon)

    def busy_answer() -> str | None:
        nonlocal holder
        if select.select([holder], [], [], 0)[0]:  # the holder was answered: a poll took the turn first
            holder.close()
            holder = _start_holding(daemon)
            return None
        return _post_with_headers(daemon)[1].get("retry-after")

    try:
        busy = wait_for(busy_answer, "a busy answer")
        assert int(busy) >= 1
        error = _grpc_error(daemon)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert _retry_delay_s(error) >= 1
        holder.sendall(BODY[10:])
        assert b" 200 " in holder.recv(100)
    finally:
        holder.close()
    assert _grpc(daemon) == b""
    assert _post(daemon)[0] == 200


def _start_holding(daemon: Running) -> socket.socket:
    """A connection that starts an export and sends only part of its body: it holds a turn, if it got one."""
    host, port = daemon.server.server_address[:2]
    holder = socket.create_connection((str(host), port), timeout=30)
    holder.sendall(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n")
    holder.sendall(b"content-length: %d\r\n\r\n" % len(BODY) + BODY[:10])
    return holder


def _post_with_headers(daemon: Running) -> tuple[int, dict[str, str]]:
    host, port = daemon.server.server_address[:2]
    connection = HTTPConnection(str(host), port, timeout=30)
    try:
        connection.request("POST", "/v1/traces", BODY, {"content-type": "application/x-protobuf"})
        reply = connection.getresponse()
        reply.read()
        return reply.status, {name.lower(): value for name, value in reply.getheaders()}
    finally:
        connection.close()


def test_a_ledger_that_fails_any_way_gets_retry_later_on_both_ports_and_shows_in_health(make: Make) -> None:
    """Even a failure that is no SQLite error (a closed ledger) is 503 with Retry-After, or UNAVAILABLE: never a
    dropped connection or UNKNOWN, which exporters do not retry."""
    daemon = make()
    daemon.ledger.close()
    status, body = _post_with_headers(daemon)
    assert status == 503 and int(body["retry-after"]) >= 1
    error = _grpc_error(daemon)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert _retry_delay_s(error) >= 1
    assert http(f"{daemon.address}/healthz")[0] == 503


# --- health -----------------------------------------------------------------------------------


def test_health_is_degraded_with_the_reason_while_commits_fail_and_ok_after_one_succeeds(
    make: Make, tmp_path: Path
) -> None:
    """/healthz is 200 ok, then 503 degraded naming the failure while the ledger is locked, then ok again."""
    daemon = make()
    assert json.loads(http(f"{daemon.address}/healthz")[1]) == {"status": "ok"}
    with closing(sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the daemon's commit times out
        assert _post(daemon)[0] == 503
        status, body = http(f"{daemon.address}/healthz")
        blocker.execute("ROLLBACK")
    assert status == 503
    health = json.loads(body)
    assert health["status"] == "degraded" and "locked" in health["reason"]
    assert _post(daemon)[0] == 200
    assert http(f"{daemon.address}/healthz") == (200, b'{"status": "ok"}')


# --- dropped spans reported by hooks ----------------------------------------------------------


def test_spans_a_hook_reports_dropped_are_counted_once_per_stored_export(make: Make) -> None:
    """X-Watcher-Dropped-Spans adds its count when the export is stored; junk is ignored, absurd counts capped."""
    daemon = make()
    header = "x-watcher-dropped-spans"
    assert _post(daemon, **{header: "7"})[0] == 200
    assert _post(daemon, b"\xff\xfe", **{header: "100"})[0] == 400  # not stored: the hook sends it again
    for junk in ("-3", "abc", "1.5", "", "²"):
        assert _post(daemon, **{header: junk})[0] == 200
    assert _grpc(daemon, **{header: "5"}) == b""
    assert sample(metrics_text(daemon.address), "watcher_hook_dropped_spans_total") == 12
    assert _post(daemon, **{header: "9" * 40})[0] == 200
    assert sample(metrics_text(daemon.address), "watcher_hook_dropped_spans_total") == 12 + 1_000_000_000


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


def _vm(pid: int, field: str) -> int:
    """A memory figure of process `pid` from /proc, in kB (VmHWM: peak resident, VmRSS: resident now)."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def test_many_concurrent_large_exports_hold_only_the_turns_worth_of_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """16 concurrent 4 MB exports to a daemon with one turn raise its peak memory by less than three exports' worth,
    and each is answered 200, or 503 with Retry-After."""
    monkeypatch.setenv("WATCHER_MAX_CONCURRENT_EXPORTS", "1")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # as in the image: glibc's per-thread arenas would blur the peak
    body = BODY * (4_000_000 // len(BODY))
    with DaemonProcess() as daemon:
        host, port = "127.0.0.1", daemon.port
        before = _vm(daemon.pid, "VmRSS")
        answers = [_send(host, port, body)]
        one = _vm(daemon.pid, "VmHWM") - before  # what one export costs at its peak
        with ThreadPoolExecutor(16) as pool:
            answers += pool.map(lambda _: _send(host, port, body), range(16))
        growth = _vm(daemon.pid, "VmHWM") - before
    assert all(status == 200 or (status == 503 and retry) for status, retry in answers), answers
    assert growth < 3 * one, (growth, one)


def _send(host: str, port: int, body: bytes) -> tuple[int, str | None]:
    connection = HTTPConnection(host, port, timeout=120)
    try:
        connection.request("POST", "/v1/traces", body, {"content-type": "application/x-protobuf"})
        reply = connection.getresponse()
        reply.read()
        return reply.status, reply.getheader("retry-after")
    finally:
        connection.close()
