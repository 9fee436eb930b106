"""The application side of the kill switch: poll the daemon off the call path, refuse calls in scope."""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .._client import DaemonRefused
from ..exceptions import BudgetExceeded

__all__ = ["Board", "Fetcher", "KillSwitchPoller", "Rule", "parse_rules"]

log = logging.getLogger("watcher")
FORMAT_VERSION = 1
UNREACHABLE = "watcher-daemon-unreachable"
PATH = "/v1/killswitch"


class Fetcher(Protocol):
    """Reads one path from the daemon (a `watcher._client.DaemonClient`); raises OSError on failure,
    `DaemonRefused` (with its HTTP `status`) when the daemon answers with an error."""

    endpoint: str

    def get(self, path: str, timeout_s: float | None = None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Rule:
    """One engaged kill switch, reduced to what this process must check per call.

    The scope's service and environment are settled when the rule is built (this process has
    one of each), so a call only tests its request type and model, with compiled patterns.
    """

    budget: str
    request_type: re.Pattern[str] | None
    model: re.Pattern[str] | None
    spend_usd: float
    limit_usd: float
    resets_at: datetime | None

    def covers(self, request_type: str, model: str | None) -> bool:
        if self.request_type is not None and not self.request_type.fullmatch(request_type):
            return False
        return self.model is None or (model is not None and self.model.fullmatch(model) is not None)

    def refusal(self) -> BudgetExceeded:
        return BudgetExceeded(self.budget, spend_usd=self.spend_usd, limit_usd=self.limit_usd, resets_at=self.resets_at)


def _pattern(value: object) -> re.Pattern[str] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"scope values must be strings or null, got {value!r}")
    return re.compile(fnmatch.translate(value))


def _when(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def parse_rules(body: bytes, service: str, environment: str) -> tuple[Rule, ...]:
    """The rules in a `/v1/killswitch` answer that can apply to this process. Raises ValueError."""
    document = json.loads(body)
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown kill-switch format version {document.get('version')!r}")
    rules = []
    for item in document.get("engaged", []):
        scope = item.get("scope") or {}
        own = {"service": service, "environment": environment}
        if any(scope.get(k) is not None and not fnmatch.fnmatchcase(v, str(scope[k])) for k, v in own.items()):
            continue
        rules.append(
            Rule(
                budget=str(item["budget"]),
                request_type=_pattern(scope.get("request_type")),
                model=_pattern(scope.get("model")),
                spend_usd=float(item.get("spend_usd") or 0),
                limit_usd=float(item.get("limit_usd") or 0),
                resets_at=_when(item.get("resets_at")),
            )
        )
    return tuple(rules)


class Board:
    """The engaged rules as last polled; `check` is what every call pays: nothing, when none are engaged."""

    def __init__(self, fail_closed: bool) -> None:
        self.rules: tuple[Rule, ...] = ()
        self.fail_closed = fail_closed
        self.reachable = True

    def check(self, request_type: str, model: str | None) -> None:
        """Raises BudgetExceeded if an engaged switch covers the call. Thread-safe (reads one tuple)."""
        if not self.reachable and self.fail_closed:
            raise BudgetExceeded(UNREACHABLE, spend_usd=0.0, limit_usd=0.0)
        for rule in self.rules:
            if rule.covers(request_type, model):
                raise rule.refusal()


class KillSwitchPoller:
    """Polls the daemon's `/v1/killswitch` through `client` every `interval_s` on a daemon thread and updates `board`.

    Never on the call path. A daemon that gives no answer, because it cannot be reached or
    because it refuses watcher's token (401), is logged once per change of state (and again
    when it answers); the board then fails open, or closed with `fail_closed` (calls refused
    until the daemon answers). A refused token is logged at ERROR naming WATCHER_TOKEN: unlike
    an outage it never heals by itself, and failing open it silently turns enforcement off.
    With `fail_closed` the first poll happens in `start()` so the first call sees a real answer.
    """

    def __init__(
        self,
        client: Fetcher,
        *,
        interval_s: float,
        service: str,
        environment: str,
        fail_closed: bool = False,
    ) -> None:
        self.url = client.endpoint + PATH
        self.board = Board(fail_closed)
        self._interval_s = interval_s
        self._service, self._environment = service, environment
        self._client = client
        self._trouble: str | None = None  # why the last poll got no answer: None, "token" or "unreachable"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher-killswitch", daemon=True)

    def start(self) -> KillSwitchPoller:
        if self.board.fail_closed:
            self.refresh()
        self._thread.start()
        return self

    def refresh(self) -> None:
        """Polls once, now, in the calling thread. Never raises."""
        try:
            body = self._client.get(PATH, max(0.2, min(self._interval_s, 2.0)))
            self.board.rules = parse_rules(body, self._service, self._environment)
        except ValueError as exc:
            log.warning("watcher ignored a kill-switch answer it cannot read (%s); keeping the last one", exc)
            return
        except Exception as exc:
            self._unanswered(exc)
            return
        if self._trouble is not None:
            log.warning("watcher reached the daemon at %s again; kill switches are enforced", self.url)
        self._trouble = None
        self.board.reachable = True

    def _unanswered(self, exc: Exception) -> None:
        """Marks the board unanswered, logging only when the reason differs from the last poll's."""
        trouble = "token" if isinstance(exc, DaemonRefused) and exc.status == 401 else "unreachable"
        if trouble != self._trouble:
            (self._log_refused_token if trouble == "token" else self._log_unreachable)(exc)
        self._trouble = trouble
        self.board.reachable = False

    def _log_refused_token(self, exc: Exception) -> None:
        mode = (
            "calls are refused until it is accepted (WATCHER_FAIL_MODE=closed)"
            if self.board.fail_closed
            else "kill switches are not enforced"
        )
        log.error(
            "the daemon at %s refused watcher's token (401): set WATCHER_TOKEN to the daemon's token; %s",
            self.url,
            mode,
        )

    def _log_unreachable(self, exc: Exception) -> None:
        mode = "refusing calls (WATCHER_FAIL_MODE=closed)" if self.board.fail_closed else "letting calls through"
        error = f"DaemonRefused {exc.status}" if isinstance(exc, DaemonRefused) else type(exc).__name__
        log.warning("watcher cannot reach the daemon at %s (%s); %s", self.url, error, mode)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def restart_in_child(self) -> None:
        """In a forked child, where the parent's thread does not run: polls on a new thread, unless stopped.

        The board keeps the parent's last answer until the child's first poll.
        """
        if self._stop.is_set():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher-killswitch", daemon=True)
        self._thread.start()
