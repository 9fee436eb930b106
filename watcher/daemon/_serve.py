"""`watcher serve`: builds the daemon from settings and runs it until SIGINT or SIGTERM."""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from watcher._urls import hide_password, postgres_dsn
from watcher.budgets import Budget, load_budgets
from watcher.exceptions import ConfigError
from watcher.ledger import Ledger, open_ledger
from watcher.pricing import load_price_table
from watcher.settings import Settings

from ._alerts import Dispatcher, LogNotifier, Notifier, apprise_targets
from ._books import Books
from ._core import Daemon
from ._exposition import Exposition, metrics_registry
from ._grpc import start_grpc
from ._http import DaemonServer
from ._ingest import Ingestor
from ._lending import Lender
from ._metrics import WatcherCollector
from ._state import StateStorage
from ._state_open import open_state_store

__all__ = ["Running", "build", "parse_listen", "serve"]

log = logging.getLogger("watcher.daemon")


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:4318`) to an address; ConfigError with the expected form otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"listen address {listen!r} is not HOST:PORT; e.g. 127.0.0.1:4318")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _targets(settings: Settings) -> dict[str, Notifier]:
    """One notifier per apprise target; the daemon's log when none is configured."""
    urls = [*settings.alert_urls, *settings.alerts.urls]
    config = settings.alerts.apprise_config
    if not urls and config is None:
        return {"log": LogNotifier()}
    try:
        return apprise_targets(urls, str(config) if config else None)
    except ValueError as error:
        raise ConfigError(str(error)) from None


@dataclass
class Running:
    """A built daemon: its server (not yet serving), books, dispatcher and stores, to start and stop."""

    server: DaemonServer
    daemon: Daemon
    books: Books
    dispatcher: Dispatcher
    ledger: Ledger
    store: StateStorage
    ticker: threading.Event
    grpc_address: tuple[str, int] | None = None
    grpc_server: Any = None

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        name = host if isinstance(host, str) else host.decode()
        return f"http://{name}:{port}"

    def start(self, tick_s: float = 1.0) -> Running:
        """Serves on background threads and re-evaluates budgets every `tick_s` (period rollover)."""
        if self.grpc_address is not None:
            host, port = self.grpc_address
            self.grpc_server, bound = start_grpc(f"{host}:{port}", self.server.ingestor, token=self.server.token)
            self.grpc_address = (host, bound)
        self.dispatcher.start()
        threading.Thread(target=self.server.serve_forever, name="watcher-http", daemon=True).start()
        threading.Thread(target=self._tick, args=(tick_s,), name="watcher-books", daemon=True).start()
        return self

    def _tick(self, tick_s: float) -> None:
        ticks = 0
        while not self.ticker.wait(tick_s):
            ticks += 1
            try:
                self.books.evaluate()
                if self.daemon.lender is not None:
                    self.daemon.lender.flush()
                    if ticks % 600 == 0:
                        self.daemon.lender.prune()
            except Exception:
                log.exception("budget evaluation failed; retrying at the next tick")

    def stop(self) -> None:
        """Stops serving and closes the stores; kill-switch long polls in flight are answered at once."""
        self.ticker.set()
        self.books.revision.close()
        if self.grpc_server is not None:
            self.grpc_server.stop(grace=5).wait()
        self.server.shutdown()
        self.server.server_close()
        if self.daemon.lender is not None:
            self.daemon.lender.flush()
        self.dispatcher.stop()
        self.ledger.close()
        self.store.close()


def build(
    settings: Settings,
    *,
    budgets: list[Budget] | None = None,
    config_file: Path | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    notifier: Notifier | Mapping[str, Notifier] | None = None,
) -> Running:
    """Everything `watcher serve` runs, built and checked; raises ConfigError before binding anything bad.

    `notifier` replaces the configured alert targets: a mapping of target names to notifiers, or
    one notifier (a single target named `default`).
    `budgets`, when given, are used as they are; else they are loaded from `config_file`, which must
    exist (ConfigError otherwise: a file named on purpose and skipped would leave the spend unguarded).
    With neither, the daemon keeps no budgets.
    """
    host, port = parse_listen(settings.listen)
    token = settings.token.get_secret_value() if settings.token else None
    if not _is_loopback(host) and not token:
        raise ConfigError(f"refusing to listen on {host} without a token: set WATCHER_TOKEN, or listen on 127.0.0.1")
    if budgets is None:
        budgets = load_budgets(config_file) if config_file is not None else []
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ledger = open_ledger(settings.ledger_url())
    try:
        store = open_state_store(settings)
    except BaseException:
        ledger.close()
        raise
    if notifier is None:
        targets = _targets(settings)
    else:
        targets = dict(notifier) if isinstance(notifier, Mapping) else {"default": notifier}
    dispatcher = Dispatcher(targets, store, max_attempts=settings.alert_max_attempts, wall_clock=clock)
    # On a shared database other daemons store spend too: each evaluation reads it from the rollups
    # (O(rollups)), where a daemon alone keeps running totals and re-reads them every minute.
    shared = postgres_dsn(settings.database_url) is not None
    books = Books(budgets, ledger, store, clock, dispatcher.submit, resync_s=0.0 if shared else 60.0)
    prices = load_price_table(settings.prices_file)
    daemon = Daemon(
        ledger,
        prices,
        books,
        lender=Lender(books, store, ttl_s=settings.allowance_ttl_s),
        default_request_type=settings.default_request_type,
        max_span_age=timedelta(days=settings.max_span_age_days),
        cost_mismatch_factor=settings.cost_mismatch_factor,
    )
    books.evaluate()
    collector = WatcherCollector(
        daemon.spend, daemon.counters, books, dispatcher, started=clock().timestamp(), lender=daemon.lender
    )
    ingestor = Ingestor(
        daemon,
        max_request_bytes=settings.max_request_bytes,
        max_concurrent=settings.max_concurrent_exports,
        busy_wait_s=settings.busy_wait_s,
        claude_code_source=settings.claude_code_source,
    )
    metrics = Exposition(metrics_registry(collector))
    server = DaemonServer((host, port), daemon, ingestor, clock=clock, token=token, metrics=metrics)
    grpc_address = parse_listen(settings.grpc_listen) if settings.grpc_listen else None
    if grpc_address and not _is_loopback(grpc_address[0]) and not token:
        raise ConfigError(f"refusing OTLP/gRPC on {grpc_address[0]} without a token: set WATCHER_TOKEN")
    return Running(server, daemon, books, dispatcher, ledger, store, threading.Event(), grpc_address)


def serve(settings: Settings, config_file: Path | None) -> int:
    """Runs the daemon in the foreground until SIGINT or SIGTERM; returns the exit code.

    `config_file` is the file of `[[budgets]]` (see `build`); None when there is no config file.
    """
    running = build(settings, config_file=config_file).start()
    names = ", ".join(running.books.budgets) or "none (add [[budgets]] to the config file)"
    grpc = f"; OTLP/gRPC on port {running.grpc_address[1]}" if running.grpc_address else ""
    log.warning(
        "watcher daemon listening on %s%s; config %s; ledger %s; budgets: %s",
        *(running.address, grpc, config_file or "none", hide_password(settings.ledger_url()), names),
    )
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop.wait()
    running.stop()
    return 0
