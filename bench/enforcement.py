"""How fast a kill-switch change reaches a hook: pushed by long poll, against the old interval poll.

Usage: python bench/enforcement.py [--runs N] [--poll S]

Starts `watcher serve` as its own process with one budget per run (scope: request type runN) and
watches it from this process with two hooks' boards: the pushed one `watcher.instrument` starts
(long polls), and a baseline that polls the plain GET every S seconds (default 1), as the hook
did before long polls. Per run it (1) posts the span that takes the budget past 120% and notes
when the daemon acknowledged it, (2) releases the switch by hand, (3) engages it by hand, and
times, from each acknowledgement, until each board refuses calls in that request type (or, after
the release, lets them through again). Each change comes at a random phase of the baseline's poll.
Prints median, p90, p99 and max per change and hook.
Target: the pushed hook within 100 ms at p99.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import watcher
from watcher._client import DaemonClient
from watcher._instrument._hook import _installed
from watcher._instrument._killswitch import Board, KillSwitchPoller
from watcher.testing import DaemonProcess

sys.path.insert(0, str(Path(__file__).parent))
from ingest import post


def crossing_body(run: int) -> bytes:
    """One watcher cost span of $1.30 in request type `run{run}` (its budget's limit is $1)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attributes = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-opus-4-7",
        "gen_ai.response.model": "claude-opus-4-7",
        "gen_ai.response.id": f"msg_cross_{run}",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
        "gen_ai.usage.cost.amount": 1.3,
        "watcher.cost.input_usd": 1.3,
        "watcher.pricing.version": "2026-11-25",
        "watcher.request_type": f"run{run}",
    }
    provider.get_tracer("watcher").start_span("chat claude-opus-4-7", attributes=attributes).end()
    return encode_spans(exporter.get_finished_spans()).SerializeToString()  # type: ignore[no-any-return]


class IntervalPoller(KillSwitchPoller):
    """The baseline: the hook as it was before long polls, a plain GET every `interval_s`."""

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.refresh()


def refuses(board: Board, request_type: str) -> bool:
    try:
        board.check(request_type, "claude-haiku-4-5")
    except watcher.BudgetExceeded:
        return True
    return False


def delays(boards: dict[str, Board], request_type: str, engaged: bool, since: float) -> dict[str, float]:
    """Seconds from `since` until each board refuses (`engaged`) or lets through calls in `request_type`."""
    seen: dict[str, float] = {}
    while len(seen) < len(boards):
        for name, board in boards.items():
            if name not in seen and refuses(board, request_type) == engaged:
                seen[name] = time.perf_counter() - since
        time.sleep(0.0005)
    return seen


def switch(url: str, budget: str, action: str) -> None:
    request = urllib.request.Request(f"{url}/v1/killswitch/{budget}/{action}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["engaged"] == (action == "engage")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    p50, p90, p99 = statistics.median(ms), percentile(ms, 0.9), percentile(ms, 0.99)
    return f"median {p50:7.1f}  p90 {p90:7.1f}  p99 {p99:7.1f}  max {max(ms):7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args()
    config = "".join(
        f'[[budgets]]\nname = "run{i}"\nlimit_usd = 1\nperiod = "day"\nscope = {{ request_type = "run{i}" }}\n\n'
        for i in range(args.runs)
    )
    daemon = DaemonProcess(config).start()
    url = daemon.url
    results: dict[tuple[str, str], list[float]] = {}
    try:
        os.environ["ANTHROPIC_OPEN_TELEMETRY"] = "false"
        watcher.instrument(watcher.Settings(endpoint=url, killswitch_poll_s=args.poll))
        pushed = _installed[-1][2]
        assert pushed is not None
        baseline = IntervalPoller(DaemonClient(url), interval_s=args.poll, service="bench", environment="bench")
        boards = {"pushed": pushed.board, "interval": baseline.start().board}
        for run in range(args.runs):
            budget = f"run{run}"

            def record(change: str, engaged: bool, since: float, budget: str = budget) -> None:
                for hook, delay in delays(boards, budget, engaged, since).items():
                    results.setdefault((change, hook), []).append(delay)

            time.sleep(random.uniform(0, args.poll))  # each change at a random phase of the baseline's poll
            post(f"{url}/v1/traces", crossing_body(run))
            record("crossing", True, time.perf_counter())
            time.sleep(random.uniform(0, args.poll))
            switch(url, budget, "release")
            record("release", False, time.perf_counter())
            time.sleep(random.uniform(0, args.poll))
            switch(url, budget, "engage")
            record("engage", True, time.perf_counter())
        baseline.stop()
        watcher.uninstrument()
    finally:
        daemon.stop()
    print(f"{args.runs} runs; baseline: a plain GET every {args.poll:.2f} s; times from the daemon's acknowledgement")
    for (change, hook), values in results.items():
        print(f"{change:8s} {hook:8s} {summary(values)}")


if __name__ == "__main__":
    main()
