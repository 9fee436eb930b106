"""Settings are documented once, beside their fields: the JSON schema and docs/configuration.md carry that text."""

from __future__ import annotations

from watcher import Settings


def test_every_setting_has_its_docstring_as_its_json_schema_description() -> None:
    """Each field of Settings and of its `[alerts]` table is described in the schema, by its docstring alone."""
    schema = Settings.model_json_schema()
    tables = [schema, *schema["$defs"].values()]
    described = {name: prop.get("description", "") for table in tables for name, prop in table["properties"].items()}
    assert len(described) == len(Settings.model_fields) + len(schema["$defs"]["AlertsConfig"]["properties"])
    assert all(described.values()), [name for name, text in described.items() if not text]
    assert not [name for name, text in described.items() if text.startswith("WATCHER_")]
    assert described["endpoint"].startswith("Base URL of the watcher daemon")
