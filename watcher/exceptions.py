"""The errors watcher raises; each message says what to do about it."""

from __future__ import annotations

from datetime import datetime


class WatcherError(Exception):
    """Base class of every error watcher raises on purpose."""


class ConfigError(WatcherError):
    """A setting, price file or config file is invalid; raised when it is loaded, never on a call."""


class PricingError(WatcherError):
    """A price table or usage record cannot be priced as given."""


class BudgetExceeded(WatcherError):
    """A budget covers this call and has no room for it, so it was refused before a byte was sent.

    Raised by the instrumentation hook instead of the Anthropic call: when the budget's kill
    switch is engaged, or when what is left before its kill line cannot cover the call's worst
    case (docs/enforcement.md). It is the one error the hook lets through to the application on
    purpose. `spend_usd` is the budget's spend as last known to this process.
    """

    def __init__(
        self,
        budget: str,
        *,
        spend_usd: float,
        limit_usd: float,
        resets_at: datetime | None = None,
        reason: str = "is over its kill threshold",
    ) -> None:
        self.budget = budget
        self.spend_usd = spend_usd
        self.limit_usd = limit_usd
        self.resets_at = resets_at
        reset = f", resets at {resets_at.isoformat()}" if resets_at else ""
        spent, limit = (f"${v:,.2f}" if v >= 10 else f"${v:,.4f}" for v in (spend_usd, limit_usd))
        super().__init__(f"budget {budget!r} {reason}: {spent} spent of {limit}{reset}")
