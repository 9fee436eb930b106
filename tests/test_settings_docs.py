"""Settings are documented once, beside their fields: the JSON schema and docs/configuration.md carry that text."""

from __future__ import annotations

import re
from pathlib import Path

from watcher import Settings
from watcher._config_doc import REGENERATE, env_var, leaves, update
from watcher.settings import CONFIG_FILE_ENV

ROOT = Path(__file__).resolve().parents[1]
NOT_SETTINGS = {CONFIG_FILE_ENV, "WATCHER_HEALTHCHECK_URL"}
"""Variables the docs may name that are not fields: the config file's path, and the container's health check's."""


def test_every_setting_has_its_docstring_as_its_json_schema_description() -> None:
    """Each field of Settings and of its `[alerts]` table is described in the schema, by its docstring alone."""
    schema = Settings.model_json_schema()
    tables = [schema, *schema["$defs"].values()]
    described = {name: prop.get("description", "") for table in tables for name, prop in table["properties"].items()}
    assert len(described) == len(Settings.model_fields) + len(schema["$defs"]["AlertsConfig"]["properties"])
    assert all(described.values()), [name for name, text in described.items() if not text]
    assert not [name for name, text in described.items() if text.startswith("WATCHER_")]
    assert described["endpoint"].startswith("Base URL of the watcher daemon")


def test_docs_configuration_md_is_generated_from_the_current_model() -> None:
    """The settings tables in docs/configuration.md are what the model renders today; the failure says how to fix."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert update(text) == text, f"docs/configuration.md is stale; run: {REGENERATE}"


def test_a_new_setting_shows_in_the_tables_with_its_variable_type_default_and_docstring() -> None:
    """A field added to the model makes the docs stale until regenerated, and gets a row of its own."""

    class Grown(Settings):
        retries: int = 3
        """How many times to try again."""

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "| `WATCHER_RETRIES` | integer | `3` | How many times to try again. |" in update(text, Grown)


def test_every_watcher_variable_the_readme_and_docs_name_is_a_setting() -> None:
    """A `WATCHER_*` name in README.md or docs/ is a field of the model (or the config file's path variable)."""
    known = {env_var(path) for path, _ in leaves()} | NOT_SETTINGS
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named = set(re.findall(r"\bWATCHER_[A-Z0-9_]*[A-Z0-9]\b", page.read_text(encoding="utf-8")))
        assert named <= known, f"{page.name} names {sorted(named - known)}, which the settings model does not have"
