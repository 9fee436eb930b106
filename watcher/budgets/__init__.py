"""Budgets: their TOML configuration, calendar period windows and threshold evaluation."""

from watcher.budgets._config import DEFAULT_ALERT_AT, DEFAULT_KILL_AT, Budget, load_budgets, parse_budgets
from watcher.budgets._evaluate import BudgetState, Level, Threshold
from watcher.budgets._period import PERIODS, Period, Window, period_window

__all__ = [
    "DEFAULT_ALERT_AT",
    "DEFAULT_KILL_AT",
    "PERIODS",
    "Budget",
    "BudgetState",
    "Level",
    "Period",
    "Threshold",
    "Window",
    "load_budgets",
    "parse_budgets",
    "period_window",
]
