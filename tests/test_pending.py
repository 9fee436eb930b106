"""The queue between calls and span building loses nothing and keeps the call path to an append."""

from __future__ import annotations

import threading

import pytest

from watcher._instrument._pending import Pending


def test_the_worker_records_queued_items_without_anyone_draining() -> None:
    """Items put on the queue are processed by the background worker on its own."""
    done = threading.Event()
    seen: list[int] = []

    def work(item: int) -> None:
        seen.append(item)
        if len(seen) == 3:
            done.set()

    pending = Pending(work, interval_s=0.01)
    for item in range(3):
        pending.put(item)
    assert done.wait(5), "the worker never processed the queue"
    pending.stop()
    assert seen == [0, 1, 2]


def test_put_does_no_work_on_the_callers_thread_until_drained() -> None:
    """`put` only queues; `drain` does every waiting item, in order, in the calling thread."""
    threads: list[str] = []
    pending = Pending(lambda item: threads.append(threading.current_thread().name), interval_s=3600)
    pending.put(1)
    pending.put(2)
    assert threads == []
    pending.drain()
    assert threads == [threading.current_thread().name] * 2
    pending.stop()


def test_a_full_queue_does_the_work_inline_instead_of_dropping_spend() -> None:
    """Past `max_items` waiting, `put` records the item at once: nothing is ever dropped."""
    seen: list[int] = []
    pending = Pending(seen.append, interval_s=3600, max_items=2)
    for item in range(5):
        pending.put(item)
    assert sorted(seen) == [2, 3, 4]
    pending.stop()
    assert sorted(seen) == [0, 1, 2, 3, 4]


def test_a_failing_item_is_logged_and_the_rest_are_still_recorded(caplog: pytest.LogCaptureFixture) -> None:
    """One bad item does not stop the queue."""
    seen: list[int] = []

    def work(item: int) -> None:
        if item == 1:
            raise RuntimeError("boom")
        seen.append(item)

    pending = Pending(work, interval_s=3600)
    for item in range(3):
        pending.put(item)
    pending.stop()
    assert seen == [0, 2]
    assert "could not record a queued span" in caplog.text


class _WorkClock:
    """A clock that moves only when an item is worked on: each item takes `per_item_s`."""

    def __init__(self, per_item_s: float) -> None:
        self.now, self.per_item_s = 0.0, per_item_s

    def __call__(self) -> float:
        return self.now

    def work(self, item: int) -> None:
        self.now += self.per_item_s


def test_the_worker_lets_go_of_the_gil_once_per_slice_of_work_not_after_every_item() -> None:
    """A yielding drain pauses each time `slice_s` of work has passed since the last pause: a waiting
    application thread gets the GIL within about a slice, without a hand-over per span."""
    clock = _WorkClock(per_item_s=0.0002)
    done: list[int] = []
    paused_after: list[int] = []

    def work(item: int) -> None:
        clock.work(item)
        done.append(item)

    pending = Pending(work, interval_s=3600, slice_s=0.0005, clock=clock, pause=lambda: paused_after.append(len(done)))
    for item in range(10):
        pending.put(item)
    pending.drain(yielding=True)
    assert done == list(range(10))
    assert paused_after == [3, 6, 9]  # 0.6 ms, then 0.6 ms after each pause: a slice each time
    pending.stop()


def test_a_drain_by_the_application_never_pauses() -> None:
    """`flush()` and exit drain without yielding: the caller wants the work done, not shared."""
    clock = _WorkClock(per_item_s=0.001)
    pauses: list[None] = []
    pending = Pending(clock.work, interval_s=3600, slice_s=0.0005, clock=clock, pause=lambda: pauses.append(None))
    for item in range(5):
        pending.put(item)
    pending.drain()
    assert clock.now == pytest.approx(0.005)
    assert pauses == []
    pending.stop()
