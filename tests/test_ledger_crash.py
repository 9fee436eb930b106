"""A real crash: a process appending to the ledger is SIGKILLed; every acknowledged batch survives."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO

import pytest

import watcher.ledger
from watcher.ledger import Entry, Scope, SqliteLedger, open_ledger

T0 = datetime(2025, 6, 1, tzinfo=UTC)
SIZE = 64
HERE = str(Path(__file__).parent)
# The child needs only watcher.ledger: a bare `watcher` package object skips watcher/__init__.py
# (which imports the anthropic SDK), so the child starts in well under a second.
CHILD = """
import sys, types
package = types.ModuleType("watcher")
package.__path__ = [{package!r}]
sys.modules["watcher"] = package
sys.path.insert(0, {tests!r})
import test_ledger_crash
test_ledger_crash.run_child({url!r})
"""


def crash_batch(n: int) -> list[Entry]:
    """Batch `n`: SIZE entries in minute `n` after T0, each costing a distinct number of nano-dollars."""
    when = T0 + timedelta(minutes=n)
    return [
        Entry.of(f"b{n}-{i}", when, "api", "prod", "chat", "claude-sonnet-4-5", cost_usd=batch_cost(n, i), rank=2)
        for i in range(SIZE)
    ]


def batch_cost(n: int, i: int) -> Decimal:
    return Decimal(n * SIZE + i + 1).scaleb(-9)


def run_child(url: str) -> None:
    """The child's loop: append batch after batch, printing each number once append() has returned."""
    ledger = open_ledger(url)
    for n in range(1_000_000):
        ledger.append(crash_batch(n))
        print(n, flush=True)


def read_ack(stdout: IO[str]) -> int:
    line = stdout.readline()
    assert line, "the child exited before acknowledging a batch"
    return int(line)


@pytest.mark.parametrize("acks", [1, 9])
def test_acknowledged_batches_survive_sigkill_and_a_full_retry_adds_nothing_twice(tmp_path: Path, acks: int) -> None:
    """After kill -9, acknowledged batches are all there, whole; re-sending every batch stores only the missing."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    code = CHILD.format(package=str(Path(watcher.ledger.__file__).parents[1]), tests=HERE, url=url)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            acknowledged = [read_ack(child.stdout) for _ in range(acks)]
        finally:
            child.kill()  # SIGKILL, while the child is appending further batches
    assert child.returncode == -9
    assert acknowledged == list(range(acks))

    with SqliteLedger(tmp_path / "ledger.db") as ledger:
        present = [n for n in range(acks + 1000) if ledger.spend(Scope(), minute(n), minute(n + 1))]
        stored = len(present)
        assert present == list(range(stored)) and stored >= acks, "a hole, or an acknowledged batch lost"
        for n in present:  # each batch committed whole or not at all, each entry once
            assert ledger.spend(Scope(), minute(n), minute(n + 1)) == sum(batch_cost(n, i) for i in range(SIZE))
        assert ledger.count() == stored * SIZE

        retried = [ledger.append(crash_batch(n)) for n in range(stored + 1)]
        assert sum(r.duplicates for r in retried) == stored * SIZE
        assert sum(r.inserted for r in retried) == SIZE and all(r.upgraded == 0 for r in retried)
        everything = sum(batch_cost(n, i) for n in range(stored + 1) for i in range(SIZE))
        assert ledger.spend(Scope(), T0, minute(stored + 1)) == everything


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)
