"""Delivering budget events: a one-method Notifier per target, apprise behind it, retries with backoff and a cap."""

from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from ._state import BudgetEvent, Delivery, StateStorage

__all__ = ["AppriseNotifier", "Dispatcher", "LogNotifier", "Notifier", "apprise_targets", "redact"]

log = logging.getLogger("watcher.alerts")
TITLES = {
    "alert": "watcher: budget alert",
    "kill": "watcher: KILL SWITCH engaged",
    "engaged": "watcher: kill switch engaged by hand",
    "reengaged": "watcher: KILL SWITCH engaged again",
    "release": "watcher: kill switch released",
    "exhausted": "watcher: budget exhausted, calls refused",
}


class Notifier(Protocol):
    """Sends one message to one target; True when it was delivered. Must not raise for a failed delivery."""

    def send(self, title: str, body: str) -> bool: ...


class LogNotifier:
    """Alerts into the daemon's log, for a daemon with no alert URL configured: a newcomer still sees them."""

    def send(self, title: str, body: str) -> bool:
        log.warning("%s\n%s", title, body)
        return True


def redact(url: str) -> str:
    """An apprise URL with everything after the scheme hidden: URLs carry tokens and passwords."""
    scheme, _, _ = url.partition("://")
    return f"{scheme}://***"


class AppriseNotifier:
    """Delivers through apprise to one target: an apprise URL, or one service of an apprise config file.

    Raises ValueError naming the URL (redacted) at construction when apprise does not accept it.
    Only a truthy result of apprise's `notify` counts as delivered (older versions return None
    when nothing was sent). Tags are not filters here: the target gets every message.
    """

    def __init__(self, target: str | Any) -> None:
        import apprise

        self._apprise = apprise.Apprise()
        if not self._apprise.add(target):
            shown = redact(target) if isinstance(target, str) else type(target).__name__
            raise ValueError(f"apprise does not accept the alert URL {shown}; check its scheme and fields")

    def send(self, title: str, body: str) -> bool:
        try:
            return bool(self._apprise.notify(title=title, body=body))
        except Exception as exc:  # a notifier plugin bug must not take the daemon down
            log.warning("alert delivery raised %s", type(exc).__name__)
            return False


def apprise_targets(urls: Sequence[str], config_file: str | None = None) -> dict[str, Notifier]:
    """One AppriseNotifier per URL and per service in the apprise config file, keyed by a redacted name.

    Names are `scheme://***`, with `#2`, `#3` ... for later targets of the same scheme, in the
    order given (URLs first): stable while the configuration keeps its order. Raises ValueError
    for a URL apprise does not accept, or a config file that yields no service.
    """
    import apprise

    services: list[tuple[str, Any]] = [(url, url) for url in urls]
    if config_file:
        config = apprise.AppriseConfig()
        found = config.services() if config.add(config_file) else []
        if not found:
            raise ValueError(f"apprise finds no alert URL in the config file {config_file}; check its path and urls")
        services += [(_url_of(service), service) for service in found]
    names: Counter[str] = Counter()
    targets: dict[str, Notifier] = {}
    for url, service in services:
        base = redact(url)
        names[base] += 1
        targets[base if names[base] == 1 else f"{base}#{names[base]}"] = AppriseNotifier(service)
    return targets


def _url_of(service: Any) -> str:
    """An apprise service's URL (secrets included: only ever shown redacted)."""
    url: Callable[[], str] = service.url
    return url()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    """Delivers each event to each target on a background thread, retrying only the targets that failed.

    Every target's state of every event is in the store: a success is recorded by its own
    committed write right after its send, so a restart re-sends to no target that recorded it;
    only a crash between a send and that write can repeat one message to that one target. A
    failed target is retried after `base_delay_s`, doubling up to `max_delay_s`; after
    `max_attempts` tries its state is `failed`. Counts sends and failures per target for the
    metrics.

    Of the daemons sharing a store, only the one holding an event's delivery lease sends it: the
    lease is taken for `lease_s` when the event is submitted (right after this daemon recorded it)
    or taken over, renewed before an attempt once a third of it is used, and by `tick()` (every
    `lease_s / 3` on the thread) while deliveries wait for a retry; `stop()` gives up the leases
    held. An event whose lease this daemon lost (it stalled past its lease and another took it) is
    not sent again from here. `tick()` also takes over every unsettled event whose lease is free or
    expired (a dead daemon's) and sends it to the targets still pending. The owner is a random id
    per dispatcher. `clock` (monotonic) schedules retries, `wall_clock` (UTC) times leases, which
    daemons compare: both are injected so tests drive time with `tick()` and `deliver_due()`.
    """

    def __init__(
        self,
        targets: Mapping[str, Notifier],
        store: StateStorage,
        *,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        max_attempts: int = 16,
        lease_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
        owner: str | None = None,
    ) -> None:
        if not targets or max_attempts < 1 or lease_s <= 0:
            raise ValueError("a dispatcher needs at least one target, max_attempts >= 1 and lease_s > 0")
        self._targets, self._store, self._clock, self._wall = dict(targets), store, clock, wall_clock
        self._base, self._max, self._attempts = base_delay_s, max_delay_s, max_attempts
        self._lease_us, self._tick_s = int(lease_s * 1_000_000), lease_s / 3
        self.owner = owner or uuid.uuid4().hex
        self._held: dict[tuple[str, int, str, int], tuple[BudgetEvent, int]] = {}
        self._queue: list[tuple[float, int, BudgetEvent, Delivery]] = []
        self._queued: set[tuple[tuple[str, int, str, int], str]] = set()
        self._counter = 0
        self._wake = threading.Condition()
        self._stopped = False
        self.sent: Counter[str] = Counter()
        self.failures: Counter[tuple[str, str]] = Counter()
        self._thread = threading.Thread(target=self._run, name="watcher-alerts", daemon=True)

    @property
    def targets(self) -> list[str]:
        """The targets' redacted names, in order."""
        return list(self._targets)

    def start(self) -> Dispatcher:
        """Takes over what no live daemon is delivering (`resume`), then delivers and ticks on its thread."""
        self.resume()
        self._thread.start()
        return self

    def tick(self) -> int:
        """Renews the leases held that are a third used, then takes over what `resume` finds; returns how many
        events it took over. The thread calls it every `lease_s / 3`."""
        now_us = self._now_us()
        with self._wake:
            due = [event for event, until in self._held.values() if until - now_us <= self._lease_us * 2 // 3]
        for event in due:
            self._renew(event, now_us)
        return self.resume()

    def resume(self) -> int:
        """Takes the lease of every unsettled event whose lease is free or expired (its own from before a
        restart, a dead daemon's) and queues its targets still pending, attempts counted on; returns how many."""
        taken = 0
        for event in self._store.claimable(self._now_us()):
            with self._wake:
                held = event.key() in self._held
            if not held and self._take(event):
                taken += 1
        return taken

    def submit(self, event: BudgetEvent) -> None:
        """Takes `event`'s delivery lease and queues it for every target still pending (recorded as pending first),
        due now; queues nothing when another daemon holds the lease (that daemon delivers it)."""
        self._take(event)

    def _take(self, event: BudgetEvent) -> bool:
        """`submit`; True when this dispatcher took the lease."""
        if not self._claim(event):
            return False
        deliveries = self._store.open_deliveries(event, self._targets)
        pending = [d for d in deliveries.values() if d.state == "pending"]
        if not pending:
            self._settle(event)
        for delivery in pending:
            self._push(self._clock(), event, delivery)
        return True

    def holds(self, event: BudgetEvent) -> bool:
        """Whether this dispatcher holds `event`'s delivery lease, as far as it knows (renewals may still fail)."""
        with self._wake:
            return event.key() in self._held

    def _now_us(self) -> int:
        return int(self._wall().timestamp() * 1_000_000)

    def _claim(self, event: BudgetEvent) -> bool:
        now_us = self._now_us()
        until = now_us + self._lease_us
        if not self._store.claim(event, self.owner, until, now_us):
            return False
        with self._wake:
            self._held[event.key()] = (event, until)
        return True

    def _keep(self, event: BudgetEvent) -> bool:
        """True when this dispatcher still holds `event`'s lease, renewed first once a third of it is used."""
        now_us = self._now_us()
        with self._wake:
            held = self._held.get(event.key())
        if held is None:
            return False
        return held[1] - now_us > self._lease_us * 2 // 3 or self._renew(event, now_us)

    def _renew(self, event: BudgetEvent, now_us: int) -> bool:
        """Moves the lease on by `lease_s` from `now_us`; when another daemon took it, forgets the event."""
        until = now_us + self._lease_us
        renewed = self._store.renew(event, self.owner, until)
        with self._wake:
            if not renewed:
                self._held.pop(event.key(), None)
            elif event.key() in self._held:
                self._held[event.key()] = (event, until)
        if not renewed:
            log.warning("another daemon took over the %s of budget %r; it sends the rest", event.kind, event.budget)
        return renewed

    def _settle(self, event: BudgetEvent) -> None:
        self._store.settle(event)
        with self._wake:
            self._held.pop(event.key(), None)

    def _push(self, due: float, event: BudgetEvent, delivery: Delivery) -> None:
        with self._wake:
            key = (event.key(), delivery.target)
            if key in self._queued:
                return
            self._queued.add(key)
            self._counter += 1
            heapq.heappush(self._queue, (due, self._counter, event, delivery))
            self._wake.notify()

    def deliver_due(self) -> int:
        """Tries every delivery due now, in the calling thread; returns how many were tried."""
        tried = 0
        while (item := self._pop_due()) is not None:
            _, _, event, delivery = item
            tried += 1
            self._deliver(event, delivery)
        return tried

    def _pop_due(self) -> tuple[float, int, BudgetEvent, Delivery] | None:
        with self._wake:
            if self._queue and self._queue[0][0] <= self._clock():
                item = heapq.heappop(self._queue)
                self._queued.discard((item[2].key(), item[3].target))
                return item
            return None

    def _deliver(self, event: BudgetEvent, delivery: Delivery) -> None:
        if not self._keep(event):
            return  # another daemon holds the lease now, and sends what is left
        target, attempts = delivery.target, delivery.attempts + 1
        if self._send(target, event):
            self._store.set_delivery(event, Delivery(target, "delivered", attempts))
            self._count(target, "delivered")
        elif attempts >= self._attempts:
            self._store.set_delivery(event, Delivery(target, "failed", attempts))
            self._count(target, "failed")
            log.error("alert for budget %r not delivered to %s after %d attempts", event.budget, target, attempts)
        else:
            self._store.set_delivery(event, Delivery(target, "pending", attempts))
            self._count(target, "pending")
            delay = min(self._max, self._base * 2 ** (attempts - 1))
            log.warning("alert for budget %r not delivered to %s; retrying in %.0f s", event.budget, target, delay)
            self._push(self._clock() + delay, event, Delivery(target, "pending", attempts))
            return
        self._settle_if_done(event)

    def _count(self, target: str, state: str) -> None:
        with self._wake:
            if state == "delivered":
                self.sent[target] += 1
            else:
                self.failures[target, state] += 1

    def counts(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        """Copies of `sent` (by target) and `failures` (by target and state), taken under the lock."""
        with self._wake:
            return dict(self.sent), dict(self.failures)

    def _send(self, target: str, event: BudgetEvent) -> bool:
        try:
            return self._targets[target].send(TITLES.get(event.kind, "watcher"), event.message)
        except Exception as exc:  # a Notifier that breaks its contract must not stop the other deliveries
            log.warning("alert delivery to %s raised %s", target, type(exc).__name__)
            return False

    def _settle_if_done(self, event: BudgetEvent) -> None:
        states = self._store.deliveries(event)
        if all(states.get(target, "pending") != "pending" for target in self._targets):
            self._settle(event)

    def _run(self) -> None:
        next_tick = self._clock() + self._tick_s
        while not self._stopped:
            if self._clock() >= next_tick:
                self._tick_safely()
                next_tick = self._clock() + self._tick_s
            self.deliver_due()
            with self._wake:
                if self._stopped:
                    return
                due = min(next_tick, self._queue[0][0]) if self._queue else next_tick
                self._wake.wait(max(0.0, due - self._clock()))

    def _tick_safely(self) -> None:
        try:
            self.tick()
        except Exception:  # the store unreachable for a moment must not end the deliveries
            log.exception("renewing or taking over alert deliveries failed; trying again at the next tick")

    def stop(self) -> None:
        """Stops the thread, then gives up the leases held so another daemon (or this one restarted) takes over
        at once; a thread still sending after 5 s keeps them, to expire, so nothing is sent twice."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._thread.is_alive():
            return
        with self._wake:
            held, self._held = list(self._held.values()), {}
        for event, _ in held:
            self._store.release(event, self.owner)
