"""The daemon's HTTP port under load and abuse: connection bursts, a body before the token, large concurrent exports.

Usage: python bench/transport.py burst [--connects N] [--requests M]
       python bench/transport.py unauthenticated [--mb MB]
       python bench/transport.py large [--exports N] [--mb MB]

Each starts `watcher serve` as its own process (fresh state directory) and prints what it measured:

- burst: N connects opened at once (how many took a second or more: SYN retries), then M
  concurrent GET /healthz (p50, p99, failures within 30 s).
- unauthenticated: a daemon with a token; one POST without it, announcing `Content-Length: -1`,
  then MB megabytes of body; the daemon's resident memory (VmRSS, peak VmHWM) before and after.
- large: one export of MB megabytes of cost spans, then N of them at once; the daemon's peak
  memory after each, and the answers (200, or 503 with its Retry-After).

Settings come from the environment as usual (WATCHER_MAX_CONCURRENT_EXPORTS, MALLOC_ARENA_MAX...).
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path
from typing import TypeVar

from ingest import cost_span_bodies

from watcher.testing import DaemonProcess

T = TypeVar("T")


def memory(pid: int) -> str:
    """The process's resident memory now and at its peak, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return f"VmRSS {int(fields['VmRSS'].split()[0]) // 1024} MB, VmHWM {int(fields['VmHWM'].split()[0]) // 1024} MB"


def at_once(count: int, work: Callable[[], T]) -> list[T]:
    """Runs `work()` on `count` threads released together; returns their results."""
    gate = threading.Barrier(count)

    def run(_: int) -> T:
        gate.wait()
        return work()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def burst(connects: int, requests: int) -> None:
    with DaemonProcess() as daemon:

        def connect() -> float:
            start = time.monotonic()
            socket.create_connection(("127.0.0.1", daemon.port), timeout=30).close()
            return time.monotonic() - start

        def health() -> float:
            start = time.monotonic()
            connection = HTTPConnection("127.0.0.1", daemon.port, timeout=30)
            try:
                connection.request("GET", "/healthz")
                connection.getresponse().read()
            except OSError:
                return float("inf")
            finally:
                connection.close()
            return time.monotonic() - start

        took = at_once(connects, connect)
        print(f"{connects} connects: {sum(t >= 1.0 for t in took)} took 1 s or more; slowest {max(took):.3f} s")
        took = sorted(at_once(requests, health))
        p50, p99 = took[len(took) // 2], took[int(len(took) * 0.99)]
        failed = sum(t == float("inf") for t in took)
        print(f"{requests} concurrent /healthz: p50 {p50:.3f} s, p99 {p99:.3f} s, {failed} failed")


def unauthenticated(mb: int) -> None:
    os.environ["WATCHER_TOKEN"] = "bench-token"
    with DaemonProcess() as daemon:
        print("before:", memory(daemon.pid))
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n")
            sent = 0
            try:
                for _ in range(mb):
                    sock.sendall(b"\0" * (1 << 20))
                    sent += 1
                sock.shutdown(socket.SHUT_WR)
                print("answer:", sock.recv(100).split(b"\r\n")[0].decode())
            except OSError as error:
                print(f"the daemon closed the connection after {sent} MB: {type(error).__name__}")
        print(f"after {mb} MB:", memory(daemon.pid))


def large(exports: int, mb: float) -> None:
    one = cost_span_bodies(1)[0]
    body = one * int(mb * 1e6 / len(one))  # repeated requests concatenate into one with more resource spans
    port = 0

    def send() -> str:
        connection = HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            connection.request("POST", "/v1/traces", body, {"content-type": "application/x-protobuf"})
            reply = connection.getresponse()
            reply.read()
            retry = reply.getheader("retry-after")
            return f"{reply.status}" + (f" Retry-After {retry}" if retry else "")
        except OSError as error:
            return type(error).__name__
        finally:
            connection.close()

    with DaemonProcess() as daemon:
        port = daemon.port
        print(f"body {len(body) / 1e6:.1f} MB; before:", memory(daemon.pid))
        print("one export:", send(), "|", memory(daemon.pid))
        answers = Counter(at_once(exports, send))
        print(f"{exports} at once:", dict(answers), "|", memory(daemon.pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("burst")
    command.add_argument("--connects", type=int, default=200)
    command.add_argument("--requests", type=int, default=300)
    commands.add_parser("unauthenticated").add_argument("--mb", type=int, default=400)
    command = commands.add_parser("large")
    command.add_argument("--exports", type=int, default=20)
    command.add_argument("--mb", type=float, default=13.5)
    args = parser.parse_args()
    if args.command == "burst":
        burst(args.connects, args.requests)
    elif args.command == "unauthenticated":
        unauthenticated(args.mb)
    else:
        large(args.exports, args.mb)


if __name__ == "__main__":
    main()
