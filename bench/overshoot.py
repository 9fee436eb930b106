"""Spend at stop under concurrency: how far many threads in many processes carry a budget past its kill line.

Usage: python bench/overshoot.py [--delay-ms 0,200] [--processes 5] [--threads 10] [--runs 1]

Per run and per reply delay, in two modes, each with a fresh `watcher serve` (its own state
directory, so the budget starts at $0): one budget `loop` of $1.00 a day, alert at 0.8, kill at
1.2, scoped to request type `loop`, whose alerts go to a webhook sink in this process that
counts them by kind. A fake Anthropic API in this process answers every call after the delay
with 1000 input and 200 output tokens of claude-haiku-4-5: exactly $0.002 by the shipped price
table. P worker processes (this file with `--worker`), each instrumented by `watcher.instrument()`
and started together, run T threads that call `messages.create` in `watcher.request_type("loop")`
until the hook raises `BudgetExceeded` (or a safety cap of 30 s or 20,000 calls per process
is hit), then flush their spans and exit. The bench waits until the daemon's spend equals calls x
$0.002 (every span ingested) and every alert delivery has settled, then prints calls, refusals,
spend at stop, overshoot past the kill line as % of the limit, alerts by kind (80%, kill, and
exhausted: calls refused for want of headroom, docs/enforcement.md) and calls/s.

Workers keep the hook's defaults (spans exported every 500 ms) but for WATCHER_KILLSWITCH_POLL_S=0.05,
a bearer token the daemon requires, and a spool in the run's scratch directory.
Modes: `baseline` runs the workers with WATCHER_ALLOWANCES=false (the flag-only kill switch),
`allowances` with WATCHER_ALLOWANCES=true (each process leases headroom and reserves each call's
worst case before sending).
Each call's body is consistent with its usage: a 3,200-character prompt (about 1,000 tokens at
3 characters a token) and max_tokens 256 (the reply's 200 output tokens stay within it).
Target (allowances, at every delay): spend at stop <= $1.21, one kill line plus 1% of the limit,
and the 80% alert delivered exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import anthropic

import watcher
from watcher.daemon._alerts import TITLES
from watcher.pricing import TokenUsage, default_price_table
from watcher.testing import DaemonProcess, FakeAnthropic, FakeReply

MODEL = "claude-haiku-4-5"
USAGE = {"input_tokens": 1000, "output_tokens": 200}
CALL_USD = Decimal("0.002")
LIMIT_USD = Decimal("1.00")
ALERT_AT, KILL_AT = Decimal("0.8"), Decimal("1.2")
TARGET_USD = KILL_AT * LIMIT_USD + Decimal("0.01") * LIMIT_USD
PROMPT = ("Count the words in this sentence and answer with the number only. " * 50)[:3200]
MAX_TOKENS = 256
MODES = {"baseline": "false", "allowances": "true"}
WORKER_SECONDS = 30.0
WORKER_MAX_CALLS = 20_000
SETTLE_S = 60.0


def call_cost() -> Decimal:
    """What one fake reply costs by the shipped price table; asserted to be CALL_USD, the figure the bench uses."""
    usage = TokenUsage(input_tokens=USAGE["input_tokens"], output_tokens=USAGE["output_tokens"])
    cost = default_price_table().cost(MODEL, usage).total_usd
    assert cost == CALL_USD, f"one reply costs ${cost}, not ${CALL_USD}: the price table changed"
    return cost


# --- the worker process ---------------------------------------------------------------------------


class Cap:
    """The per-process call cap, shared by the threads: `take()` is False once `limit` calls were started."""

    def __init__(self, limit: int) -> None:
        self._left, self._lock = limit, threading.Lock()

    def take(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left >= 0


@dataclass
class Tally:
    """One thread's outcome: calls answered, whether the hook refused it, calls that failed otherwise (by type)."""

    calls: int = 0
    refused: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def call_until_refused(client: anthropic.Anthropic, deadline: float, cap: Cap, tally: Tally) -> None:
    """Calls the API in request type `loop` until the hook refuses (counted once, then the thread stops),
    the deadline passes or the process's cap is spent. An API error is counted and the loop goes on."""
    with watcher.request_type("loop"):
        while time.monotonic() < deadline and cap.take():
            try:
                client.messages.create(
                    model=MODEL, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}]
                )
            except watcher.BudgetExceeded:
                tally.refused += 1
                return
            except anthropic.APIError as error:
                cause = f"({type(error.__cause__).__name__})" if error.__cause__ else ""
                tally.errors[type(error).__name__ + cause] += 1
                continue
            tally.calls += 1


def worker(base_url: str, threads: int) -> None:
    """One application process: instruments (settings from WATCHER_* in its environment), says `ready` on
    stdout, waits for `go` on stdin, runs `threads` threads, flushes its spans and prints its tallies as JSON."""
    watcher.instrument()
    client = anthropic.Anthropic(base_url=base_url, api_key="bench", max_retries=0)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    tallies = [Tally() for _ in range(threads)]
    cap, started = Cap(WORKER_MAX_CALLS), time.monotonic()
    deadline = started + WORKER_SECONDS
    pool = [threading.Thread(target=call_until_refused, args=(client, deadline, cap, t)) for t in tallies]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall_s = time.monotonic() - started
    flushed = watcher.flush(timeout_s=30.0)
    calls, refused = sum(t.calls for t in tallies), sum(t.refused for t in tallies)
    errors = sum((t.errors for t in tallies), Counter[str]())
    print(json.dumps({"calls": calls, "refused": refused, "errors": errors, "wall_s": wall_s, "flushed": flushed}))


# --- the bench process ----------------------------------------------------------------------------


class AlertSink:
    """A webhook for apprise's json:// target that counts deliveries by event kind (from their titles)."""

    def __init__(self) -> None:
        kinds = {title: kind for kind, title in TITLES.items()}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                title = json.loads(self.rfile.read(int(self.headers["content-length"]))).get("title", "")
                with sink._lock:
                    kind = kinds.get(title, title)
                    sink.counts[kind] = sink.counts.get(kind, 0) + 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.counts = {}

    def count(self, kind: str) -> int:
        with self._lock:
            return self.counts.get(kind, 0)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config(sink_url: str) -> str:
    """The daemon's config: the one budget and the sink as its only alert target."""
    return (
        f'[alerts]\nurls = ["{sink_url}"]\n\n'
        f'[[budgets]]\nname = "loop"\nlimit_usd = {LIMIT_USD}\nperiod = "day"\n'
        f'alert_at = {ALERT_AT}\nkill_at = {KILL_AT}\nscope = {{ request_type = "loop" }}\n'
    )


@dataclass
class Outcome:
    """One (mode, delay) run: the workers' tallies and what the daemon and the sink saw after they exited."""

    mode: str
    delay_ms: int
    calls: int
    refused: int
    errors: Counter[str]
    unflushed: int
    wall_s: float
    spend: Decimal
    settled: bool
    alerts: int
    kills: int
    exhausted: int

    @property
    def overshoot_pct(self) -> Decimal:
        """Spend past the kill line as % of the limit (negative: stopped before it)."""
        return (self.spend - KILL_AT * LIMIT_USD) / LIMIT_USD * 100

    def row(self) -> str:
        settled = "" if self.settled else "  (ledger short of the calls made)"
        errors = "".join(f"  {count} {name}" for name, count in self.errors.items())
        if self.unflushed:
            errors += f"  {self.unflushed} workers' flush timed out"
        return (
            f"{self.mode:10s} {self.delay_ms:5d} {self.calls:6d} {self.refused:7d}  ${self.spend:6.3f}"
            f" {self.overshoot_pct:+9.1f}% {self.alerts:6d} {self.kills:5d} {self.exhausted:5d}"
            f" {self.calls / self.wall_s:8.0f}"
            f"{settled}{errors}"
        )


HEADER = f"{'mode':10s} {'delay':>5s} {'calls':>6s} {'refused':>7s}  {'spend':>7s} {'overshoot':>10s} {'80%':>6s}"
HEADER += f" {'kill':>5s} {'exh.':>5s} {'calls/s':>8s}"


def budget(url: str, token: str) -> dict[str, Any]:
    """The `loop` budget as `/v1/budgets` shows it."""
    request = urllib.request.Request(f"{url}/v1/budgets", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return next(b for b in json.load(response)["budgets"] if b["name"] == "loop")


def settle(url: str, token: str, expected: Decimal) -> tuple[Decimal, bool]:
    """Polls until the budget's spend is `expected` (every span ingested); the last spend seen and whether it was."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        spend = Decimal(str(budget(url, token)["spend_usd"])).quantize(Decimal("0.000001"))
        if spend == expected or time.monotonic() > deadline:
            return spend, spend == expected
        time.sleep(0.05)


def alerts_settled(url: str, token: str, sink: AlertSink) -> None:
    """Polls until no delivery of the budget's events is pending and the sink has every delivered one."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        events = budget(url, token)["events"]
        states = [d["state"] for e in events for d in e["deliveries"]]
        delivered = sum(1 for e in events for d in e["deliveries"] if d["state"] == "delivered")
        if "pending" not in states and sum(sink.count(e["kind"]) for e in events) >= delivered:
            return
        time.sleep(0.05)


class Workers:
    """The worker processes of one run, started in `cwd` (no watcher.toml or .env there to read), their
    stderr in `cwd/workers.log`. A context manager: leaving it kills any worker still running."""

    def __init__(self, env: dict[str, str], base_url: str, args: argparse.Namespace, cwd: Path) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", base_url, "--threads", str(args.threads)]
        self.log_path = cwd / "workers.log"
        self._log = self.log_path.open("w")
        self.processes = [
            subprocess.Popen(
                command, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True
            )
            for _ in range(args.processes)
        ]

    def start_together(self) -> None:
        """Waits until every worker is instrumented and said `ready`, then tells them all `go`: no process's
        start-up (imports, instrumenting) eats into the others' calling time."""
        for process in self.processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                self.fail("a worker did not start")
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()

    def reports(self) -> list[dict[str, Any]]:
        """Each worker's JSON report, once it has exited."""
        timeout_s = WORKER_SECONDS + 60
        outputs = [process.communicate(timeout=timeout_s)[0] for process in self.processes]
        try:
            return [json.loads(output) for output in outputs]
        except ValueError:
            self.fail("a worker did not report")

    def fail(self, what: str) -> NoReturn:
        """Raises RuntimeError with the workers' stderr, which goes with the run's scratch directory."""
        self._log.flush()
        raise RuntimeError(f"{what}; the workers' stderr:\n{self.log_path.read_text()[-4000:]}")

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        self._log.close()


def run_once(mode: str, delay_ms: int, args: argparse.Namespace, fake: FakeAnthropic, sink: AlertSink) -> Outcome:
    """One fresh daemon and set of workers in `mode` with replies delayed `delay_ms`; the outcome once settled."""
    fake.default = FakeReply(model=MODEL, usage=USAGE, delay_s=delay_ms / 1000)
    sink.reset()
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="watcher-overshoot-") as scratch:
        work = Path(scratch)
        (work / "daemon").mkdir()
        os.environ["WATCHER_TOKEN"] = token  # DaemonProcess passes this process's environment on
        daemon = DaemonProcess(config(sink.url), state_dir=work / "daemon").start()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "WATCHER_", "ANTHROPIC_"))},
            "ANTHROPIC_OPEN_TELEMETRY": "false",
            "WATCHER_ENDPOINT": daemon.url,
            "WATCHER_TOKEN": token,
            "WATCHER_KILLSWITCH_POLL_S": "0.05",
            "WATCHER_SPOOL_DIR": str(work / "spool"),
            "WATCHER_ALLOWANCES": MODES[mode],
        }
        try:
            with Workers(env, fake.base_url, args, work) as workers:
                workers.start_together()
                reports = workers.reports()
            calls = sum(r["calls"] for r in reports)
            spend, settled = settle(daemon.url, token, calls * CALL_USD)
            alerts_settled(daemon.url, token, sink)
        finally:
            daemon.stop()
    return Outcome(
        mode,
        delay_ms,
        calls,
        sum(r["refused"] for r in reports),
        sum((Counter[str](r["errors"]) for r in reports), Counter[str]()),
        sum(1 for r in reports if not r["flushed"]),
        max(r["wall_s"] for r in reports),
        spend,
        settled,
        sink.count("alert"),
        sink.count("kill"),
        sink.count("exhausted"),
    )


def verdicts(outcomes: list[Outcome], delays: list[int]) -> list[str]:
    """A PASS/FAIL line per delay for the allowances mode, and mean spend at stop, allowances / baseline."""
    lines = []
    for delay in delays:
        mine = [o for o in outcomes if o.mode == "allowances" and o.delay_ms == delay]
        base = [o for o in outcomes if o.mode == "baseline" and o.delay_ms == delay]
        worst = max(o.spend for o in mine)
        spend_ok = worst <= TARGET_USD
        alerts_ok = all(o.alerts == 1 for o in mine)
        lines.append(
            f"{'PASS' if spend_ok else 'FAIL'}  {delay} ms: spend at stop <= ${TARGET_USD:.2f} (worst ${worst:.3f})"
        )
        lines.append(f"{'PASS' if alerts_ok else 'FAIL'}  {delay} ms: the 80% alert exactly once per run")
        mean_mine = statistics.mean(o.spend for o in mine)
        mean_base = statistics.mean(o.spend for o in base)
        lines.append(f"      {delay} ms: spend at stop, allowances / baseline = {mean_mine / mean_base:.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", default="0,200", help="reply delays to run, comma-separated (default 0,200)")
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=10, help="threads per process")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--worker", metavar="BASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return
    call_cost()
    delays = [int(d) for d in args.delay_ms.split(",")]
    total = args.processes * args.threads
    print(f"{total} threads in {args.processes} processes; ${LIMIT_USD}/day, kill at {KILL_AT}; ${CALL_USD} a call")
    print(HEADER, flush=True)
    outcomes: list[Outcome] = []
    sink, fake = AlertSink(), FakeAnthropic().start()
    try:
        for _ in range(args.runs):
            for delay in delays:
                for mode in MODES:
                    outcomes.append(run_once(mode, delay, args, fake, sink))
                    print(outcomes[-1].row(), flush=True)
    finally:
        fake.stop()
        sink.stop()
    print("\n".join(verdicts(outcomes, delays)))


if __name__ == "__main__":
    main()
