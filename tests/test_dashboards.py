"""The Grafana dashboards: generated, consistent, wired to the provisioned Prometheus datasource."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
BOARD_FILES = sorted((DASHBOARDS / "grafana").glob("*.json"))
UID = "prometheus"
UNITS = {"currencyUSD", "short", "percentunit", "s", "dateTimeAsIso"}
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "state-timeline", "row"}
BUILTINS = {"__rate_interval", "__range", "__interval", "__range_s", "__interval_ms", "__all"}
VARIABLE = re.compile(r"\$\{?(\w+)")

Board = dict[str, Any]


def load(path: Path) -> Board:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def panels(board: Board) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(board: Board) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variables(board: Board) -> list[dict[str, Any]]:
    return board["templating"]["list"]  # type: ignore[no-any-return]


boards = pytest.mark.parametrize("path", BOARD_FILES, ids=[p.stem for p in BOARD_FILES])


def test_both_dashboards_are_committed() -> None:
    """The spend and the budgets dashboards are both there."""
    assert [p.name for p in BOARD_FILES] == ["budgets.json", "claude-spend.json"]


def test_the_committed_json_is_exactly_what_the_generator_writes(tmp_path: Path) -> None:
    """Nobody hand-edits the JSON out of step: running dashboards/generate.py reproduces it byte for byte."""
    subprocess.run([sys.executable, str(DASHBOARDS / "generate.py"), "--out", str(tmp_path)], check=True)
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == [p.name for p in BOARD_FILES]
    for path in BOARD_FILES:
        assert (tmp_path / path.name).read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{path.name} differs from the generator's output: run `python dashboards/generate.py` and commit"
        )


@boards
def test_dashboards_target_grafana_11_with_known_panel_types(path: Path) -> None:
    """schemaVersion 39, a uid, and only panel types Grafana 11 ships."""
    board = load(path)
    assert board["schemaVersion"] == 39 and board["uid"].startswith("watcher-")
    assert {p["type"] for p in panels(board)} <= PANEL_TYPES


@boards
def test_panel_ids_are_unique(path: Path) -> None:
    """Grafana keys panel state by id: no two panels share one."""
    ids = [p["id"] for p in panels(load(path))]
    assert len(ids) == len(set(ids)), sorted(ids)


@boards
def test_panels_stay_on_the_grid_and_do_not_overlap(path: Path) -> None:
    """Every panel fits the 24-column grid and no two panels cover the same cell."""
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(load(path)):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


@boards
def test_every_query_uses_the_provisioned_prometheus_datasource(path: Path) -> None:
    """Each panel with queries, each of its targets, and each variable name the datasource uid `prometheus`."""
    board = load(path)
    for panel in panels(board):
        if panel.get("targets"):
            assert panel["datasource"] == {"type": "prometheus", "uid": UID}, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == UID, (panel["title"], target["refId"])
                assert target["expr"].strip(), (panel["title"], target["refId"])
    for variable in variables(board):
        assert variable["datasource"]["uid"] == UID, variable["name"]


@boards
def test_every_variable_is_declared_and_used(path: Path) -> None:
    """Each declared variable filters at least one panel query; each `$var` in any query is declared or built in."""
    board = load(path)
    declared = [v["name"] for v in variables(board)]
    in_panels = {name for _, expr in queries(board) for name in VARIABLE.findall(expr)}
    in_variables = {name for v in variables(board) for name in VARIABLE.findall(v["query"]["query"])}
    assert set(declared) <= in_panels, f"declared but unused: {set(declared) - in_panels}"
    assert (in_panels | in_variables) - BUILTINS <= set(declared)


@boards
def test_variables_are_multi_select_with_all_matching_everything(path: Path) -> None:
    """Every variable is a label_values query, multi-select, with All sent to Prometheus as `.*`."""
    for variable in variables(load(path)):
        assert variable["type"] == "query" and variable["query"]["query"].startswith("label_values(")
        assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"


def test_the_spend_dashboard_filters_by_service_request_type_and_model_and_budgets_by_budget() -> None:
    """The variables the brief of each dashboard names, in that order."""
    names = {p.stem: [v["name"] for v in variables(load(p))] for p in BOARD_FILES}
    assert names == {"claude-spend": ["service", "request_type", "model"], "budgets": ["budget"]}


@boards
def test_units_are_from_the_allowed_set(path: Path) -> None:
    """Money in currencyUSD, counts short, ratios percentunit (plus seconds and dates): every panel sets one."""
    for panel in panels(load(path)):
        if not panel.get("targets"):
            continue
        config = panel["fieldConfig"]
        assert config["defaults"]["unit"] in UNITS, panel["title"]
        for override in config["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, panel["title"]


def test_money_panels_are_in_dollars_and_ratio_panels_in_percent() -> None:
    """A panel titled as spend, savings or cost shows USD; a ratio, share or used panel shows percent."""
    for path in BOARD_FILES:
        for panel in filter(lambda p: p.get("targets"), panels(load(path))):
            title, unit = panel["title"].lower(), panel["fieldConfig"]["defaults"]["unit"]
            if "usd/hour" in title or title.startswith(("spend", "what", "cost")) or "saved" in title:
                assert unit == "currencyUSD", panel["title"]
            if "ratio" in title or "share" in title or title == "budget used":
                assert unit == "percentunit", panel["title"]


def test_the_datasource_is_provisioned_as_the_default_prometheus_with_the_uid_the_dashboards_use() -> None:
    """Grafana's datasource file parses and defines uid `prometheus` at the compose service's address."""
    config = yaml.safe_load((DASHBOARDS / "provisioning/datasources/prometheus.yml").read_text(encoding="utf-8"))
    [source] = config["datasources"]
    assert (source["uid"], source["type"], source["url"]) == (UID, "prometheus", "http://prometheus:9090")
    assert source["isDefault"] is True


def test_the_dashboard_provider_reads_the_directory_compose_mounts() -> None:
    """Grafana's dashboard provider parses and loads files from /var/lib/grafana/dashboards."""
    config = yaml.safe_load((DASHBOARDS / "provisioning/dashboards/watcher.yml").read_text(encoding="utf-8"))
    [provider] = config["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
