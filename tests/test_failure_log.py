"""The hook's failures stay visible: every one counted, logged at WARNING with counts, rate-limited per kind."""

from __future__ import annotations

import logging

import anthropic
import pytest

import watcher
from watcher._instrument._failures import FailureLog
from watcher.testing import FakeAnthropic, SpanCapture

HI = [{"role": "user", "content": "hi"}]


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failure(message: str = "SECRET prompt text") -> RuntimeError:
    """A raised (so located) error whose message stands for content that must never be logged."""
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        return exc


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    found = [(record.levelno, record.getMessage()) for record in caplog.records if record.name == "watcher"]
    caplog.clear()
    return found


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="watcher")
    return caplog


def test_repeated_failures_are_logged_at_warning_at_most_once_per_interval_with_counts(
    warnings: pytest.LogCaptureFixture,
) -> None:
    """The first failure is logged at once; repeats within the interval are counted and reported by the next line."""
    clock = Clock()
    failures = FailureLog(interval_s=60, clock=clock)
    failures.report("price a call", failure())
    [(level, first)] = lines(warnings)
    assert level == logging.WARNING
    assert "could not price a call (RuntimeError at " in first
    for _ in range(4):
        clock.now += 10
        failures.report("price a call", failure())
    assert lines(warnings) == []
    clock.now += 20  # 60 s after the first line
    failures.report("price a call", failure())
    [(level, summary)] = lines(warnings)
    assert level == logging.WARNING
    assert "5 more time(s) since the last report, 6 in total" in summary
    clock.now += 59
    failures.report("price a call", failure())
    assert lines(warnings) == []


def test_each_kind_of_failure_is_counted_and_limited_on_its_own(warnings: pytest.LogCaptureFixture) -> None:
    """A failure of one operation neither hides nor delays a failure of another."""
    failures = FailureLog(interval_s=60, clock=Clock())
    failures.report("price a call", failure())
    failures.report("read a stream event", failure())
    failures.report("read a stream event", failure())
    failures.report("price a call", KeyError("model"))  # another error type: another kind
    logged = lines(warnings)
    assert [message.split(" (")[0] for _, message in logged] == [
        "watcher could not price a call",
        "watcher could not read a stream event",
        "watcher could not price a call",
    ]
    assert "KeyError" in logged[2][1]


def test_flush_logs_the_failures_not_yet_logged_and_starts_afresh(warnings: pytest.LogCaptureFixture) -> None:
    """At shutdown the counts since the last line are not lost; a later failure is logged at once again."""
    failures = FailureLog(interval_s=60, clock=Clock())
    for _ in range(3):
        failures.report("price a call", failure())
    lines(warnings)
    failures.flush()
    [(level, summary)] = lines(warnings)
    assert level == logging.WARNING and "2 more time(s) since the last report, 3 in total" in summary
    failures.flush()
    assert lines(warnings) == []
    failures.report("price a call", failure())
    assert len(lines(warnings)) == 1


def test_failure_lines_never_carry_the_error_message(warnings: pytest.LogCaptureFixture) -> None:
    """Summaries, like first lines, name the error's type and place only: its message may quote content."""
    clock = Clock()
    failures = FailureLog(interval_s=1, clock=clock)
    for _ in range(3):
        failures.report("read a response", failure("SECRET-CONTENT"))
        clock.now += 1
    failures.flush()
    logged = lines(warnings)
    assert len(logged) == 3
    assert all("RuntimeError" in message and "SECRET" not in message for _, message in logged)


def test_a_recurring_pricing_failure_is_reported_at_warning_with_its_count(
    fake_api: FakeAnthropic, warnings: pytest.LogCaptureFixture
) -> None:
    """Three calls whose pricing fails give warnings that add up to three, not one warning and two debug lines."""

    class FailingPrices:
        def cost(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("price table exploded")

    watcher.instrument(tracer_provider=SpanCapture().provider, price_table=FailingPrices())  # type: ignore[arg-type]
    try:
        with anthropic.Anthropic(base_url=fake_api.base_url, api_key="k") as client:
            for _ in range(3):
                client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    finally:
        watcher.uninstrument()
    logged = [(level, message) for level, message in lines(warnings) if "record a cost span" in message]
    assert {level for level, _ in logged} == {logging.WARNING}
    assert "3 in total" in logged[-1][1]
