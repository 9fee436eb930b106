"""Helpers several test modules share: HTTP to a local daemon, its metrics, polling for a condition, a broken ledger."""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def http(url: str, data: bytes | None = None, token: str | None = None, **headers: str) -> tuple[int, bytes]:
    """(status, body) of a GET, or of a POST when `data` is given; an HTTP error status is returned, not raised."""
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def metrics_text(base_url: str, token: str | None = None) -> str:
    """The daemon's `/metrics` exposition; AssertionError unless it answers 200."""
    status, body = http(f"{base_url}/metrics", token=token)
    assert status == 200, (status, body[:200])
    return body.decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` with exactly `labels` in the exposition `text`; KeyError when absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    raise KeyError(f"{name}{labels}")


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    """Polls `condition` until it returns something truthy and returns that: for processes that send no event
    to wait on. AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def corrupt_a_page_of_entries(path: Path) -> None:
    """Overwrites the root page of the entries table in the (closed, checkpointed) file with 0xff bytes."""
    with sqlite3.connect(path) as raw:
        (root,) = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'entries'").fetchone()
        (size,) = raw.execute("PRAGMA page_size").fetchone()
    raw.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * size : root * size] = b"\xff" * size
    path.write_bytes(bytes(data))


def race(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Runs `work(i)` for i in range(count) on that many threads released together; their results in order."""
    gate = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = work(i)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
