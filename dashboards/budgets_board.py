"""The "Claude budgets" dashboard: how close each budget is to its alert and kill lines, and what was sent."""

from __future__ import annotations

from panels import (
    Json,
    budget_thresholds,
    dashboard,
    dashed,
    gauge,
    layout,
    row,
    stat,
    state_timeline,
    table,
    target,
    thresholds,
    timeseries,
    value_mapping,
    variable,
)

B = 'budget=~"$budget"'
RATE = "[$__rate_interval]"
RANGE = "[$__range]"


def _budget_now() -> list[tuple[Json, int, int]]:
    used = gauge(
        "Budget used",
        "Spend / limit in the current period. Orange from 80% (alert), red from 120% (kill switch): the "
        "defaults; a budget's own thresholds are in the table.",
        [target(f"max by (budget) (watcher_budget_used_ratio{{{B}}})", "{{budget}}", instant=True)],
        "percentunit",
        steps=budget_thresholds(),
        defaults={"min": 0, "max": 1.5},
    )
    columns = {
        "Limit": ("watcher_budget_limit_usd", "currencyUSD"),
        "Spend": ("watcher_budget_spend_usd", "currencyUSD"),
        "Used": ("watcher_budget_used_ratio", "percentunit"),
        "Projected at period end": ("watcher_budget_projected_usd", "currencyUSD"),
        "Alert at": ("watcher_budget_alert_ratio", "percentunit"),
        "Kill at": ("watcher_budget_kill_ratio", "percentunit"),
        "Period ends": ("watcher_budget_period_end_timestamp_seconds", "dateTimeAsIso"),
    }
    scale = {"Period ends": " * 1000"}  # Grafana dates are milliseconds
    overview = table(
        "Budgets",
        "Each budget's current period: limit, spend, share used, projection at the current rate, thresholds.",
        [
            target(f"max by (budget) ({metric}{{{B}}}){scale.get(name, '')}", table=True)
            for name, (metric, _) in columns.items()
        ],
        "currencyUSD",
        columns={name: unit for name, (_, unit) in columns.items()},
    )
    return [(used, 8, 8), (overview, 16, 8)]


def _budget_over_time() -> list[tuple[Json, int, int]]:
    ratio = timeseries(
        "Used against the alert and kill lines",
        "Spend / limit. Dashed: each budget's alert and kill ratios; bands: the defaults, 80% and 120%.",
        [
            target(f"watcher_budget_used_ratio{{{B}}}", "{{budget}}"),
            target(f"watcher_budget_alert_ratio{{{B}}}", "{{budget}} alert at"),
            target(f"watcher_budget_kill_ratio{{{B}}}", "{{budget}} kill at"),
        ],
        "percentunit",
        steps=budget_thresholds(),
        threshold_style="line+area",
        overrides=[dashed("B"), dashed("C")],
        defaults={"min": 0},
    )
    spend = timeseries(
        "Spend against limit, projected to period end",
        "Spend in the current period, the limit, and the spend projected at period end at the current rate.",
        [
            target(f"watcher_budget_spend_usd{{{B}}}", "{{budget}} spend"),
            target(f"watcher_budget_limit_usd{{{B}}}", "{{budget}} limit"),
            target(f"watcher_budget_projected_usd{{{B}}}", "{{budget}} projected"),
        ],
        "currencyUSD",
        overrides=[dashed("B"), dashed("C")],
    )
    killswitch = state_timeline(
        "Kill switch",
        "Engaged from 120% of the limit (or by hand) until the period ends or it is released.",
        [target(f"max by (budget) (watcher_killswitch_engaged{{{B}}})", "{{budget}}")],
        [value_mapping("0", "released", "green", 0), value_mapping("1", "ENGAGED", "red", 1)],
    )
    period_left = stat(
        "Time to period end",
        "When each budget's current period ends and its spend starts again from zero.",
        [
            target(
                f"max by (budget) (watcher_budget_period_end_timestamp_seconds{{{B}}}) - time()",
                "{{budget}}",
                instant=True,
            )
        ],
        "s",
    )
    lent = timeseries(
        "Lent to running processes",
        "Headroom that instrumented processes hold as allowances and have not yet been seen spending "
        "(docs/enforcement.md), and how many processes hold one.",
        [
            target(f"max by (budget) (watcher_budget_lent_usd{{{B}}})", "{{budget}} lent"),
            target(f"max by (budget) (watcher_budget_allowance_holders{{{B}}})", "{{budget}} processes"),
        ],
        "currencyUSD",
        overrides=[
            {
                "matcher": {"id": "byRegexp", "options": ".* processes"},
                "properties": [{"id": "unit", "value": "short"}, {"id": "custom.axisPlacement", "value": "right"}],
            }
        ],
    )
    refused = timeseries(
        "Calls refused for want of headroom",
        "Calls refused because what was left before the budget's line could not cover their worst case.",
        [target(f"sum by (budget) (increase(watcher_allowance_refusals_total{{{B}}}{RATE}))", "{{budget}}")],
        "short",
    )
    return [
        (ratio, 12, 8),
        (spend, 12, 8),
        (killswitch, 16, 6),
        (period_left, 8, 6),
        (lent, 12, 6),
        (refused, 12, 6),
    ]


def _alerts() -> list[tuple[Json, int, int]]:
    sent = stat(
        "Alerts sent",
        "Budget alerts, kill-switch and release notices delivered over the time range.",
        [target(f"sum(increase(watcher_alerts_sent_total{RANGE}))", instant=True)],
        "short",
        defaults={"decimals": 0},
    )
    failed = stat(
        "Alert deliveries failed",
        "Failed deliveries over the time range (each is retried with backoff): check the alert URLs.",
        [target(f"sum(increase(watcher_alert_failures_total{RANGE}))", instant=True)],
        "short",
        defaults={"decimals": 0},
        steps=thresholds((1, "red")),
    )
    deliveries = timeseries(
        "Alert deliveries",
        "Delivered and failed alert deliveries per interval.",
        [
            target(f"sum(increase(watcher_alerts_sent_total{RATE}))", "sent"),
            target(f"sum(increase(watcher_alert_failures_total{RATE}))", "failed"),
        ],
        "short",
        overrides=[
            {
                "matcher": {"id": "byName", "options": "failed"},
                "properties": [{"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}}],
            }
        ],
    )
    up = stat(
        "Daemon",
        "Whether Prometheus can scrape the watcher daemon (job `watcher`).",
        [target('max(up{job="watcher"})', instant=True)],
        "short",
        defaults={"mappings": [value_mapping("0", "DOWN", "red", 0), value_mapping("1", "up", "green", 1)]},
    )
    return [(sent, 4, 6), (failed, 4, 6), (deliveries, 12, 6), (up, 4, 6)]


def budgets() -> Json:
    """The budgets dashboard: how close each budget is to its alert and kill lines, and what was sent."""
    panels = layout(
        [
            (None, _budget_now()),
            (row("Over the period"), _budget_over_time()),
            (row("Alerts"), _alerts()),
        ]
    )
    return dashboard(
        "watcher-budgets",
        "Claude budgets",
        "watcher's budgets: spend against limits, the 80% alert and 120% kill lines, kill switches and alerts.",
        panels,
        [variable("budget", "Budget", "label_values(watcher_budget_limit_usd, budget)")],
    )
