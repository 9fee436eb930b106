"""What the watcher hook adds to an Anthropic SDK call, measured against a bare SDK in the same run.

Usage: python bench/hook_overhead.py [--calls N] [--rounds R]

The fake Anthropic API and an OTLP sink (standing in for the daemon) run in two other
processes, so this process only does what an application does. Three clients take turns call
by call, so machine noise falls on all alike: a bare client (no middleware, the SDK's own
tracing off), one with an empty middleware (what any middleware costs in the SDK), and one
instrumented by watcher (spans exported over real OTLP/HTTP, the batch exporter running).
Prints the median and p99 per call of each, watcher's added time per call at the median, and
the ratio. Target: at most 150 us added at the median, plain and streamed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

os.environ["ANTHROPIC_OPEN_TELEMETRY"] = "false"

import anthropic

import watcher

FAKE_API = """
import sys
from watcher.testing import FakeAnthropic
fake = FakeAnthropic().start()
print(fake.base_url, flush=True)
sys.stdin.read()
"""
# A stand-in for the daemon in its own process: it takes each OTLP export and answers 200 without
# decoding, and answers the hook's kill-switch polls with none engaged, so the time the real daemon
# spends never lands on the fake API's process.
OTLP_SINK = """
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def do_GET(self):
        body = b'{"version": 1, "engaged": []}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
sys.stdin.read()
"""
HI = [{"role": "user", "content": "hi"}]


def plain(client: anthropic.Anthropic) -> None:
    client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI)  # type: ignore[arg-type]


def streamed(client: anthropic.Anthropic) -> None:
    for _ in client.messages.create(  # type: ignore[call-overload]
        model="claude-haiku-4-5", max_tokens=16, messages=HI, stream=True
    ):
        pass


def timed(call: Callable[[anthropic.Anthropic], None], client: anthropic.Anthropic, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        call(client)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def passthrough(request: anthropic.APIRequest, call_next: anthropic.CallNext) -> object:
    """An empty middleware: what any middleware costs in the SDK, before watcher does anything."""
    return call_next(request)


def measure(
    name: str,
    call: Callable[[anthropic.Anthropic], None],
    clients: dict[str, anthropic.Anthropic],
    calls: int,
    rounds: int,
) -> None:
    samples: dict[str, list[float]] = {label: [] for label in clients}
    for client in clients.values():
        timed(call, client, 50)
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        for label, client in clients.items():
            samples[label] += timed(call, client, per_round)
    medians = {label: statistics.median(values) for label, values in samples.items()}
    for label, values in samples.items():
        print(f"{name:7} {label:18} median {medians[label]:.3f} ms  p99 {p99(values):.3f} ms")
    bare, hooked, empty = medians["bare SDK"], medians["watcher"], medians["empty middleware"]
    print(
        f"{name:7} watcher adds {1000 * (hooked - bare):+.0f} us/call at the median "
        f"(ratio {hooked / bare:.3f}); of that, the SDK's middleware path itself {1000 * (empty - bare):+.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per client and mode")
    parser.add_argument(
        "--rounds", type=int, default=3000, help="alternations between the clients (calls/rounds in a row each)"
    )
    args = parser.parse_args()
    peers = [
        subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for code in (FAKE_API, OTLP_SINK)
    ]
    try:
        base_url, endpoint = (peer.stdout.readline().strip() for peer in peers if peer.stdout is not None)
        bare = anthropic.Anthropic(base_url=base_url, api_key="bench")
        empty = anthropic.Anthropic(base_url=base_url, api_key="bench", middleware=[passthrough])
        watcher.instrument(watcher.Settings(endpoint=endpoint))
        hooked = anthropic.Anthropic(base_url=base_url, api_key="bench")
        assert not bare.middleware and len(empty.middleware) == 1 and hooked.middleware
        clients = {"bare SDK": bare, "empty middleware": empty, "watcher": hooked}
        print(f"{args.calls} calls per client and mode, {args.rounds} alternating rounds")
        measure("plain", plain, clients, args.calls, args.rounds)
        measure("stream", streamed, clients, args.calls, args.rounds)
        watcher.uninstrument()
    finally:
        for peer in peers:
            if peer.stdin is not None:
                peer.stdin.close()
            peer.wait(timeout=10)


if __name__ == "__main__":
    main()
