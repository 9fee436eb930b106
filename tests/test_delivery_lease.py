"""Daemons sharing one state store deliver each event once: only the holder of its delivery lease sends it, and
when that daemon dies another takes over once the lease expires, sending only to the targets still pending.

Every test runs on two stores of one SQLite file (daemons on one machine) and of one PostgreSQL database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _postgres import fresh_database
from _support import race

from watcher.daemon import BudgetEvent, Delivery, Dispatcher, StateStorage, StateStore

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
T0_US = int(T0.timestamp() * 1_000_000)
LEASE_S = 60.0


@dataclass
class Places:
    """Opens stores on one shared place, as each daemon of a fleet does; closes them all at the end."""

    name: str
    make: Callable[[], StateStorage]
    raw: Callable[[str], None]
    opened: list[StateStorage] = field(default_factory=list)

    def open(self) -> StateStorage:
        store = self.make()
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgres"])
def places(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Places]:
    with fresh_database() if request.param == "postgres" else nullcontext(None) as url:
        if url is None:
            path = tmp_path / "state.db"

            def raw_sqlite(sql: str) -> None:
                with closing(sqlite3.connect(path, isolation_level=None)) as db:
                    db.executescript(sql)

            chosen = Places("sqlite", lambda: StateStore(path), raw_sqlite)
        else:
            import psycopg

            from watcher.daemon._state_postgres import PostgresStateStore

            def raw_postgres(sql: str) -> None:
                with psycopg.connect(url, autocommit=True) as db:
                    db.execute(sql.encode())

            chosen = Places("postgres", lambda: PostgresStateStore(url, max_connections=4), raw_postgres)
        try:
            yield chosen
        finally:
            for store in chosen.opened:
                store.close()


class Time:
    """One clock the daemons share: `mono` seconds since T0, read monotonic by retries and as UTC by leases."""

    def __init__(self) -> None:
        self.mono = 0.0

    def __call__(self) -> float:
        return self.mono

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.mono)


class Target:
    """An alert target that records every message it accepts; `works` False makes it refuse (a failed attempt)."""

    def __init__(self, works: bool = True) -> None:
        self.works = works
        self.tries = 0
        self.received: list[str] = []

    def send(self, title: str, body: str) -> bool:
        self.tries += 1
        if self.works:
            self.received.append(body)
        return self.works


@dataclass
class Daemon:
    """One daemon's store, dispatcher and targets (`mail` and `chat`)."""

    store: StateStorage
    dispatcher: Dispatcher
    mail: Target
    chat: Target

    def run(self, time: Time, seconds: float, step_s: float = 1.0) -> None:
        """Lets `seconds` pass in steps, ticking and delivering at each, as the dispatcher's thread does."""
        end = time.mono + seconds
        while time.mono < end:
            self.dispatcher.tick()
            self.dispatcher.deliver_due()
            time.mono += step_s


def daemon(places: Places, time: Time, *, mail: bool = True, chat: bool = True, retry_s: float = 1.0) -> Daemon:
    """A daemon on the shared store whose targets work (or refuse) as told; retries `retry_s` apart, all but
    endless."""
    store = places.open()
    targets = Target(mail), Target(chat)
    dispatcher = Dispatcher(
        {"mail": targets[0], "chat": targets[1]},
        store,
        base_delay_s=retry_s,
        max_delay_s=retry_s,
        max_attempts=10_000,
        lease_s=LEASE_S,
        clock=time,
        wall_clock=time.wall,
    )
    return Daemon(store, dispatcher, *targets)


def event(budget: str = "daily", kind: str = "kill") -> BudgetEvent:
    return BudgetEvent(budget, T0, kind, T0, f"{budget} {kind}")


def states(store: StateStorage, budget: str = "daily") -> dict[str, tuple[str, int]]:
    [record] = store.events(budget, T0)
    return {d.target: (d.state, d.attempts) for d in record.deliveries}


def crossed(first: Daemon) -> BudgetEvent:
    """`first` records a budget crossing and submits it, as its books do: it claims the event's lease."""
    crossing = event()
    assert first.store.record(crossing)
    first.dispatcher.submit(crossing)
    return crossing


# --- the store's lease --------------------------------------------------------------------------------


def test_a_lease_is_held_by_one_owner_until_it_expires_then_anyone_may_take_it(places: Places) -> None:
    """`claim` is True for a free lease, False for another owner's live one, True again once it expired;
    the old owner can no longer `renew` it; `claimable` lists free and expired unsettled events, oldest first."""
    one, two = places.open(), places.open()
    first, second = event("a"), event("b")
    assert one.record(first) and one.record(second)
    assert one.claimable(T0_US) == [first, second]
    assert one.claim(first, "one", T0_US + 60, T0_US)
    assert not two.claim(first, "two", T0_US + 60, T0_US + 59), "another owner's lease still runs"
    assert two.claimable(T0_US + 59) == [second]
    assert one.renew(first, "one", T0_US + 120)
    assert not two.claim(first, "two", T0_US + 180, T0_US + 119)
    assert two.claimable(T0_US + 120) == [first, second]
    assert two.claim(first, "two", T0_US + 180, T0_US + 120), "an expired lease is anyone's"
    assert not one.renew(first, "one", T0_US + 240), "the old owner lost it"
    one.release(first, "one")
    assert two.claimable(T0_US + 121) == [second], "a release by a daemon that lost the lease changes nothing"
    two.release(first, "two")
    assert one.claimable(T0_US + 121) == [first, second]
    one.settle(second)
    assert one.claimable(T0_US + 121) == [first]
    assert not one.claim(second, "one", T0_US + 300, T0_US + 121), "a settled event is nobody's to deliver"


def test_a_store_of_the_previous_schema_gains_leases_and_keeps_its_unsettled_events(places: Places) -> None:
    """The migration adds the lease to every event: an event stored before it has a free lease."""
    old = places.open()
    assert old.record(event())
    old.close()
    places.opened.remove(old)
    if places.name == "sqlite":
        places.raw(
            "ALTER TABLE budget_events DROP COLUMN lease_owner; ALTER TABLE budget_events DROP COLUMN lease_until_us;"
            "PRAGMA user_version = 2;"
        )
    else:
        places.raw(
            "ALTER TABLE budget_events DROP COLUMN lease_owner, DROP COLUMN lease_until_us;"
            "UPDATE state_schema_version SET version = 1;"
        )
    store = places.open()
    assert store.claimable(T0_US) == [event()]
    assert store.claim(event(), "one", T0_US + 60, T0_US)


# --- dispatchers sharing the store ---------------------------------------------------------------------


def test_while_the_recording_daemon_renews_its_lease_another_never_touches_the_event(places: Places) -> None:
    """The daemon that recorded a crossing holds its lease and renews it through five minutes of retries to a
    target that is down; another daemon ticking all along sends nothing and opens no delivery of its own."""
    time = Time()
    first, other = daemon(places, time, chat=False), daemon(places, time)
    crossing = crossed(first)
    for _ in range(300):
        first.run(time, 1.0)
        other.dispatcher.tick()
        other.dispatcher.deliver_due()
    assert other.mail.tries == other.chat.tries == 0
    assert first.mail.received == [crossing.message] and first.chat.tries > 200
    first.chat.works = True
    first.run(time, 2.0)
    assert first.chat.received == [crossing.message]
    assert states(other.store) == {"mail": ("delivered", 1), "chat": ("delivered", first.chat.tries)}


def test_a_daemon_waiting_out_a_retry_longer_than_its_lease_keeps_the_lease_by_ticking(places: Places) -> None:
    """With a retry due 5 minutes on, no attempt renews the lease: the dispatcher's tick does, so another daemon
    ticking meanwhile takes nothing, and the retry is made by the daemon that held the event all along."""
    time = Time()
    first, other = daemon(places, time, chat=False, retry_s=300.0), daemon(places, time)
    crossing = crossed(first)
    first.dispatcher.deliver_due()
    first.chat.works = True
    for _ in range(30):
        time.mono += 10.0
        first.dispatcher.tick()
        assert other.dispatcher.tick() == 0
    first.run(time, 2.0)
    assert first.chat.received == [crossing.message] and other.chat.tries == 0


def test_a_dead_daemons_event_is_taken_over_after_its_lease_and_each_pending_target_gets_it_once(
    places: Places,
) -> None:
    """A daemon delivers to one target, fails the other, and dies holding the lease. Until the lease expires the
    second daemon sends nothing; then it takes the event over and sends it to the pending target only, once,
    its attempts counted on from the dead daemon's."""
    time = Time()
    first, second = daemon(places, time, chat=False), daemon(places, time)
    crossing = crossed(first)
    first.dispatcher.deliver_due()  # mail delivered, chat failed once; then the daemon dies, renewing nothing
    assert states(second.store) == {"mail": ("delivered", 1), "chat": ("pending", 1)}
    time.mono = LEASE_S - 1
    assert second.dispatcher.tick() == 0
    second.dispatcher.deliver_due()
    assert second.mail.tries == second.chat.tries == 0, "the dead daemon's lease still runs"
    time.mono = LEASE_S
    second.run(time, 600.0)
    assert second.chat.received == [crossing.message], "the pending target gets it once"
    assert second.mail.tries == 0, "the target the dead daemon delivered to gets nothing again"
    assert states(second.store) == {"mail": ("delivered", 1), "chat": ("delivered", 2)}
    assert second.store.claimable(int(time.wall().timestamp() * 1_000_000)) == [], "settled"


def test_a_daemon_that_stalled_past_its_lease_does_not_send_what_another_took_over(places: Places) -> None:
    """A daemon paused longer than its lease (a long GC, a suspended VM) finds on waking that another daemon
    took the event over: it sends nothing more of it, so the pending target gets the message once."""
    time = Time()
    stalled, second = daemon(places, time, chat=False), daemon(places, time)
    crossing = crossed(stalled)
    stalled.dispatcher.deliver_due()  # chat failed; its retry is queued in the stalled daemon
    time.mono = LEASE_S + 1
    assert second.dispatcher.tick() == 1
    second.dispatcher.deliver_due()
    stalled.chat.works = True
    stalled.dispatcher.deliver_due()  # wakes with the retry due
    stalled.run(time, 120.0)
    assert stalled.chat.tries == 1, "no attempt after the lease was taken over"
    assert second.chat.received == [crossing.message] and second.mail.tries == 0
    assert not stalled.dispatcher.holds(crossing)


def test_a_daemon_that_stops_gives_up_its_leases_and_another_takes_over_at_once(places: Places) -> None:
    """`stop()` releases the leases held: another daemon (or this one restarted) resumes at once, not a lease later."""
    time = Time()
    first, second = daemon(places, time, chat=False), daemon(places, time)
    crossing = crossed(first)
    first.dispatcher.deliver_due()
    first.dispatcher.stop()
    assert second.dispatcher.tick() == 1
    second.dispatcher.deliver_due()
    assert second.chat.received == [crossing.message] and second.mail.tries == 0


def test_of_daemons_racing_to_take_over_expired_events_exactly_one_delivers_each(places: Places) -> None:
    """Twenty events a dead daemon held, four daemons ticking at the same moment after their leases expired:
    each event is taken by exactly one, and each target gets each message exactly once."""
    time = Time()
    dead = places.open()
    crossings = [event(f"b{i}") for i in range(20)]
    for crossing in crossings:
        assert dead.record(crossing) and dead.claim(crossing, "dead", T0_US + int(LEASE_S * 1e6), T0_US)
    daemons = [daemon(places, time) for _ in range(4)]
    time.mono = LEASE_S
    taken = race(len(daemons), lambda i: daemons[i].dispatcher.tick())
    assert sum(taken) == len(crossings)
    for each in daemons:
        each.dispatcher.deliver_due()
        each.dispatcher.tick()
        each.dispatcher.deliver_due()
    for name in ("mail", "chat"):
        received = sorted(body for each in daemons for body in getattr(each, name).received)
        assert received == sorted(c.message for c in crossings)
    assert dead.claimable(T0_US + 10**12) == []
    assert all(states(dead, c.budget) == {"mail": ("delivered", 1), "chat": ("delivered", 1)} for c in crossings)


def test_only_the_daemon_whose_record_created_the_event_holds_its_lease(places: Places) -> None:
    """Several daemons seeing one crossing: the one whose `record` was True submits it and holds its lease; the
    others, submitting nothing, never hold it, and their ticks take nothing."""
    time = Time()
    daemons = [daemon(places, time) for _ in range(3)]
    crossing = event()
    created = [each.store.record(crossing) for each in daemons]
    assert created == [True, False, False]
    daemons[0].dispatcher.submit(crossing)
    assert [each.dispatcher.tick() for each in daemons[1:]] == [0, 0]
    daemons[1].dispatcher.submit(crossing)  # even a stray submit does not take a live lease
    assert [each.dispatcher.holds(crossing) for each in daemons] == [True, False, False]
    for each in daemons:
        each.dispatcher.deliver_due()
    assert [len(each.mail.received) for each in daemons] == [1, 0, 0]
    assert states(daemons[2].store) == {"mail": ("delivered", 1), "chat": ("delivered", 1)}
    assert Delivery("mail", "delivered", 1) in daemons[0].store.events("daily", T0)[0].deliveries
