"""The "Claude spend" dashboard: where the money goes, what caching and batching save, what is estimated."""

from __future__ import annotations

from panels import (
    Json,
    bargauge,
    dashboard,
    layout,
    renamed,
    row,
    stat,
    table,
    target,
    timeseries,
    variable,
)

F = 'service=~"$service", request_type=~"$request_type", model=~"$model"'
RATE = "[$__rate_interval]"
RANGE = "[$__range]"


def _sum(metric: str, window: str, by: str = "", extra: str = "") -> str:
    """`sum [by (...)] (rate|increase(metric{filters}[window]))`: rate for $__rate_interval, else increase."""
    fn = "rate" if window == RATE else "increase"
    matchers = f"{F}, {extra}" if extra else F
    group = f" by ({by})" if by else ""
    return f"sum{group} ({fn}({metric}{{{matchers}}}{window}))"


def _per_hour(metric: str, by: str = "") -> str:
    return f"{_sum(metric, RATE, by)} * 3600"


def _or_zero(expr: str) -> str:
    """The expression, or 0 when it has no series (nothing batched or cached yet is $0, not a gap)."""
    return f"({expr} or vector(0))"


def _cache_hit_ratio(window: str) -> str:
    read = _sum("watcher_tokens_total", window, extra='type="cache_read"')
    prompt = _sum("watcher_tokens_total", window, extra='type=~"input|cache_read|cache_write"')
    return f"{read} / {prompt}"


def _caching_saved(window: str, scale: str = "") -> str:
    read = _or_zero(_sum("watcher_cache_read_savings_usd_total", window) + scale)
    premium = _or_zero(_sum("watcher_cache_write_premium_usd_total", window) + scale)
    return f"{read} - {premium}"


def _whole(unit: str) -> Json:
    """Counts shown whole: increase() extrapolates to the range's edges, so 10 requests can read 10.4."""
    return {"decimals": 0} if unit == "short" else {}


def _spend_overview() -> list[tuple[Json, int, int]]:
    per_request = f"{_sum('watcher_cost_usd_total', RANGE)} / {_sum('watcher_requests_total', RANGE)}"
    stats = [
        (
            "Spend in range",
            "Spend over the dashboard's time range.",
            _sum("watcher_cost_usd_total", RANGE),
            "currencyUSD",
        ),
        ("Requests in range", "Billed responses over the time range.", _sum("watcher_requests_total", RANGE), "short"),
        ("Cost per request", "Average spend per billed response over the time range.", per_request, "currencyUSD"),
        (
            "Cache hit ratio",
            "Share of prompt tokens read from the cache over the time range: cache reads / (uncached input + cache "
            "reads + cache writes).",
            _cache_hit_ratio(RANGE),
            "percentunit",
        ),
        (
            "Caching saved",
            "What prompt caching saved over the time range: cache-read savings against the uncached input rate, "
            "minus the premium paid for cache writes.",
            _caching_saved(RANGE),
            "currencyUSD",
        ),
    ]
    panels = [
        (stat(title, text, [target(expr, instant=True)], unit, defaults=_whole(unit)), 4, 4)
        for title, text, expr, unit in stats
    ]
    rate = stat(
        "Spend rate (USD/hour)",
        "Spend per hour at the current rate.",
        [target(_per_hour("watcher_cost_usd_total"))],
        "currencyUSD",
    )
    return [panels[0], (rate, 4, 4), *panels[1:]]


def _spend_over_time() -> list[tuple[Json, int, int]]:
    by_label = [
        (
            "request_type",
            "Spend by request type (USD/hour)",
            "Which kinds of work spend: the labels set with `watcher.request_type(...)`.",
        ),
        ("model", "Spend by model (USD/hour)", "Spend per model, as reported by the API."),
        ("service", "Spend by service (USD/hour)", "Spend per application (its OpenTelemetry `service.name`)."),
    ]
    graphs = [
        (
            timeseries(
                title,
                text,
                [target(_per_hour("watcher_cost_usd_total", label), f"{{{{{label}}}}}")],
                "currencyUSD",
                stack=True,
            ),
            8,
            8,
        )
        for label, title, text in by_label
    ]
    labels = "service, request_type, model"
    breakdown = table(
        "Spend by service, request type and model",
        "Over the dashboard's time range, most expensive first.",
        [
            target(_sum("watcher_cost_usd_total", RANGE, labels), table=True),
            target(_sum("watcher_requests_total", RANGE, labels), table=True),
            target(
                f"{_sum('watcher_cost_usd_total', RANGE, labels)} / {_sum('watcher_requests_total', RANGE, labels)}",
                table=True,
            ),
        ],
        "currencyUSD",
        columns={"Spend": "currencyUSD", "Requests": "short", "Cost per request": "currencyUSD"},
        sort_by="Spend",
    )
    return [*graphs, (breakdown, 24, 8)]


def _tokens_and_caching() -> list[tuple[Json, int, int]]:
    kinds = {"input": "input (uncached)", "output": "output", "cache_read": "cache read", "cache_write": "cache write"}
    tokens = timeseries(
        "Tokens per second by kind",
        "Billed tokens: uncached input, output, cache reads and cache writes.",
        [target(_sum("watcher_tokens_total", RATE, "type"), "{{type}}")],
        "short",
        overrides=[renamed(name, display) for name, display in kinds.items()],
    )
    hit_ratio = timeseries(
        "Cache hit ratio",
        "cache reads / (uncached input + cache reads + cache writes), in tokens.",
        [target(_cache_hit_ratio(RATE), "cache hit ratio")],
        "percentunit",
        defaults={"min": 0, "max": 1},
    )
    saved = timeseries(
        "What caching saved (USD/hour)",
        "Cache-read savings against the uncached input rate, the premium paid for cache writes, and the net.",
        [
            target(_per_hour("watcher_cache_read_savings_usd_total"), "read savings"),
            target(_per_hour("watcher_cache_write_premium_usd_total"), "write premium"),
            target(_caching_saved(RATE, " * 3600"), "net saved"),
        ],
        "currencyUSD",
    )
    return [(tokens, 8, 8), (hit_ratio, 8, 8), (saved, 8, 8)]


def _batches_and_estimates() -> list[tuple[Json, int, int]]:
    share = timeseries(
        "Share of spend through batches",
        "Spend on Message Batches as a share of all spend.",
        [
            target(
                f"{_or_zero(_sum('watcher_batch_cost_usd_total', RATE))} / {_sum('watcher_cost_usd_total', RATE)}",
                "through batches",
            )
        ],
        "percentunit",
        defaults={"min": 0, "max": 1},
    )
    batch_saved = stat(
        "Batching saved",
        "What the batch discount saved over the time range: the standard-rate cost minus the batch cost.",
        [target(_sum("watcher_batch_savings_usd_total", RANGE), instant=True)],
        "currencyUSD",
    )
    batch_saved_by_type = timeseries(
        "What batching saved by request type (USD/hour)",
        "Standard-rate cost minus batch cost, per request type.",
        [target(_per_hour("watcher_batch_savings_usd_total", "request_type"), "{{request_type}}")],
        "currencyUSD",
    )
    per_request = bargauge(
        "Average cost per request by request type",
        "Spend / billed responses over the time range.",
        [
            target(
                f"{_sum('watcher_cost_usd_total', RANGE, 'request_type')} / "
                f"{_sum('watcher_requests_total', RANGE, 'request_type')}",
                "{{request_type}}",
                instant=True,
            )
        ],
        "currencyUSD",
    )
    estimated = timeseries(
        "Spend on models priced by estimate (USD/hour)",
        "Models missing from the price table are priced by estimate (docs/pricing.md): add their prices.",
        [target(_per_hour("watcher_estimated_cost_usd_total", "model"), "{{model}}")],
        "currencyUSD",
    )
    return [(share, 6, 8), (batch_saved, 3, 8), (batch_saved_by_type, 5, 8), (per_request, 5, 8), (estimated, 5, 8)]


def _ingest() -> list[tuple[Json, int, int]]:
    outcomes = ["received", "stored", "duplicate", "rejected"]
    spans = timeseries(
        "Spans per second",
        "Cost spans the daemon received, stored, found already stored (retries), and rejected (malformed usage).",
        [target(f"sum(rate(watcher_spans_{o}_total{RATE}))", o) for o in outcomes],
        "short",
    )
    return [(spans, 24, 6)]


def claude_spend() -> Json:
    """The spend dashboard: where the money goes, what caching and batching save, what is estimated."""
    variables = [
        variable("service", "Service", "label_values(watcher_cost_usd_total, service)"),
        variable(
            "request_type", "Request type", 'label_values(watcher_cost_usd_total{service=~"$service"}, request_type)'
        ),
        variable(
            "model",
            "Model",
            'label_values(watcher_cost_usd_total{service=~"$service", request_type=~"$request_type"}, model)',
        ),
    ]
    panels = layout(
        [
            (None, _spend_overview()),
            (row("Spend over time"), _spend_over_time()),
            (row("Tokens and caching"), _tokens_and_caching()),
            (row("Batches, cost per request, estimates"), _batches_and_estimates()),
            (row("Ingest"), _ingest()),
        ]
    )
    return dashboard(
        "watcher-claude-spend",
        "Claude spend",
        "Spend on the Claude API as recorded by watcher: by request type, model and service.",
        panels,
        variables,
    )
