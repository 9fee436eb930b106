"""The application side of the kill switch: long-poll the daemon off the call path, refuse calls in scope."""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

from .._client import DaemonRefused
from ..exceptions import BudgetExceeded

__all__ = ["WAIT_S", "Answer", "Board", "Fetcher", "KillSwitchPoller", "Rule", "parse_answer", "parse_rules"]

log = logging.getLogger("watcher")
FORMAT_VERSION = 1
UNREACHABLE = "watcher-daemon-unreachable"
PATH = "/v1/killswitch"
WAIT_S = 10.0
"""How long the daemon may hold one long poll; bounds how long a stopped poller's last request lingers."""


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
    return parse_answer(body, service, environment)[0]


def parse_answer(body: bytes, service: str, environment: str) -> tuple[tuple[Rule, ...], str | None]:
    """The rules in a `/v1/killswitch` answer that can apply to this process, and the answer's `revision`
    (None from a daemon that does not long-poll). Raises ValueError."""
    answer = Answer.parse(body, service, environment)
    return answer.rules, answer.revision


@dataclass(frozen=True, slots=True)
class Answer:
    """A `/v1/killswitch` document, narrowed to this process: the engaged switches that can apply to it, the
    answer's revision, and, from a daemon that lends allowances, the scope of every budget that can."""

    rules: tuple[Rule, ...]
    revision: str | None
    scopes: tuple[Rule, ...] | None
    lends: bool

    @classmethod
    def parse(cls, body: bytes, service: str, environment: str) -> Answer:
        """Raises ValueError for anything but a version-1 document."""
        document = json.loads(body)
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown kill-switch format version {document.get('version')!r}")
        revision = document.get("revision")
        budgets = document.get("budgets")
        return cls(
            _rules(document.get("engaged") or [], service, environment),
            revision if isinstance(revision, str) else None,
            _rules(budgets, service, environment) if isinstance(budgets, list) else None,
            document.get("allowances") is True,
        )


def _rules(items: list[Any], service: str, environment: str) -> tuple[Rule, ...]:
    rules = []
    for item in items:
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
    """The engaged rules as last polled; `check` is what every call pays: nothing, when none are engaged.

    Also holds, for the allowances, the scopes of the budgets that can cover this process's calls
    (None until the first answer; `ready` is set once the first poll answered or failed) and
    whether the daemon lends allowances.
    """

    def __init__(self, fail_closed: bool) -> None:
        self.rules: tuple[Rule, ...] = ()
        self.scopes: tuple[Rule, ...] | None = None
        self.lends = False
        self.ready = threading.Event()
        self.fail_closed = fail_closed
        self.reachable = True
        self.allowances_decide = False

    def check(self, request_type: str, model: str | None) -> None:
        """Raises BudgetExceeded if an engaged switch covers the call. Thread-safe (reads one tuple).

        Failing closed, an unreachable daemon refuses every call, unless `allowances_decide`: then
        the allowances refuse only what no live grant covers (a grant is honoured until it lapses).
        """
        if not self.reachable and self.fail_closed and not self.allowances_decide:
            raise BudgetExceeded(UNREACHABLE, spend_usd=0.0, limit_usd=0.0)
        for rule in self.rules:
            if rule.covers(request_type, model):
                raise rule.refusal()


class KillSwitchPoller:
    """Long-polls the daemon's `/v1/killswitch` through `client` on a daemon thread and updates `board`.

    Never on the call path. Each request names the revision last seen and the daemon holds it until
    the engaged switches change (or `WAIT_S` pass), so a change reaches the board as soon as the
    answer arrives; the next request goes out at once. After a failed request, or an answer without
    a revision (a daemon older than long polls) or one that came at once unchanged, it waits
    `interval_s` first: nothing makes it ask in a spin.

    A daemon that gives no answer, because it cannot be reached or because it refuses watcher's
    token (401), is logged once per change of state (and again when it answers); the board then
    fails open, or closed with `fail_closed` (calls refused until the daemon answers). A refused
    token is logged at ERROR naming WATCHER_TOKEN: unlike an outage it never heals by itself,
    and failing open it silently turns enforcement off.
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
        self.service, self._environment = service, environment
        self._client = client
        self._trouble: str | None = None  # why the last poll got no answer: None, "token" or "unreachable"
        self._revision: str | None = None  # of the answer on the board; None until one carried a revision
        self._lock = threading.Lock()
        self._asked = self._applied = 0  # requests sent, and the latest whose answer is on the board
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher-killswitch", daemon=True)

    def start(self) -> KillSwitchPoller:
        if self.board.fail_closed:
            self.refresh()
        self._thread.start()
        return self

    def refresh(self) -> None:
        """Polls once, now, in the calling thread, without waiting for a change. Never raises."""
        self._ask(PATH, max(0.2, min(self._interval_s, 2.0)))

    def _long_poll(self) -> bool:
        """Asks once, letting the daemon hold the request until a change; True to ask again at once.

        That is when the answer brought a new revision, or the same one after the daemon held the
        request: not when it came without one, or at once unchanged (something ignored `wait`).
        """
        seen = self._revision
        path = f"{PATH}?wait={WAIT_S:g}" + (f"&revision={quote(seen)}" if seen else "")
        began = time.monotonic()
        if not self._ask(path, WAIT_S + max(2.0, self._interval_s)) or self._revision is None:
            return False
        return self._revision != seen or time.monotonic() - began >= WAIT_S / 2

    def _ask(self, path: str, timeout_s: float) -> bool:
        """Sends one request and puts its answer on the board unless a later request's already is; True if answered."""
        with self._lock:
            self._asked += 1
            ticket = self._asked
        try:
            body = self._client.get(path, timeout_s)
            answer = Answer.parse(body, self.service, self._environment)
        except ValueError as exc:
            log.warning("watcher ignored a kill-switch answer it cannot read (%s); keeping the last one", exc)
            self.board.ready.set()
            return False
        except Exception as exc:
            self._unanswered(exc)
            self.board.ready.set()
            return False
        with self._lock:
            if ticket > self._applied:
                self._applied = ticket
                self.board.rules, self._revision = answer.rules, answer.revision
                if answer.scopes is not None and answer.scopes != self.board.scopes:
                    self.board.scopes = answer.scopes
                self.board.lends = answer.lends
        self._answered()
        self.board.ready.set()
        return True

    def _answered(self) -> None:
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
        while not self._stop.is_set():
            if not self._long_poll():
                self._stop.wait(self._interval_s)

    def stop(self) -> None:
        """Stops polling; returns within a second even with a long poll in flight.

        That request is abandoned, not cut: its thread ends when the answer comes (within `WAIT_S`,
        sooner from a stopping daemon), and the answer no longer matters: nothing reads the board.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1)

    def restart_in_child(self) -> None:
        """In a forked child, where the parent's thread does not run: polls on a new thread, unless stopped.

        The board keeps the parent's last answer until the child's first poll, which asks at once.
        """
        if self._stop.is_set():
            return
        self._lock = threading.Lock()
        self._revision = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher-killswitch", daemon=True)
        self._thread.start()
