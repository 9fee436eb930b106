"""`instrument()` and `uninstrument()`: turning the hook on and off for the whole process."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections.abc import Callable

from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import TracerProvider

from .._client import DaemonClient
from ..pricing import PriceTable, load_price_table
from ..settings import Settings
from ._allowance import Allowances
from ._dimensions import DimensionPolicy, key_source
from ._failures import flush_failures
from ._fork import in_child
from ._killswitch import KillSwitchPoller
from ._middleware import Hook, set_hook
from ._patch import patch_clients, unpatch_clients
from ._record import Recorder
from ._reserve import Reserver
from ._streams import finish_live_streams
from ._tracer import TracerChoice

__all__ = ["flush", "instrument", "uninstrument"]

_lock = threading.Lock()
_installed: list[tuple[Recorder, TracerChoice, KillSwitchPoller | None, Allowances | None]] = []


def instrument(
    settings: Settings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    price_table: PriceTable | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
) -> None:
    """Makes every Anthropic client built from now on emit a cost span per billed response.

    Idempotent: a second call while instrumented does nothing (call `uninstrument()` first to
    change settings). `settings` defaults to `Settings()` (environment, `.env`, `watcher.toml`);
    `tracer_provider` overrides the choice of pipeline (see docs/spans.md); `price_table`
    defaults to the shipped one plus `WATCHER_PRICES_FILE`; `clock_ns` gives the spans' times
    (wall-clock nanoseconds; tests inject one so spans agree with a daemon's clock). Raises ConfigError for a bad price
    file, here and never later on a call. Clients built before this call are not instrumented.
    """
    with _lock:
        if _installed:
            return
        settings = settings if settings is not None else Settings()
        prices = price_table if price_table is not None else load_price_table(settings.prices_file)
        tracer = TracerChoice(settings, tracer_provider)
        recorder = Recorder(
            tracer, prices, settings.default_request_type, settings.capture_content, clock_ns, _dimensions(settings)
        )
        poller = _poller(settings)
        allowances = _allowances(settings, poller, recorder) if poller else None
        reserver = Reserver(prices, clock_ns) if allowances else None
        guard = poller.board.check if poller else None
        set_hook(Hook(recorder, guard, allowances, reserver, count_tokens=settings.reserve_count_tokens))
        patch_clients()
        atexit.register(_at_exit)
        _exit_before_providers()
        _installed.append((recorder, tracer, poller, allowances))


def uninstrument() -> None:
    """Stops recording: records streams still open, flushes watcher's own exporter, restores the SDK.

    Idempotent. Clients built while instrumented keep an inert middleware and make plain calls.
    """
    with _lock:
        if not _installed:
            return
        unpatch_clients()
        finish_live_streams()
        set_hook(None)
        recorder, tracer, poller, allowances = _installed.pop()
        if poller is not None:
            poller.stop()
        atexit.unregister(_at_exit)
        _finish(recorder, tracer, allowances)


def flush(timeout_s: float = 5.0) -> bool:
    """Records every span still waiting and exports them now; True when the export finished in time
    (delivered, or kept in the spool when the daemon is down).

    Blocks. For short-lived processes (jobs, serverless handlers) that must not end before
    their spend is reported; long-running applications never need it, and exit flushes anyway.
    """
    with _lock:
        if not _installed:
            return True
        recorder, tracer, _, _ = _installed[-1]
    recorder.pending.drain()
    return tracer.force_flush(timeout_s)


def _poller(settings: Settings) -> KillSwitchPoller | None:
    """The kill-switch poller for this process, started; None when enforcement is off (poll interval 0)."""
    if settings.killswitch_poll_s <= 0:
        return None
    resource = Resource.create().attributes
    environment = resource.get("deployment.environment.name") or resource.get("deployment.environment")
    token = settings.token.get_secret_value() if settings.token else None
    poller = KillSwitchPoller(
        DaemonClient(settings.endpoint, token),
        interval_s=settings.killswitch_poll_s,
        service=str(resource.get("service.name", "unknown_service")),
        environment=str(environment or "default"),
        fail_closed=settings.fail_mode == "closed",
    ).start()
    in_child(poller.restart_in_child)
    return poller


def _allowances(settings: Settings, poller: KillSwitchPoller, recorder: Recorder) -> Allowances | None:
    """This process's allowances, started; None when turned off (WATCHER_ALLOWANCES=false)."""
    if not settings.allowances:
        return None
    token = settings.token.get_secret_value() if settings.token else None
    allowances = Allowances(
        DaemonClient(settings.endpoint, token),
        poller.board,
        service=poller.service,
        fail_closed=settings.fail_mode == "closed",
        horizon_s=settings.allowance_horizon_s,
        drain=recorder.pending.drain,
    ).start()
    in_child(allowances.restart_in_child)
    return allowances


def _finish(recorder: Recorder, tracer: TracerChoice, allowances: Allowances | None) -> None:
    """Records streams still open and spans still queued, flushes and stops watcher's own exporter, gives back
    what is left of the allowance, then logs the hook failures counted but not yet logged."""
    finish_live_streams()
    recorder.pending.stop()
    tracer.shutdown()
    if allowances is not None:
        allowances.stop()
        allowances.give_back()
    flush_failures()


def _at_exit() -> None:
    """At interpreter exit, `_finish` for what is installed, before any OpenTelemetry provider shuts down.

    A TracerProvider registers its own shutdown with atexit when it is built. An application
    that builds one after `import watcher.auto` would have it shut down first (atexit is
    last-in, first-out) and the spans watcher still queues would go nowhere; see
    `_exit_before_providers` for how this handler moves ahead of it.
    """
    installed = _installed[-1] if _installed else None  # no lock: a thread holding it must not block exit
    if installed is not None:
        _finish(installed[0], installed[1], installed[3])


def _exit_before_providers() -> None:
    """Makes `_at_exit` the first atexit handler to run, whatever was registered after it. Once per process.

    Python calls the callbacks of `threading._register_atexit` when the main thread ends, before
    it joins other threads and before any atexit handler: one of them re-registers `_at_exit`,
    which puts it last in the atexit list, so it runs first. Without that hook (another Python),
    atexit order stays as registered.
    """
    global _ordered
    register = getattr(threading, "_register_atexit", None)
    if _ordered or register is None:
        return
    _ordered = True
    register(_move_ahead)


def _move_ahead() -> None:
    atexit.unregister(_at_exit)
    atexit.register(_at_exit)


def _in_child() -> None:
    """A forked child starts with a free lock (the fork may have caught another thread holding it), and
    a child of multiprocessing, which leaves by `os._exit` without atexit, records its spans as it ends."""
    global _lock
    _lock = threading.Lock()
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _installed:
        util.register_after_fork(_CHILD, _finish_with_process)


class _Child:
    """What multiprocessing's after-fork registry holds (weakly) for watcher."""


def _finish_with_process(_: _Child) -> None:
    """Run by multiprocessing in its child once it has cleared the parent's finalizers: `_exit_in_child`
    runs when the child's `run()` returns."""
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _exit_in_child, exitpriority=100)


def _exit_in_child() -> None:
    """`_finish`, then a flush of the application's provider too: no atexit handler runs in this child."""
    installed = _installed[-1] if _installed else None
    if installed is not None:
        _finish(installed[0], installed[1], installed[3])
        installed[1].force_flush(5.0)


_CHILD = _Child()
_ordered = False
os.register_at_fork(after_in_child=_in_child)


def _dimensions(settings: Settings) -> DimensionPolicy:
    """The dimension policy the settings ask for: allowed names, value cap, and user-id hashing's key."""
    hash_key = None
    if settings.hash_user_ids:
        secret = settings.attribute_hash_key.get_secret_value() if settings.attribute_hash_key else None
        hash_key = key_source(secret, settings.state_dir)
    return DimensionPolicy(settings.attribute_names, settings.attribute_max_length, hash_key)
