"""Period windows: calendar-aligned in the budget's zone, tiling time across DST gaps and folds."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.budgets import PERIODS, period_window

ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Pacific/Chatham",
    "UTC",
    "America/Santiago",
)
LENGTHS = {
    "hour": (timedelta(minutes=30), timedelta(hours=1)),
    "day": (timedelta(hours=23), timedelta(hours=25)),
    "week": (timedelta(days=7, hours=-1), timedelta(days=7, hours=1)),
    "month": (timedelta(days=28, hours=-1), timedelta(days=31, hours=1)),
}
MICRO = timedelta(microseconds=1)

zones = st.sampled_from(ZONES).map(ZoneInfo)
periods = st.sampled_from(PERIODS)
instants = st.datetimes(datetime(1990, 1, 1), datetime(2060, 12, 31), timezones=st.just(UTC))


def local(instant: datetime, zone: str) -> datetime:
    return instant.astimezone(ZoneInfo(zone))


def offset_changes_at(tz: ZoneInfo, instant: datetime) -> bool:
    return (instant - MICRO).astimezone(tz).utcoffset() != instant.astimezone(tz).utcoffset()


@given(periods, zones, instants)
def test_window_contains_the_instant_and_is_utc(period: str, tz: ZoneInfo, at: datetime) -> None:
    """The window of an instant contains it and is given as aware UTC datetimes."""
    start, end = period_window(period, tz, at)
    assert start <= at < end
    assert start.tzinfo is UTC and end.tzinfo is UTC


@given(periods, zones, instants)
def test_consecutive_windows_tile_time(period: str, tz: ZoneInfo, at: datetime) -> None:
    """The next window starts at this one's end and the previous one ends at its start."""
    window = period_window(period, tz, at)
    following = period_window(period, tz, window[1])
    assert following[0] == window[1] < following[1]
    assert period_window(period, tz, window[0] - MICRO)[1] == window[0]


@given(periods, zones, instants)
def test_window_starts_on_a_local_boundary_or_an_offset_change(period: str, tz: ZoneInfo, at: datetime) -> None:
    """A window starts at a local hour or midnight on the period's first day, unless the clock jumped there."""
    start = period_window(period, tz, at)[0]
    wall = start.astimezone(tz)
    on_boundary = wall.minute == wall.second == wall.microsecond == 0 and (period == "hour" or wall.hour == 0)
    assert on_boundary or offset_changes_at(tz, start)
    if period == "week":
        assert wall.weekday() == 0
    if period == "month":
        assert wall.day == 1


@given(periods, zones, instants)
def test_window_length_stays_within_a_dst_shift_of_nominal(period: str, tz: ZoneInfo, at: datetime) -> None:
    """A window is at most an hour longer or shorter than the nominal length of its period."""
    start, end = period_window(period, tz, at)
    shortest, longest = LENGTHS[period]
    assert shortest <= end - start <= longest


@given(periods, zones, instants, zones)
def test_window_does_not_depend_on_the_zone_of_the_instant(
    period: str, tz: ZoneInfo, at: datetime, other: ZoneInfo
) -> None:
    """The same instant expressed in another zone falls in the same window."""
    assert period_window(period, tz, at.astimezone(other)) == period_window(period, tz, at)


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Berlin", date(2026, 3, 29), 23),
        ("Europe/Berlin", date(2026, 10, 25), 25),
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("Australia/Lord_Howe", date(2026, 4, 5), 24.5),
        ("Australia/Lord_Howe", date(2026, 10, 4), 23.5),
        ("Europe/Berlin", date(2026, 6, 1), 24),
    ],
)
def test_day_windows_on_dst_changes_have_the_local_length(zone: str, day: date, hours: float) -> None:
    """A local day is 23 or 25 hours long (23.5 or 24.5 on Lord Howe) when the clocks change that day."""
    tz = ZoneInfo(zone)
    start, end = period_window("day", tz, datetime(day.year, day.month, day.day, 12, tzinfo=tz))
    assert end - start == timedelta(hours=hours)
    assert local(start, zone).date() == day


@pytest.mark.parametrize(
    ("zone", "day"),
    [("America/Sao_Paulo", date(2018, 11, 4)), ("America/Santiago", date(2026, 9, 6))],
)
def test_a_skipped_midnight_starts_the_day_at_the_first_instant_after_it(zone: str, day: date) -> None:
    """Where the clock jumps from 00:00 to 01:00, the day starts at 01:00 local and lasts 23 hours."""
    tz = ZoneInfo(zone)
    start, end = period_window("day", tz, datetime(day.year, day.month, day.day, 12, tzinfo=tz))
    assert local(start, zone).replace(tzinfo=None) == datetime(day.year, day.month, day.day, 1)
    assert end - start == timedelta(hours=23)


def test_hour_windows_in_berlin_repeat_the_hour_the_clocks_go_back() -> None:
    """On 2026-10-25 Berlin shows 02:00-03:00 twice; each pass is a one-hour window of its own."""
    tz = ZoneInfo("Europe/Berlin")
    first = period_window("hour", tz, datetime(2026, 10, 25, 0, 30, tzinfo=UTC))
    second = period_window("hour", tz, first[1])
    assert [w[1] - w[0] for w in (first, second)] == [timedelta(hours=1)] * 2
    assert [local(w[0], "Europe/Berlin").hour for w in (first, second)] == [2, 2]


@pytest.mark.parametrize(
    ("at_utc", "minutes"),
    [
        (datetime(2026, 4, 4, 14, 45, tzinfo=UTC), [60, 30, 60]),  # 02:00 +11 -> 01:30 +10:30
        (datetime(2026, 10, 3, 14, 45, tzinfo=UTC), [60, 30, 60]),  # 02:00 +10:30 -> 02:30 +11
    ],
)
def test_hour_windows_on_lord_howe_split_at_the_half_hour_shift(at_utc: datetime, minutes: list[int]) -> None:
    """Lord Howe's 30-minute DST shift leaves a 30-minute hour window between full ones."""
    tz = ZoneInfo("Australia/Lord_Howe")
    window, lengths = period_window("hour", tz, at_utc), []
    for _ in minutes:
        lengths.append((window[1] - window[0]) // timedelta(minutes=1))
        window = period_window("hour", tz, window[1])
    assert lengths == minutes


@pytest.mark.parametrize(("zone", "utc_minute"), [("Asia/Kolkata", 30), ("Pacific/Chatham", 15), ("UTC", 0)])
def test_hour_windows_align_to_local_hours_in_offset_zones(zone: str, utc_minute: int) -> None:
    """In zones with a fractional-hour offset, hour windows start on local, not UTC, hours."""
    start, end = period_window("hour", ZoneInfo(zone), datetime(2026, 1, 15, 8, 50, tzinfo=UTC))
    assert start.minute == utc_minute and local(start, zone).minute == 0
    assert end - start == timedelta(hours=1)


def test_week_windows_start_on_iso_monday() -> None:
    """New Year's Day 2026, a Thursday, belongs to the week starting Monday 2025-12-29."""
    tz = ZoneInfo("Europe/Berlin")
    start, end = period_window("week", tz, datetime(2026, 1, 1, 9, tzinfo=tz))
    assert local(start, "Europe/Berlin").replace(tzinfo=None) == datetime(2025, 12, 29)
    assert end - start == timedelta(days=7)


def test_month_windows_start_on_the_first_at_local_midnight() -> None:
    """March 2026 in Berlin runs from 1 March 00:00 CET to 1 April 00:00 CEST, not by UTC dates."""
    tz = ZoneInfo("Europe/Berlin")
    start, end = period_window("month", tz, datetime(2026, 3, 31, 21, 59, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 2, 28, 23, tzinfo=UTC), datetime(2026, 3, 31, 22, tzinfo=UTC))
    assert period_window("month", tz, datetime(2026, 3, 31, 22, tzinfo=UTC))[0] == end


def test_december_is_followed_by_january() -> None:
    """The month after December starts on 1 January of the next year."""
    tz = ZoneInfo("UTC")
    december = period_window("month", tz, datetime(2026, 12, 5, tzinfo=UTC))
    assert period_window("month", tz, december[1]) == (
        datetime(2027, 1, 1, tzinfo=UTC),
        datetime(2027, 2, 1, tzinfo=UTC),
    )


def test_naive_instant_is_refused() -> None:
    """A naive datetime is ambiguous, so period_window raises ValueError naming the fix."""
    with pytest.raises(ValueError, match="aware"):
        period_window("day", ZoneInfo("UTC"), datetime(2026, 1, 1))


def test_unknown_period_is_refused_with_the_valid_ones() -> None:
    """An unknown period raises ValueError listing hour, day, week and month."""
    with pytest.raises(ValueError, match="hour, day, week, month"):
        period_window("fortnight", ZoneInfo("UTC"), datetime(2026, 1, 1, tzinfo=UTC))
