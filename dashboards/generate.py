"""Writes the Grafana dashboards: `python dashboards/generate.py [--out DIR]` (default: dashboards/grafana)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from budgets_board import budgets
from panels import Json
from spend_board import claude_spend

DASHBOARDS = {"claude-spend.json": claude_spend, "budgets.json": budgets}


def render(board: Json) -> str:
    """The file text of a dashboard: indented JSON, keys in the order built, a final newline."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Writes every dashboard into `--out`, replacing what is there: the JSON is generated, never hand-edited."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "grafana")
    out: Path = parser.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (out / name).write_text(render(build()), encoding="utf-8")


if __name__ == "__main__":
    main()
