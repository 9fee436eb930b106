"""`watcher config show` prints each setting's effective value and its source, with secrets masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from watcher import Settings
from watcher._config_show import shown
from watcher.cli import main
from watcher.settings import AlertsConfig

pytestmark = pytest.mark.usefixtures("isolated")


def _show_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["config", "show", "--json", *argv]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_each_setting_is_shown_with_the_source_that_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key of the named file is `toml`, a `.env` line `.env`, a variable `env`, anything else `default`."""
    config = tmp_path / "settings.toml"
    config.write_text('default_request_type = "from-file"\n[alerts]\napprise_config = "/etc/apprise.yml"\n')
    (tmp_path / ".env").write_text("WATCHER_BUSY_WAIT_S=2\n")
    monkeypatch.setenv("WATCHER_LISTEN", "127.0.0.1:9")
    document = _show_json(capsys, "--config", str(config))
    assert document["config_file"] == str(config)
    found = {name: (item["source"], item["value"]) for name, item in document["settings"].items()}
    assert found["default_request_type"] == ("toml", "from-file")
    assert found["alerts.apprise_config"] == ("toml", "/etc/apprise.yml")
    assert found["alerts.urls"] == ("default", [])
    assert found["busy_wait_s"] == (".env", 2.0)
    assert found["listen"] == ("env", "127.0.0.1:9")
    assert found["endpoint"] == ("default", "http://127.0.0.1:4318")
    assert document["settings"]["listen"]["env"] == "WATCHER_LISTEN"
    assert document["settings"]["alerts.urls"]["env"] is None


def test_the_source_named_is_the_one_whose_value_won(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A setting given by the environment, `.env` and the config file at once is shown from the environment."""
    (tmp_path / "watcher.toml").write_text('listen = "127.0.0.1:1"\n')
    (tmp_path / ".env").write_text("WATCHER_LISTEN=127.0.0.1:2\n")
    monkeypatch.setenv("WATCHER_LISTEN", "127.0.0.1:3")
    assert _show_json(capsys)["settings"]["listen"] == {
        "env": "WATCHER_LISTEN",
        "source": "env",
        "value": "127.0.0.1:3",
    }
    monkeypatch.delenv("WATCHER_LISTEN")
    assert _show_json(capsys)["settings"]["listen"]["source"] == ".env"


def test_arguments_given_to_the_settings_are_shown_as_argument() -> None:
    """Values passed to `Settings(...)`, a table among them, are `argument`; the table's other key stays `default`."""
    values: dict[str, Any] = {"listen": "127.0.0.1:7", "alerts": AlertsConfig(urls=["json://localhost"])}
    found = {item.name: item.source for item in shown(Settings(**values), values)}
    assert (found["listen"], found["alerts.urls"], found["alerts.apprise_config"]) == (
        "argument",
        "argument",
        "default",
    )


def test_secrets_and_alert_urls_are_masked_in_text_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The token prints as `***` and apprise URLs as `scheme://***`: neither output carries a secret."""
    (tmp_path / "watcher.toml").write_text('[alerts]\nurls = ["slack://TokenA/TokenB/TokenC"]\n')
    monkeypatch.setenv("WATCHER_TOKEN", "s3cret-token")
    monkeypatch.setenv("WATCHER_ALERT_URLS", "mailto://user:hunter2@example.com,json://localhost/path-token")
    settings = _show_json(capsys)["settings"]
    assert settings["token"] == {"env": "WATCHER_TOKEN", "source": "env", "value": "***"}
    assert settings["alert_urls"]["value"] == ["mailto://***", "json://***"]
    assert settings["alerts.urls"] == {"env": None, "source": "toml", "value": ["slack://***"]}
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    for secret in ("s3cret", "hunter2", "path-token", "TokenA"):
        assert secret not in text
    assert '"***"' in text and '"slack://***"' in text


def test_the_text_names_the_config_file_and_each_settings_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text starts with the config file, then one line per setting: variable, source (`toml FILE`), value."""
    config = tmp_path / "named.toml"
    config.write_text('listen = "127.0.0.1:5"\n[alerts]\napprise_config = "a.yml"\n')
    monkeypatch.setenv("WATCHER_CONFIG", str(config))
    assert main(["config", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"config file: {config}"
    rows = {line.split("  ", 1)[0].strip(): line.split() for line in lines[1:]}
    assert rows["WATCHER_LISTEN"][1:] == ["toml", str(config), '"127.0.0.1:5"']
    assert rows["[alerts] apprise_config"][2:] == ["toml", str(config), '"a.yml"']
    assert rows["WATCHER_ENDPOINT"][1:] == ["default", '"http://127.0.0.1:4318"']
    assert len(rows) == len(list(shown(Settings())))


def test_config_show_refuses_a_config_mistake_in_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `--config` file that does not exist stops `config show` with the usual one-line error and exit code 2."""
    missing = tmp_path / "missing.toml"
    assert main(["config", "show", "--config", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err == f"{missing}: the config file does not exist; fix the path given to --config or WATCHER_CONFIG\n"
    )


def test_the_database_url_is_shown_with_only_its_password_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PostgreSQL URL keeps its user, host and database, so it still says which database it is, but its
    password (in the user part or as a query parameter) prints as `***`; a SQLite URL is shown whole."""
    monkeypatch.setenv("WATCHER_DATABASE_URL", "postgresql://watcher:hunter2@db.internal:5432/books?sslmode=require")
    assert _show_json(capsys)["settings"]["database_url"]["value"] == (
        "postgresql://watcher:***@db.internal:5432/books?sslmode=require"
    )
    monkeypatch.setenv("WATCHER_DATABASE_URL", "postgres://db.internal/books?password=hunter2&user=watcher")
    assert _show_json(capsys)["settings"]["database_url"]["value"] == (
        "postgres://db.internal/books?password=***&user=watcher"
    )
    assert main(["config", "show"]) == 0
    assert "hunter2" not in capsys.readouterr().out
    monkeypatch.setenv("WATCHER_DATABASE_URL", "sqlite:////var/lib/watcher/ledger.db")
    assert _show_json(capsys)["settings"]["database_url"]["value"] == "sqlite:////var/lib/watcher/ledger.db"
