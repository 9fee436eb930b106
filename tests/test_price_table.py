"""Loading the price table: the shipped data, user overrides, invalid files and name resolution."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from watcher.exceptions import ConfigError
from watcher.pricing import PriceTable, TokenUsage, default_price_table, load_price_table

AT = datetime(2026, 11, 25, tzinfo=UTC)
MILLION_IN = TokenUsage(input_tokens=10**6)
MILLION_OUT = TokenUsage(output_tokens=10**6)

# Every model id named in the reference pricing table, with the canonical id it prices as.
REFERENCE_IDS = {
    "claude-fable-5-2": "claude-fable-5-2",
    "claude-mythos-5-2": "claude-mythos-5-2",
    "claude-fable-5-1": "claude-fable-5-1",
    "claude-mythos-5-1": "claude-mythos-5-1",
    "claude-fable-5": "claude-fable-5",
    "claude-mythos-5": "claude-mythos-5",
    "claude-mythos-preview": "claude-mythos-preview",
    "claude-opus-5-5": "claude-opus-5-5",
    "claude-opus-5": "claude-opus-5",
    "claude-opus-4-8": "claude-opus-4-8",
    "claude-opus-4-7": "claude-opus-4-7",
    "claude-opus-4-6": "claude-opus-4-6",
    "claude-opus-4-5": "claude-opus-4-5",
    "claude-opus-4-5-20251101": "claude-opus-4-5",
    "claude-opus-4-1-20250805": "claude-opus-4-1",
    "claude-opus-4-20250514": "claude-opus-4",
    "claude-3-opus-20240229": "claude-3-opus",
    "claude-sonnet-5-5": "claude-sonnet-5-5",
    "claude-sonnet-5": "claude-sonnet-5",
    "claude-sonnet-4-6": "claude-sonnet-4-6",
    "claude-sonnet-4-5": "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
    "claude-sonnet-4-20250514": "claude-sonnet-4",
    "claude-3-7-sonnet-20250219": "claude-3-7-sonnet",
    "claude-3-5-sonnet-20240620": "claude-3-5-sonnet",
    "claude-3-5-sonnet-20241022": "claude-3-5-sonnet",
    "claude-haiku-5-5": "claude-haiku-5-5",
    "claude-haiku-4-5": "claude-haiku-4-5",
    "claude-haiku-4-5-20251001": "claude-haiku-4-5",
    "claude-3-5-haiku-20241022": "claude-3-5-haiku",
    "claude-3-haiku-20240307": "claude-3-haiku",
}


def write(tmp_path: Path, text: str) -> Path:
    """Write ``text`` to a fresh override file and return its path."""
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_table_has_a_version() -> None:
    """The shipped table carries its version string."""
    assert default_price_table().version == "2026-11-30"


def test_default_table_is_built_once() -> None:
    """``default_price_table`` returns the same cached table on every call."""
    assert default_price_table() is default_price_table()


@pytest.mark.parametrize(("name", "canonical"), REFERENCE_IDS.items())
def test_every_reference_id_resolves(name: str, canonical: str) -> None:
    """Each model id from the reference table resolves to its canonical entry."""
    assert default_price_table().resolve(name) == canonical


@pytest.mark.parametrize(
    "name",
    [
        "claude-haiku-4-5-20251001",
        "CLAUDE-Haiku-4-5",
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        "eu.anthropic.claude-haiku-4-5-20251001-v1:0",
        "global.anthropic.claude-haiku-4-5-20251001-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0",
        "claude-haiku-4-5@20251001",
        "publishers/anthropic/models/claude-haiku-4-5@20251001",
        "claude-haiku-4-5-20991231",
    ],
)
def test_snapshot_bedrock_and_vertex_names_resolve(name: str) -> None:
    """Dated, Bedrock, Vertex and differently-cased names all resolve to the canonical id."""
    assert default_price_table().resolve(name) == "claude-haiku-4-5"


def test_vertex_sonnet_v2_resolves() -> None:
    """Vertex's ``claude-3-5-sonnet-v2@20241022`` resolves to Claude 3.5 Sonnet."""
    assert default_price_table().resolve("claude-3-5-sonnet-v2@20241022") == "claude-3-5-sonnet"


def test_unknown_name_resolves_to_none() -> None:
    """``resolve`` returns None for a name not in the table, even though ``cost`` estimates it."""
    assert default_price_table().resolve("claude-opus-9") is None


def test_override_adds_a_model_and_overrides_a_field(tmp_path: Path) -> None:
    """A user file can add a model and change one field of a shipped model, keeping the rest."""
    table = load_price_table(
        write(
            tmp_path,
            """
            [[models]]
            id = "my-finetune"
            aliases = ["my-finetune-v2"]
            input = "1"
            output = "2"
            cache_read = "0.1"

            [[models]]
            id = "claude-sonnet-4-5"
            input = "4"
            """,
        )
    )
    assert table.resolve("my-finetune-v2") == "my-finetune"
    assert table.cost("my-finetune", MILLION_OUT, at=AT).total_usd == Decimal(2)
    # 100,000 x 4 / 1e6 = 0.4 (kept under the 200K long-context threshold)
    assert table.cost("claude-sonnet-4-5", TokenUsage(100_000), at=AT).total_usd == Decimal("0.4")
    assert table.cost("claude-sonnet-4-5", MILLION_OUT, at=AT).total_usd == Decimal(15)


def test_override_by_alias_changes_the_canonical_model(tmp_path: Path) -> None:
    """An override whose id is an alias changes the model that alias names."""
    table = load_price_table(write(tmp_path, '[[models]]\nid = "claude-opus-4-1-20250805"\noutput = "70"\n'))
    assert table.cost("claude-opus-4-1", MILLION_OUT, at=AT).total_usd == Decimal(70)


def test_override_adds_a_dated_change(tmp_path: Path) -> None:
    """A ``[[models.changes]]`` entry in a user file applies from its effective UTC day."""
    path = write(
        tmp_path,
        '[[models]]\nid = "claude-haiku-4-5"\n[[models.changes]]\neffective = 2027-01-01\ninput = "2"\n',
    )
    table = load_price_table(path)
    assert table.cost("claude-haiku-4-5", MILLION_IN, at=datetime(2026, 12, 31, tzinfo=UTC)).total_usd == 1
    assert table.cost("claude-haiku-4-5", MILLION_IN, at=datetime(2027, 1, 1, tzinfo=UTC)).total_usd == 2


def test_override_sets_unknown_default_and_family(tmp_path: Path) -> None:
    """``[unknown]`` and ``[families]`` in a user file choose the estimate models."""
    path = write(tmp_path, '[unknown]\nmodel = "claude-haiku-4-5"\n[families]\nopus = "claude-opus-4-1"\n')
    table = load_price_table(path)
    assert table.cost("mystery", MILLION_IN, at=AT).model == "claude-haiku-4-5"
    assert table.cost("claude-opus-9", MILLION_IN, at=AT).model == "claude-opus-4-1"


def test_override_version_defaults_to_shipped_plus_override(tmp_path: Path) -> None:
    """Without its own ``version``, an overridden table reports the shipped version plus '+override'."""
    assert load_price_table(write(tmp_path, "")).version == "2026-11-30+override"
    assert load_price_table(write(tmp_path, 'version = "acme-7"\n')).version == "acme-7"


def test_toml_floats_are_read_exactly(tmp_path: Path) -> None:
    """A bare TOML float such as 0.1 is read from its text, so it stays exact."""
    path = write(tmp_path, '[[models]]\nid = "x-model"\ninput = 0.1\noutput = 0.3\ncache_read = 0.01\n')
    table: PriceTable = load_price_table(path)
    # 3 x 10^6 tokens x 0.1 / 1e6 = 0.3 exactly (a binary float would give 0.30000000000000004)
    assert table.cost("x-model", TokenUsage(input_tokens=3 * 10**6), at=AT).total_usd == Decimal("0.3")


@pytest.mark.parametrize(
    ("text", "entry", "problem"),
    [
        ('[[models]]\nid = "claude-opus-4-5"\ninptu = "3"\n', "claude-opus-4-5", "unknown key 'inptu'"),
        (
            '[[models]]\nid = "new-model"\ninput = "3"\noutput = "15"\n',
            "new-model",
            "missing rate cache_read",
        ),
        (
            '[[models]]\nid = "claude-opus-4-5"\n[[models.changes]]\neffective = "2026-13-01"\ninput = "1"\n',
            "claude-opus-4-5",
            "effective is missing or not a date",
        ),
        ('[[models]]\nid = "claude-opus-4-5"\ninput = "three"\n', "claude-opus-4-5", "input is not a number"),
        ('[[models]]\nid = "claude-opus-4-5"\noutput = "-1"\n', "claude-opus-4-5", "output must be positive"),
        (
            '[[models]]\nid = "claude-opus-4-5"\nus_geo = "yes"\n',
            "claude-opus-4-5",
            "us_geo must be true or false",
        ),
        (
            '[[models]]\nid = "claude-opus-4-5"\nlong_context = { above = 1000, input = "9" }\n',
            "claude-opus-4-5",
            "long_context is missing cache_read, output",
        ),
        (
            '[[models]]\nid = "m-one"\naliases = ["claude-opus-4-5"]\ninput = 1\noutput = 1\ncache_read = 1\n',
            "m-one",
            "already belongs to model 'claude-opus-4-5'",
        ),
        ('[families]\nopus = "claude-opus-99"\n', "[families]", "'claude-opus-99' is not in the price table"),
        ("colour = 1\n", "top level", "unknown key 'colour'"),
    ],
)
def test_invalid_file_error_names_file_entry_and_problem(tmp_path: Path, text: str, entry: str, problem: str) -> None:
    """An invalid override raises ConfigError naming the file, the entry and what is wrong."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_price_table(path)
    message = str(caught.value)
    assert str(path) in message and entry in message and problem in message


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    """A file that is not valid TOML raises ConfigError naming the file."""
    path = write(tmp_path, "[[models]\n")
    with pytest.raises(ConfigError, match="invalid TOML") as caught:
        load_price_table(path)
    assert str(path) in str(caught.value)


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    """A path that cannot be read raises ConfigError saying to check the path."""
    with pytest.raises(ConfigError, match="check the path"):
        load_price_table(tmp_path / "absent.toml")


def test_docs_override_example_loads(tmp_path: Path) -> None:
    """The override example in docs/pricing.md is a valid price file that does what it says."""
    docs = Path(__file__).parent.parent / "docs" / "pricing.md"
    example = docs.read_text(encoding="utf-8").split("```toml\n", 1)[1].split("```", 1)[0]
    table = load_price_table(write(tmp_path, example))
    assert table.version == "acme-2026-12"
    assert table.resolve("claude-opus-6-20270115") == "claude-opus-6"
    assert table.cost("gpt-9", MILLION_IN, at=AT).model == "claude-sonnet-5-5"
    # 100,000 cache-read tokens: x 0.50 / 1e6 = 0.05 before 2027-03-01, x 0.25 / 1e6 = 0.025 from that day
    read = TokenUsage(cache_read_tokens=100_000)
    assert table.cost("claude-opus-6", read, at=AT).total_usd == Decimal("0.05")
    later = datetime(2027, 3, 1, tzinfo=UTC)
    assert table.cost("claude-opus-6", read, at=later).total_usd == Decimal("0.025")
