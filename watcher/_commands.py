"""The commands that read the settings and ask the daemon (`status`, `report`, `killswitch`) or migrate its
databases (`db upgrade`)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._client import DaemonClient, DaemonRefused
from .exceptions import ConfigError

if TYPE_CHECKING:
    from .ledger import BreakdownRow
    from .settings import Settings

__all__ = ["Stop", "db_upgrade", "killswitch", "load_settings", "report", "status"]


def load_settings(config: str | None = None, **values: Any) -> Settings:
    """The settings, read from `config` when it is given; ConfigError, in one line, for a value that is invalid.

    A missing `config` file, an unknown key or bad TOML raise ConfigError from the settings themselves;
    a value a source cannot parse (JSON in WATCHER_ALERTS) becomes ConfigError here.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from .settings import Settings

    try:
        return Settings.from_file(Path(config), **values) if config else Settings(**values)
    except SettingsError as error:
        raise ConfigError(f"invalid settings: {error}; fix that WATCHER_* variable, .env line or config key") from None
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(map(str, first["loc"]))
        where = f"WATCHER_{name.upper()} or {name} in the config file"
        raise ConfigError(f"invalid setting {name} = {first['input']!r}: {first['msg']}; fix {where}") from None


class Stop(Exception):
    """Ends a command: its message goes to stderr as one line, and `watcher.cli.main` returns `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _client(settings: Settings | None = None) -> DaemonClient:
    """A client for the daemon the settings name (WATCHER_ENDPOINT, WATCHER_TOKEN)."""
    settings = settings or load_settings()
    return DaemonClient(settings.endpoint, settings.token.get_secret_value() if settings.token else None)


def _ask(client: DaemonClient, path: str, instead: str) -> Any:
    """The daemon's JSON answer to `GET path`; _Stop naming the endpoint when there is none, with `instead`
    (what else to do) when it cannot be reached."""
    try:
        return client.get_json(path)
    except DaemonRefused as error:
        raise Stop(f"the daemon at {client.endpoint} refused: {error}", 2 if error.status == 400 else 1) from None
    except OSError as error:
        reason = getattr(error, "reason", error)
        reason = getattr(reason, "strerror", None) or reason
        raise Stop(f"cannot reach the daemon at {client.endpoint} ({reason}); {instead}") from None
    except ValueError as error:
        raise Stop(f"the daemon at {client.endpoint} answered with something that is not JSON ({error})") from None


def status(args: argparse.Namespace) -> int:
    client = _client()
    instead = "start it (watcher serve) or set WATCHER_ENDPOINT to its address: budgets live in the daemon"
    document = _ask(client, "/v1/budgets", instead)
    print(f"from the daemon at {client.endpoint}")
    budgets = document.get("budgets", []) if isinstance(document, dict) else []
    if not budgets:
        print("no budgets configured (add [[budgets]] to the daemon's config file)")
        return 0
    print(f"{'budget':<24} {'spend':>10} {'limit':>10} {'used':>6} {'lent':>10}  {'state':<8} {'alerts':<10} resets")
    for b in budgets:
        used = f"{100 * b['used_ratio']:.0f}%"
        money = f"{b['spend_usd']:>10.2f} {b['limit_usd']:>10.2f}"
        lent = f"{b['lent_usd']:.4f}" if isinstance(b.get("lent_usd"), int | float) else "-"
        state = f"{b['state']:<8} {_alerts_column(b):<10}"
        print(f"{b['name']:<24} {money} {used:>6} {lent:>10}  {state} {b['resets_at']}")
    for b in budgets:
        for line in _delivery_problems(b):
            print(line)
    return 0


def _deliveries(budget: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(event["kind"], d) for event in budget.get("events") or [] for d in event.get("deliveries") or []]


def _alerts_column(budget: dict[str, Any]) -> str:
    """`-` without events this period, else `ok`, `N pending` or `N failed` over every delivery."""
    states = [d["state"] for _, d in _deliveries(budget)]
    if not states:
        return "-"
    failed, pending = states.count("failed"), states.count("pending")
    return f"{failed} failed" if failed else f"{pending} pending" if pending else "ok"


def _delivery_problems(budget: dict[str, Any]) -> list[str]:
    """One line per delivery of this period's events that failed for good."""
    return [
        f"{budget['name']}: {kind} to {d['target']} failed after {d['attempts']} attempts"
        for kind, d in _deliveries(budget)
        if d["state"] == "failed"
    ]


def report(args: argparse.Namespace) -> int:
    """Asks the daemon at WATCHER_ENDPOINT, or reads the file `--ledger` names; never creates a ledger."""
    from .reporting import render_report

    source, since, until, rows = _report_from_file(args.ledger, args) if args.ledger else _report_from_daemon(args)
    print(f"from {source}")
    print(render_report(rows, args.by, since, until))
    return 0


def _report_from_daemon(args: argparse.Namespace) -> tuple[str, datetime, datetime, list[BreakdownRow]]:
    """The report the daemon builds over its ledger, its window read by the daemon's clock."""
    from urllib.parse import urlencode

    from .reporting import row_from_json

    settings = load_settings()
    client = _client(settings)
    known = settings.ledger_url().removeprefix("sqlite:///")
    path = known if known != settings.ledger_url() and Path(known).expanduser().is_file() else "PATH"
    instead = f"start it (watcher serve), set WATCHER_ENDPOINT to its address, or read a file: --ledger {path}"
    query = {"since": args.since, "by": args.by, **({"until": args.until} if args.until else {})}
    document = _ask(client, f"/v1/report?{urlencode(query)}", instead)
    try:
        window = (datetime.fromisoformat(document["since"]), datetime.fromisoformat(document["until"]))
        rows = [row_from_json(row) for row in document["rows"]]
    except (KeyError, TypeError, ValueError) as error:
        raise Stop(f"the daemon at {client.endpoint} answered with something that is not a report ({error})") from None
    return (f"the daemon at {client.endpoint}", *window, rows)


def _report_from_file(file: str, args: argparse.Namespace) -> tuple[str, datetime, datetime, list[BreakdownRow]]:
    """The report over the ledger file `file`, opened read-only: ConfigError when it is not there."""
    from .ledger import open_ledger
    from .reporting import report_window

    try:
        since, until = report_window(args.since, args.until, datetime.now(UTC))
    except ValueError as error:
        raise Stop(str(error), 2) from None
    path = Path(file).expanduser().absolute()
    ledger = open_ledger(f"sqlite:///{path}", read_only=True)
    try:
        rows = ledger.breakdown(since, until, args.by)
    finally:
        ledger.close()
    return f"the ledger file {path}", since, until, rows


def killswitch(args: argparse.Namespace) -> int:
    client = _client()
    if args.action != "status" and not args.name:
        print(f"watcher killswitch {args.action} needs a budget name", file=sys.stderr)
        return 2
    try:
        body = _release_body(args)
    except ValueError as error:
        print(f"watcher killswitch {args.action}: {error}", file=sys.stderr)
        return 2
    try:
        if args.action == "status":
            document = client.get_json("/v1/killswitch")
        else:
            document = client.post_json(f"/v1/killswitch/{args.name}/{args.action}", body)
    except DaemonRefused as error:
        print(f"the daemon at {client.endpoint} refused: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"cannot reach the daemon at {client.endpoint}: {error}", file=sys.stderr)
        return 1
    if args.action == "status":
        engaged = document.get("engaged", [])
        if not engaged:
            print("no kill switch engaged")
        for item in engaged:
            print(f"{item['budget']:<24} engaged since {item['since']} ({item['reason']}), resets {item['resets_at']}")
    elif document.get("engaged"):
        print(f"{args.name}: kill switch engaged")
    else:
        until = document.get("until")
        print(f"{args.name}: kill switch released" + (f" until {until} at the latest" if until else ""))
    return 0


_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def _release_body(args: argparse.Namespace) -> bytes:
    """The JSON body of `release --until TIME`: TIME is a duration from now (`30m`, `2h`, `1d`) or an ISO
    date and time (local time without an offset); empty without --until. ValueError for anything else."""
    if not args.until:
        return b""
    if args.action != "release":
        raise ValueError("--until goes with release only")
    from datetime import UTC, datetime, timedelta

    found = _DURATION.match(args.until.strip())
    if found:
        until = datetime.now(UTC) + timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
    else:
        try:
            until = datetime.fromisoformat(args.until).astimezone(UTC)
        except ValueError:
            raise ValueError(f"--until {args.until!r} is neither a duration (30m, 2h, 1d) nor an ISO time") from None
    return json.dumps({"until": until.isoformat().replace("+00:00", "Z")}).encode()


def db_upgrade(args: argparse.Namespace) -> int:
    """Migrates the ledger and the daemon's state store the settings name to this watcher's schemas, then exits.

    What a daemon does when it starts, on its own: for a fleet, run it once before starting daemons of
    a new version. The ledger migrates when opened. ConfigError for a database that cannot be reached
    or was migrated by a newer watcher.
    """
    from ._urls import hide_password
    from .daemon import upgrade_state_store
    from .ledger import open_ledger

    settings = load_settings(args.config)
    url = settings.ledger_url()
    open_ledger(url).close()
    print(f"ledger {hide_password(url)}: up to date")
    upgraded = upgrade_state_store(settings)
    if upgraded.before == upgraded.after:
        print(f"state {upgraded.where}: up to date (schema version {upgraded.after})")
    else:
        print(f"state {upgraded.where}: schema version {upgraded.before} -> {upgraded.after}")
    return 0
