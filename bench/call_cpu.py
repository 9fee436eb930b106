"""CPU per call of the whole application process, bare SDK against watcher with and without allowances.

Usage: python bench/call_cpu.py [--calls N] [--rounds R] [--stream] [--warmup W]

What the user pays is the CPU of the whole process, background threads included (the span
worker, the batch exporter, the kill-switch poller, the allowance refiller), so every mode runs
in a process of its own: alternating clients in one process would hide the background work of
the instrumented one in the bare one's figures. The fake Anthropic API runs in one process and a
real `watcher serve` in another, with one budget `bench` of $1,000,000 a day scoped to request
type `bench`: far from its line, so allowances are active but never short.

Per round, a worker process (this file with `--worker MODE`) per mode makes W warm-up calls and
a full garbage collection (start-up leaves a debt that the first full collection pays, some
100 ms here: it would land in the window of whichever mode allocates most, although every
process pays it once), then N sequential `messages.create` calls (streamed with `--stream`) and
a final `watcher.flush()`, and reports `time.process_time()` over them (user + system CPU of
every thread), the wall time and the time the garbage collector ran. Modes:

- `bare`: the SDK alone, its own tracing off (ANTHROPIC_OPEN_TELEMETRY=false);
- `empty`: the SDK with a middleware that only passes the call on: the part of watcher's cost that is
  the SDK's own middleware path rather than watcher's;
- `watcher`: instrumented, allowances off (WATCHER_ALLOWANCES=false), calls in request type `bench`;
- `allowances`: instrumented, allowances on, calls in request type `bench` (each reserves its worst case);
- `uncovered`: allowances on, calls in request type `other`, which no budget covers.

Rounds alternate the order of the modes (forwards, then backwards), so drift in the machine's
load falls on all alike. Prints per mode the median over rounds of CPU us per call (with the
spread over rounds), split into the calling thread (`time.thread_time()`: the SDK's work and the
hook's on the call path, and the final flush's draining) and the background threads (the rest),
the wall us per call, the CPU each mode adds to `bare` and the ratio; then the target: with
allowances, under 100 us of CPU added per call; and what allowances cost far from the line
(allowances - watcher), which should be small. On a shared machine the figures move by some
tens of us from run to run: compare modes within one run, and use more rounds to settle them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = ("bare", "empty", "watcher", "allowances", "uncovered")
TARGET_US = 100.0
MODEL = "claude-haiku-4-5"
HI = [{"role": "user", "content": "hi"}]
CONFIG = (
    '[[budgets]]\nname = "bench"\nlimit_usd = 1000000\nperiod = "day"\nkill_at = 1.0\n'
    'scope = { request_type = "bench" }\n'
)
FAKE_API = """
import sys
from watcher.testing import FakeAnthropic
fake = FakeAnthropic().start()
print(fake.base_url, flush=True)
sys.stdin.read()
"""


# --- the worker process ---------------------------------------------------------------------------


def worker(mode: str, base_url: str, calls: int, warmup: int, stream: bool) -> None:
    """One application process in `mode`: warms up, then prints a JSON line with the CPU and wall time of
    `calls` calls and the flush that exports their spans, and the budgets this process holds a grant for."""
    os.environ["ANTHROPIC_OPEN_TELEMETRY"] = "false"
    import anthropic

    import watcher

    if mode not in ("bare", "empty"):
        watcher.instrument()
    middleware = [passthrough] if mode == "empty" else None
    client = anthropic.Anthropic(base_url=base_url, api_key="bench", max_retries=0, middleware=middleware)
    assert bool(client.middleware) == (mode != "bare"), "the client is not instrumented as the mode says"

    def call() -> None:
        if stream:
            for _ in client.messages.create(model=MODEL, max_tokens=16, messages=HI, stream=True):  # type: ignore[arg-type]
                pass
        else:
            client.messages.create(model=MODEL, max_tokens=16, messages=HI)  # type: ignore[arg-type]

    with watcher.request_type("other" if mode == "uncovered" else "bench"):
        for _ in range(warmup):
            call()
        flushed = watcher.flush(timeout_s=30.0)
        gc.collect()  # start-up's garbage, collected in every mode alike: not charged to the first full collection
        collecting = GCTime().start()
        wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
        for _ in range(calls):
            call()
        flushed = watcher.flush(timeout_s=30.0) and flushed
        main, cpu, wall = time.thread_time() - main, time.process_time() - cpu, time.perf_counter() - wall
        collecting.stop()
    result: dict[str, Any] = {"cpu_s": cpu, "main_s": main, "wall_s": wall, "gc_s": collecting.seconds}
    result.update(flushed=flushed, grants=_grants())
    print(json.dumps(result), flush=True)
    watcher.uninstrument()


class GCTime:
    """The wall time the cyclic garbage collector spends, on any thread, while started (gc callbacks)."""

    def __init__(self) -> None:
        self.seconds, self._since = 0.0, 0.0

    def start(self) -> GCTime:
        gc.callbacks.append(self._phase)
        return self

    def stop(self) -> None:
        gc.callbacks.remove(self._phase)

    def _phase(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._since = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._since


def passthrough(request: Any, call_next: Any) -> Any:
    """An empty middleware: what the SDK's middleware path costs, before watcher does anything."""
    return call_next(request)


def _grants() -> list[str]:
    """The budgets this process holds an allowance grant for: proof that the `allowances` mode reserved."""
    from watcher._instrument._middleware import _active

    allowances = _active.hook.allowances if _active.hook else None
    session = allowances._session if allowances else None
    return sorted(session.grants) if session else []


# --- the bench process ----------------------------------------------------------------------------


def run_worker(mode: str, base_url: str, env: dict[str, str], args: argparse.Namespace, cwd: Path) -> dict[str, Any]:
    """Runs one worker process in `mode` and returns its report; raises RuntimeError if it failed."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--base-url", base_url]
    command += ["--calls", str(args.calls), "--warmup", str(args.warmup)] + (["--stream"] if args.stream else [])
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the {mode} worker failed:\n{done.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not report["flushed"]:
        raise RuntimeError(f"the {mode} worker's flush timed out: its CPU figure misses export work")
    expected = ["bench"] if mode == "allowances" else []
    if report["grants"] != expected:
        raise RuntimeError(f"the {mode} worker held grants for {report['grants']}, expected {expected}")
    return report


def worker_env(daemon_url: str, token: str, mode: str, scratch: Path) -> dict[str, str]:
    """The worker's environment: this one without OTEL_/WATCHER_/ANTHROPIC_ variables, plus the daemon's
    address and token, a spool in the scratch directory, the SDK's tracing off and the mode's allowances."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "WATCHER_", "ANTHROPIC_"))}
    return {
        **keep,
        "ANTHROPIC_OPEN_TELEMETRY": "false",
        "WATCHER_ENDPOINT": daemon_url,
        "WATCHER_TOKEN": token,
        "WATCHER_SPOOL_DIR": str(scratch / "spool"),
        "WATCHER_ALLOWANCES": "false" if mode == "watcher" else "true",
    }


def per_call_us(reports: list[dict[str, Any]], key: str, calls: int) -> float:
    """The median over rounds of `key` (seconds over the measured calls), in us per call."""
    return float(statistics.median(r[key] for r in reports)) / calls * 1e6


def report(results: dict[str, list[dict[str, Any]]], calls: int) -> list[str]:
    """The table and the verdict lines from every round's reports.

    `CPU` is the whole process; `main` the calling thread alone (the hook's work on the call path,
    and the SDK's); `background` the rest (span worker, exporter, poller, refiller: CPU minus main);
    `gc` the time the cyclic garbage collector ran, on whichever thread (part of the CPU figures).
    """
    cpu = {mode: per_call_us(reports, "cpu_s", calls) for mode, reports in results.items()}
    main = {mode: per_call_us(reports, "main_s", calls) for mode, reports in results.items()}
    wall = {mode: per_call_us(reports, "wall_s", calls) for mode, reports in results.items()}
    collecting = {mode: per_call_us(reports, "gc_s", calls) for mode, reports in results.items()}
    lines = [
        f"{'mode':11s} {'CPU us/call':>11s} {'min-max':>11s} {'main':>7s} {'background':>10s} {'gc':>5s}"
        f" {'wall us':>8s} {'added CPU':>9s} {'ratio':>6s}"
    ]
    for mode, reports in results.items():
        low, high = (f(r["cpu_s"] for r in reports) / calls * 1e6 for f in (min, max))
        added = "" if mode == "bare" else f" {cpu[mode] - cpu['bare']:+9.1f} {cpu[mode] / cpu['bare']:6.3f}"
        lines.append(
            f"{mode:11s} {cpu[mode]:11.1f} {f'{low:.0f}-{high:.0f}':>11s} {main[mode]:7.1f}"
            f" {cpu[mode] - main[mode]:10.1f} {collecting[mode]:5.1f} {wall[mode]:8.1f}{added}"
        )
    added_us = cpu["allowances"] - cpu["bare"]
    verdict = "PASS" if added_us < TARGET_US else "FAIL"
    lines.append(f"{verdict}  added CPU per call with allowances: {added_us:.1f} us (target < {TARGET_US:.0f} us)")
    lines.append(
        f"      allowances - watcher (allowances far from the line): {cpu['allowances'] - cpu['watcher']:+.1f} us"
    )
    if "empty" in cpu:
        lines.append(f"      of which the SDK's middleware path (empty - bare): {cpu['empty'] - cpu['bare']:+.1f} us")
    return lines


def run_rounds(
    modes: list[str], args: argparse.Namespace, base_url: str, daemon_url: str, token: str, work: Path
) -> None:
    """Runs a worker per mode per round, forwards in even rounds and backwards in odd ones, then prints the table."""
    kind = "streamed" if args.stream else "plain"
    print(f"{args.calls} {kind} calls per worker after {args.warmup} warm-up, {args.rounds} rounds", flush=True)
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for index in range(args.rounds):
        for mode in modes if index % 2 == 0 else modes[::-1]:
            env = worker_env(daemon_url, token, mode, work)
            results[mode].append(run_worker(mode, base_url, env, args, work))
            print(f"  round {index + 1} {mode:11s} {results[mode][-1]['cpu_s'] / args.calls * 1e6:7.1f} us", flush=True)
    print("\n".join(report(results, args.calls)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1500, help="measured calls per worker process")
    parser.add_argument("--rounds", type=int, default=5, help="worker processes per mode, in alternating order")
    parser.add_argument("--warmup", type=int, default=200, help="calls before the measured ones")
    parser.add_argument("--stream", action="store_true", help="streamed calls instead of plain ones")
    parser.add_argument("--modes", default=",".join(MODES), help="modes to run (bare, watcher and allowances at least)")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.base_url, args.calls, args.warmup, args.stream)
        return
    modes = [m for m in args.modes.split(",") if m]
    if not {"bare", "watcher", "allowances"} <= set(modes) <= set(MODES):
        parser.error(f"--modes must name bare, watcher and allowances, and only modes of {', '.join(MODES)}")
    from watcher.testing import DaemonProcess

    token = secrets.token_hex(16)
    fake = subprocess.Popen([sys.executable, "-c", FAKE_API], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    with tempfile.TemporaryDirectory(prefix="watcher-call-cpu-") as scratch:
        work = Path(scratch)
        (work / "daemon").mkdir()
        os.environ["WATCHER_TOKEN"] = token  # DaemonProcess passes this process's environment on
        daemon = DaemonProcess(CONFIG, state_dir=work / "daemon").start()
        try:
            assert fake.stdout is not None
            run_rounds(modes, args, fake.stdout.readline().strip(), daemon.url, token, work)
        finally:
            daemon.stop()
            if fake.stdin is not None:
                fake.stdin.close()
            fake.wait(timeout=10)


if __name__ == "__main__":
    main()
