"""Spend kept through daemon outages: calls recorded in the daemon's ledger against calls made, at 10 calls/s.

Usage: python bench/outage.py [--short] [--outage S] [--rate R] [--no-spool]

Starts `watcher serve` as its own process, a fake Anthropic API, and an application process
(`import watcher.auto`, the real SDK) that makes R calls per second (default 10) and writes the
response id of each call it made to a file; its spool is a fresh directory.
Outage 1: the daemon is SIGKILLed for S seconds (default 30; 3 with --short) while the app keeps
calling, then restarted on the same port and state directory.
Outage 2: the daemon is SIGKILLed again; halfway through, the app exits and a new app process
starts on the same spool; the daemon comes back at the end and the new app keeps calling.
The bench then stops the app, waits for the ledger to settle, and prints calls made, calls
recorded (their response ids in the ledger) and recorded / made, which must be 1.000, with how
long after each restart the ledger held every call made before it.
`--no-spool` runs the same with WATCHER_SPOOL_DIR empty: the figure without the spool.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from watcher.testing import DaemonProcess, FakeAnthropic

APP = """
import signal, sys, time
import anthropic, watcher.auto
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
client = anthropic.Anthropic(base_url=sys.argv[1], api_key="bench", max_retries=0)
interval = 1 / float(sys.argv[2])
with open(sys.argv[3], "a", buffering=1) as made:
    due = time.monotonic()
    while not stopping:
        reply = client.messages.create(model="claude-haiku-4-5", max_tokens=8,
                                       messages=[{"role": "user", "content": "hi"}])
        made.write(reply.id + "\\n")
        due += interval
        time.sleep(max(0.0, due - time.monotonic()))
"""


class Run:
    """The daemon, the fake API and the app processes of one bench run, in a scratch directory."""

    def __init__(self, work: Path, rate: float, spool: bool) -> None:
        self.work, self.rate = work, rate
        (work / "daemon").mkdir()
        self.daemon = DaemonProcess(state_dir=work / "daemon")
        self.fake = FakeAnthropic().start()
        self.made = work / "made.txt"
        self.log = (work / "apps.log").open("ab")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "WATCHER_", "ANTHROPIC_"))},
            "ANTHROPIC_OPEN_TELEMETRY": "false",
            "WATCHER_ENDPOINT": self.daemon.url,
            "WATCHER_SPOOL_DIR": str(work / "spool") if spool else "",
        }

    def app(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-c", APP, self.fake.base_url, str(self.rate), str(self.made)]
        return subprocess.Popen(command, env=self.env, stdout=self.log, stderr=self.log)

    def made_ids(self) -> set[str]:
        return set(self.made.read_text().split()) if self.made.exists() else set()

    def recorded_ids(self) -> set[str]:
        with sqlite3.connect(self.daemon.state_dir / "ledger.db") as db:
            return {row[0] for row in db.execute("SELECT response_id FROM entries")}

    def caught_up_after(self, made: set[str], since: float, limit_s: float) -> float | None:
        """Seconds from `since` until the ledger held every id in `made`; None if it did not within `limit_s`."""
        while time.monotonic() - since < limit_s:
            if made <= self.recorded_ids():
                return time.monotonic() - since
            time.sleep(0.1)
        return None

    def settle(self, limit_s: float = 120.0, quiet_s: float = 10.0) -> set[str]:
        """The ledger's ids once it holds every call made, or once it stopped growing for `quiet_s`."""
        made, started = self.made_ids(), time.monotonic()
        last, changed = self.recorded_ids(), time.monotonic()
        while time.monotonic() - started < limit_s and not made <= last and time.monotonic() - changed < quiet_s:
            time.sleep(0.2)
            now = self.recorded_ids()
            if now != last:
                last, changed = now, time.monotonic()
        return last

    def close(self) -> None:
        self.daemon.stop()
        self.fake.stop()
        self.log.close()


def stop(app: subprocess.Popen[bytes]) -> None:
    app.send_signal(signal.SIGTERM)
    app.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="3 s outages and short steady phases, for a quick run")
    parser.add_argument("--outage", type=float, help="seconds of each outage (default 30, or 3 with --short)")
    parser.add_argument("--rate", type=float, default=10.0, help="calls per second (default 10)")
    parser.add_argument("--no-spool", action="store_true", help="WATCHER_SPOOL_DIR empty: the figure without it")
    args = parser.parse_args()
    down = args.outage or (3.0 if args.short else 30.0)
    steady = 2.0 if args.short else 5.0
    with tempfile.TemporaryDirectory(prefix="watcher-outage-") as scratch:
        run = Run(Path(scratch), args.rate, spool=not args.no_spool)
        run.daemon.start()
        try:
            figures = scenario(run, down, steady)
            recorded, made = run.settle(), run.made_ids()
        finally:
            run.close()
    spool = "off" if args.no_spool else "on"
    print(f"{len(made)} calls made at {args.rate:g}/s through two {down:g} s outages, spool {spool}")
    for name, lag in figures:
        print(f"  {name}: ledger complete {f'{lag:.1f} s' if lag is not None else 'never'} after the daemon answered")
    print(f"recorded {len(recorded & made)} of {len(made)}: recorded / made = {len(recorded & made) / len(made):.3f}")
    if recorded - made:
        print(f"  and {len(recorded - made)} entries for calls never made")


def scenario(run: Run, down: float, steady: float) -> list[tuple[str, float | None]]:
    """The two outages; for each, how long after the restart the ledger held every call made before it."""
    limit_s = max(20.0, down)
    first = run.app()
    time.sleep(steady)
    print(f"  outage 1: daemon killed for {down:g} s, the app keeps calling", flush=True)
    run.daemon.kill()
    time.sleep(down)
    run.daemon.start()
    lags = [("outage 1", run.caught_up_after(run.made_ids(), time.monotonic(), limit_s))]
    time.sleep(steady)
    print(f"  outage 2: daemon killed for {down:g} s, the app exits halfway and a new one starts", flush=True)
    run.daemon.kill()
    time.sleep(down / 2)
    stop(first)
    second = run.app()
    time.sleep(down / 2)
    run.daemon.start()
    lags.append(("outage 2", run.caught_up_after(run.made_ids(), time.monotonic(), limit_s)))
    time.sleep(steady)
    stop(second)
    return lags


if __name__ == "__main__":
    main()
