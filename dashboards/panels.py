"""Builders for Grafana 11 dashboard JSON (schemaVersion 39): plain dicts, no dependency, same input same JSON."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

DATASOURCE: Json = {"type": "prometheus", "uid": "prometheus"}
"""The one datasource every panel, target and variable uses (provisioned with this uid)."""

ALERT_RATIO, KILL_RATIO = 0.8, 1.2
"""The budgets' default thresholds; per-budget values come from the `watcher_budget_*_ratio` gauges."""

WIDTH = 24  # Grafana's grid is 24 columns wide


def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Json:
    """One PromQL query; `instant` for single-number panels, `table` for table panels (implies instant)."""
    instant = instant or table
    return {
        "datasource": dict(DATASOURCE),
        "editorMode": "code",
        "expr": expr,
        "format": "table" if table else "time_series",
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "refId": "A",
    }


def thresholds(*steps: tuple[float, str]) -> Json:
    """Absolute threshold steps above a green base."""
    return {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}, *({"color": c, "value": v} for v, c in steps)],
    }


def budget_thresholds() -> Json:
    """Orange from the default alert ratio, red from the default kill ratio."""
    return thresholds((ALERT_RATIO, "orange"), (KILL_RATIO, "red"))


def _panel(kind: str, title: str, description: str, targets: list[Json], unit: str, **extra: Any) -> Json:
    defaults: Json = {
        "unit": unit,
        "thresholds": extra.pop("steps", thresholds()),
        "color": {"mode": "palette-classic"},
    }
    defaults.update(extra.pop("defaults", {}))
    return {
        "datasource": dict(DATASOURCE),
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": extra.pop("overrides", [])},
        "options": extra.pop("options", {}),
        "targets": _with_refs(targets),
        "title": title,
        "type": kind,
        **extra,
    }


def timeseries(
    title: str, description: str, targets: list[Json], unit: str, *, stack: bool = False, **extra: Any
) -> Json:
    """A time series graph; `stack` stacks the series (shares of one total)."""
    custom: Json = {
        "drawStyle": "line",
        "fillOpacity": 25 if stack else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": extra.pop("threshold_style", "off")},
    }
    custom.update(extra.pop("custom", {}))
    legend = {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True}
    options = {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}}
    defaults = {"custom": custom, **extra.pop("defaults", {})}
    return _panel("timeseries", title, description, targets, unit, options=options, defaults=defaults, **extra)


def stat(title: str, description: str, targets: list[Json], unit: str, **extra: Any) -> Json:
    """One big number (the last value of each query), with a sparkline when the query is a range."""
    options = {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": "auto",
    }
    return _panel("stat", title, description, targets, unit, options=options, **extra)


def gauge(title: str, description: str, targets: list[Json], unit: str, **extra: Any) -> Json:
    """A dial per series, its colour bands drawn from the threshold steps."""
    options = {
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showThresholdLabels": False,
        "showThresholdMarkers": True,
    }
    return _panel("gauge", title, description, targets, unit, options=options, **extra)


def bargauge(title: str, description: str, targets: list[Json], unit: str, **extra: Any) -> Json:
    """Horizontal bars, one per series, for comparing a handful of values."""
    options = {
        "displayMode": "gradient",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "valueMode": "color",
    }
    return _panel("bargauge", title, description, targets, unit, options=options, **extra)


def table(
    title: str, description: str, targets: list[Json], unit: str, *, columns: dict[str, str], sort_by: str = ""
) -> Json:
    """Instant queries joined into one row per label set.

    `columns` names each query's column, in query order, and gives its unit (`unit` is the default);
    `sort_by` names the column sorted on, largest first.
    Queries should aggregate `by` the row labels, so that no stray label (`__name__`, `instance`)
    keeps their rows apart.
    """
    renames = {f"Value #{t['refId']}": name for t, name in zip(_with_refs(targets), columns, strict=True)}
    transformations = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": renames}},
    ]
    overrides = [
        {"matcher": {"id": "byName", "options": name}, "properties": [{"id": "unit", "value": u}]}
        for name, u in columns.items()
        if u != unit
    ]
    options: Json = {"cellHeight": "sm", "footer": {"show": False}, "showHeader": True}
    if sort_by:
        options["sortBy"] = [{"desc": True, "displayName": sort_by}]
    return _panel(
        "table",
        title,
        description,
        targets,
        unit,
        options=options,
        transformations=transformations,
        overrides=overrides,
    )


def _with_refs(targets: list[Json]) -> list[Json]:
    """The targets lettered A, B, C ... in order, as Grafana names them."""
    return [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]


def state_timeline(title: str, description: str, targets: list[Json], mappings: list[Json], **extra: Any) -> Json:
    """Coloured bands of a state per series over time; `mappings` give each value its text and colour."""
    options = {
        "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "auto",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    defaults = {"custom": {"fillOpacity": 70, "lineWidth": 0}, "mappings": mappings}
    extra.update(options=options, defaults=defaults)
    return _panel("state-timeline", title, description, targets, "short", **extra)


def value_mapping(value: str, text: str, color: str, index: int) -> Json:
    """Shows a raw value as text in a colour."""
    return {"options": {value: {"color": color, "index": index, "text": text}}, "type": "value"}


def dashed(ref: str) -> Json:
    """An override drawing one query's series dashed and unfilled (limits, thresholds, projections)."""
    return {
        "matcher": {"id": "byFrameRefID", "options": ref},
        "properties": [
            {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }


def renamed(name: str, display: str) -> Json:
    """An override showing the series named `name` as `display`."""
    return {"matcher": {"id": "byName", "options": name}, "properties": [{"id": "displayName", "value": display}]}


def variable(name: str, label: str, query: str) -> Json:
    """A multi-select query variable with All (matching everything, `.*`) selected."""
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": dict(DATASOURCE),
        "definition": query,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }


def row(title: str) -> Json:
    """A row header spanning the grid."""
    return {"collapsed": False, "panels": [], "title": title, "type": "row"}


def layout(sections: list[tuple[Json | None, list[tuple[Json, int, int]]]]) -> list[Json]:
    """Places panels left to right, wrapping at the grid width, and numbers them 1, 2, 3 ... in order.

    Each section is an optional row header and its panels as (panel, width, height).
    """
    placed: list[Json] = []
    x = y = line_height = 0
    for header, panels in sections:
        if header is not None:
            if x:
                x, y, line_height = 0, y + line_height, 0
            placed.append({**header, "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}})
            y += 1
        for panel, width, height in panels:
            if x + width > WIDTH:
                x, y, line_height = 0, y + line_height, 0
            placed.append({**panel, "gridPos": {"h": height, "w": width, "x": x, "y": y}})
            x, line_height = x + width, max(line_height, height)
    return [{"id": number, **panel} for number, panel in enumerate(placed, start=1)]


def dashboard(uid: str, title: str, description: str, panels: list[Json], variables: list[Json]) -> Json:
    """A whole dashboard, last 24 hours, refreshed every 30 s, linked to the other watcher dashboards by tag."""
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": False,
                "keepTime": True,
                "tags": ["watcher"],
                "targetBlank": False,
                "title": "watcher",
                "type": "dashboards",
            }
        ],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["watcher", "claude"],
        "templating": {"list": variables},
        "time": {"from": "now-24h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }
