"""Pure budget evaluation: spend against thresholds and its projection to the period end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from watcher.budgets._config import Budget
from watcher.budgets._period import Window

__all__ = ["BudgetState", "Level", "Threshold"]

Level = Literal["ok", "alert", "kill"]
Threshold = Literal["alert", "kill"]
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """The spend of one budget within one period window, at one moment.

    Raises ``ValueError`` on construction for a negative spend or a window that is empty,
    reversed or naive. Pure and immutable; safe to share between threads.
    """

    budget: Budget
    window: Window
    spend_usd: Decimal

    def __post_init__(self) -> None:
        start, end = self.window
        if start.tzinfo is None or end.tzinfo is None or not start < end:
            raise ValueError(f"window {self.window!r} is not an aware [start, end) with start < end; use period_window")
        if self.spend_usd < 0:
            raise ValueError(f"spend_usd {self.spend_usd} is negative; pass the window's total spend (>= 0)")

    @property
    def used_ratio(self) -> Decimal:
        """Spend as a fraction of the limit: 1 means the limit is exactly used up."""
        return self.spend_usd / self.budget.limit_usd

    @property
    def level(self) -> Level:
        """The highest threshold reached: kill at spend >= kill_at x limit, alert at >= alert_at x limit, else ok."""
        reached = _reached(self.budget, self.spend_usd)
        return reached[-1] if reached else "ok"

    def projected_usd(self, at: datetime) -> Decimal:
        """Spend at the window's end if it keeps growing at its average rate so far.

        ``spend x window length / elapsed``, with ``at`` clamped into the window: at or before
        the start, and at or after the end, the projection is the spend itself. Never below it.
        """
        start, end = self.window
        elapsed, length = min(max(at - start, timedelta(0)), end - start), end - start
        if not elapsed:
            return self.spend_usd
        projected = self.spend_usd * (length // _MICROSECOND) / (elapsed // _MICROSECOND)
        return max(projected, self.spend_usd)  # guards the last digit of rounding


def _reached(budget: Budget, spend: Decimal) -> tuple[Threshold, ...]:
    """The thresholds ``spend`` has reached under ``budget``, lowest first."""
    if spend >= budget.kill_at * budget.limit_usd:
        return ("alert", "kill")
    if spend >= budget.alert_at * budget.limit_usd:
        return ("alert",)
    return ()
