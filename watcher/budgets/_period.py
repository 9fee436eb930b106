"""Budget periods: the calendar-aligned [start, end) window of local time that contains an instant."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo

__all__ = ["PERIODS", "Period", "Window", "period_window"]

Period = Literal["hour", "day", "week", "month"]
PERIODS: tuple[Period, ...] = get_args(Period)
Window = tuple[datetime, datetime]
"""A half-open [start, end) span of time as two aware UTC datetimes."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_HOUR = timedelta(hours=1)


def period_window(period: str, tz: ZoneInfo, at: datetime) -> Window:
    """The [start, end) window of ``period`` in ``tz`` that contains ``at``, as aware UTC datetimes.

    Pure; raises ``ValueError`` for a naive ``at`` or a period not in ``PERIODS``. ``at`` may be
    in any timezone. Windows start at a local hour, local midnight, Monday 00:00 local (ISO
    week) or the 1st of the month 00:00 local, so a local day may last 23 or 25 hours.
    A local midnight that does not exist (a DST gap) is replaced by the first instant after
    it; one that occurs twice means its first occurrence. Hour windows also break wherever the
    UTC offset changes, so a repeated local hour is a window of its own and a 30-minute shift
    yields a 30-minute window. Consecutive windows tile time: the window of this one's end
    starts where this one ends.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"at={at!r} is naive; pass an aware datetime, e.g. datetime.now(UTC)")
    if period == "hour":
        return _hour_window(tz, at.astimezone(UTC))
    if period in PERIODS:
        return _calendar_window(period, tz, at.astimezone(UTC))
    raise ValueError(f"unknown period {period!r}; use one of: {', '.join(PERIODS)}")


def _hour_window(tz: ZoneInfo, at: datetime) -> Window:
    """The stretch around ``at`` in which the local clock shows the same hour at the same offset."""
    local = at.astimezone(tz)
    offset = _offset(tz, at)
    start = local.replace(minute=0, second=0, microsecond=0, tzinfo=None) - offset
    start = start.replace(tzinfo=UTC)
    end = start + _HOUR
    if _offset(tz, start) != offset:
        start = _first_change(tz, start, at)
    if _offset(tz, end) != offset:
        end = _first_change(tz, at, end)
    return start, end


def _calendar_window(period: str, tz: ZoneInfo, at: datetime) -> Window:
    """The day, week or month window containing ``at``, bounded by first local midnights."""
    label = _floor(period, at.astimezone(tz).date())
    start, end = _midnight(tz, label), _midnight(tz, _step(period, label))
    while at >= end:  # only when a clock set back across midnight shows yesterday's date again
        label = _step(period, label)
        start, end = end, _midnight(tz, _step(period, label))
    return start, end


def _floor(period: str, day: date) -> date:
    """The first local date of the day, ISO week or month containing ``day``."""
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def _step(period: str, first: date) -> date:
    """The first local date of the period after the one starting on ``first``."""
    if period == "week":
        return first + timedelta(days=7)
    if period == "month":
        return date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first + timedelta(days=1)


def _midnight(tz: ZoneInfo, day: date) -> datetime:
    """The first instant at which the local clock in ``tz`` reads ``day`` 00:00 or later."""
    wall = datetime(day.year, day.month, day.day)
    early = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if early.astimezone(tz).replace(tzinfo=None) == wall:
        return early  # exists; fold=0 is the first of two occurrences
    late = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = sorted((early, late))  # the gap's transition lies in (low, high]
    return _first_change(tz, low, high)


def _first_change(tz: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The earliest whole second in (low, high] at which the offset differs from that at ``low``.

    Requires the offsets at ``low`` and ``high`` to differ. Offset transitions fall on whole
    seconds, so a bisection over seconds finds one exactly.
    """
    before = _offset(tz, low)
    lo, hi = (low - _EPOCH) // _SECOND, -((_EPOCH - high) // _SECOND)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(tz, _EPOCH + mid * _SECOND) == before:
            lo = mid
        else:
            hi = mid
    return _EPOCH + hi * _SECOND


def _offset(tz: ZoneInfo, instant: datetime) -> timedelta:
    """The UTC offset of ``tz`` at ``instant``."""
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset
