"""Budget configuration: TOML parsed into Budgets, every mistake reported at its line with the fix."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.budgets import Budget, load_budgets, parse_budgets
from watcher.exceptions import ConfigError
from watcher.ledger import Scope

DOCS = Path(__file__).parent.parent / "docs" / "budgets.md"
EXAMPLE = """\
log_level = "info"

[alerts]
url = "mailto://ops@example.com"

[[budgets]]
name = "monthly-total"
limit_usd = 500
period = "month"
timezone = "Europe/Berlin"

[[budgets]]
name = "extraction-daily"
limit_usd = 20
period = "day"
scope = { request_type = "extraction" }
alert_at = 0.8
kill_at = 1.2
"""


def error_for(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_budgets(text, "budgets.toml")
    return str(caught.value)


def test_example_parses_into_budgets_in_file_order() -> None:
    """The issue's example yields two budgets with its values, zone, scope and default thresholds."""
    monthly, daily = parse_budgets(EXAMPLE)
    assert monthly == Budget("monthly-total", Decimal(500), "month", ZoneInfo("Europe/Berlin"), Scope())
    assert daily == Budget("extraction-daily", Decimal(20), "day", ZoneInfo("UTC"), Scope(request_type="extraction"))
    assert (monthly.alert_at, monthly.kill_at) == (Decimal("0.8"), Decimal("1.2"))


def test_scope_may_be_written_as_a_sub_table() -> None:
    """A [budgets.scope] table is read like an inline scope table, globs kept as written."""
    text = '[[budgets]]\nname = "x"\nlimit_usd = 1\nperiod = "hour"\n[budgets.scope]\nmodel = "claude-*"\n'
    assert parse_budgets(text)[0].scope == Scope(model="claude-*")


def test_fractional_money_keeps_its_decimal_text() -> None:
    """limit_usd = 0.1 becomes Decimal("0.1"), not the binary float's long expansion."""
    (budget,) = parse_budgets('[[budgets]]\nname = "x"\nlimit_usd = 0.1\nperiod = "day"\nalert_at = 0.3\n')
    assert (str(budget.limit_usd), str(budget.alert_at)) == ("0.1", "0.3")


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10**9), places=2, allow_nan=False))
def test_any_limit_written_in_toml_is_read_exactly(limit: Decimal) -> None:
    """Every positive amount with cents round-trips from TOML text to an equal Decimal."""
    (budget,) = parse_budgets(f'[[budgets]]\nname = "x"\nlimit_usd = {limit}\nperiod = "day"\n')
    assert budget.limit_usd == limit


def test_a_file_without_budgets_has_none() -> None:
    """A config with other settings but no [[budgets]] yields an empty list."""
    assert parse_budgets('log_level = "debug"\n[alerts]\nurl = "x"\n') == []


def test_load_budgets_reads_the_file(tmp_path: Path) -> None:
    """load_budgets parses the file at the path and names it in errors."""
    path = tmp_path / "watcher.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    assert [b.name for b in load_budgets(path)] == ["monthly-total", "extraction-daily"]
    path.write_text(EXAMPLE.replace('"day"', '"daily"'), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:15: "):
        load_budgets(path)


def test_load_budgets_reports_a_missing_file(tmp_path: Path) -> None:
    """An unreadable path raises ConfigError naming it and asking to check it."""
    with pytest.raises(ConfigError, match=r"cannot read budget file.*check the path"):
        load_budgets(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("old", "new", "line", "fragments"),
    [
        ("limit_usd = 500", "limit_usd = 500 500", 8, ["invalid TOML at column", "fix the syntax"]),
        ('name = "monthly-total"\n', "", 6, ["budget #1", "name is missing", 'add name = "']),
        ("limit_usd = 20\n", "", 12, ["'extraction-daily'", "limit_usd is missing", "add limit_usd = 500"]),
        ('period = "month"\n', "", 6, ["period is missing"]),
        ('"extraction-daily"', '"monthly-total"', 13, ["already used at line 7", "unique name"]),
        ("limit_usd = 500", "limit_usd = -5", 8, ["limit_usd = -5 is not a positive number"]),
        ("limit_usd = 500", "limit_usd = 0", 8, ["limit_usd = 0 is not a positive number"]),
        ("limit_usd = 500", 'limit_usd = "500"', 8, ["'500' is not a number", "bare number"]),
        ("limit_usd = 500", "limit_usd = nan", 8, ["not finite"]),
        ('"day"', '"daily"', 15, ["unknown period 'daily'", "did you mean 'day'", "hour, day, week, month"]),
        ('"Europe/Berlin"', '"Europe/Berln"', 10, ["unknown timezone 'Europe/Berln'", "did you mean 'Europe/Berlin'"]),
        ('"Europe/Berlin"', '"../../etc/passwd"', 10, ["unknown timezone", 'such as "Europe/Berlin"']),
        ("request_type =", "request =", 16, ["unknown key 'request' in scope", "'request_type'?", "environment"]),
        ('"extraction" }', "3 }", 16, ["scope request_type = 3 is not a string", "quote it"]),
        ('scope = { request_type = "extraction" }', 'scope = "extraction"', 16, ["is not a table"]),
        ("alert_at = 0.8", "alert_at = 1.5", 17, ["alert_at = 1.5 is not below kill_at = 1.2"]),
        ("kill_at = 1.2", "kill_at = 120", 18, ["kill_at = 120 is outside (0, 10]", "for 120%"]),
        ("alert_at = 0.8", "alert_at = 0", 17, ["alert_at = 0 is outside (0, 10]"]),
        ("kill_at = 1.2", "kil_at = 1.2", 18, ["unknown key 'kil_at'", "did you mean 'kill_at'", "alert_at, kill_at"]),
    ],
)
def test_mistakes_are_reported_at_their_line_with_the_fix(old: str, new: str, line: int, fragments: list[str]) -> None:
    """Each invalid value raises ConfigError as "source:line: what; fix", naming what is wrong."""
    assert old in EXAMPLE
    message = error_for(EXAMPLE.replace(old, new, 1))
    assert message.startswith(f"budgets.toml:{line}: ")
    assert "; " in message
    for fragment in fragments:
        assert fragment in message


def test_budgets_that_are_not_tables_are_refused() -> None:
    """A top-level budgets value that is not an array of tables says to use [[budgets]]."""
    assert error_for('x = 1\nbudgets = "all"\n') == (
        "budgets.toml:2: 'budgets' is not an array of tables; start each budget with [[budgets]]"
    )


def test_budget_constructed_in_code_is_validated() -> None:
    """Budget() raises ConfigError for out-of-range values, not only the TOML loader."""
    with pytest.raises(ConfigError, match="limit_usd = 0 is not a positive number"):
        Budget("x", Decimal(0), "day")
    with pytest.raises(ConfigError, match=r"alert_at 0.8 is not a Decimal; pass Decimal\("):
        Budget("x", Decimal(1), "day", alert_at=0.8)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown period 'daily'"):
        Budget("x", Decimal(1), "daily")  # type: ignore[arg-type]


def test_documented_examples_parse() -> None:
    """Every TOML block in docs/budgets.md is a valid budget configuration."""
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks
    for block in blocks:
        assert parse_budgets(block, str(DOCS))


def test_documented_python_example_runs() -> None:
    """The Python example in docs/budgets.md runs and its assertions hold."""
    (block,) = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    exec(compile(block, str(DOCS), "exec"), {})
