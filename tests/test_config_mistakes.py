"""Config mistakes are refused where they are made: a missing file, a misspelt key, bad TOML, a bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from watcher import Settings
from watcher.cli import main
from watcher.daemon import build
from watcher.exceptions import ConfigError

pytestmark = pytest.mark.usefixtures("isolated")


def test_a_config_file_named_on_purpose_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Settings.from_file` and WATCHER_CONFIG refuse a missing file; the implicit ./watcher.toml may be absent."""
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing\.toml: the config file does not exist; .*--config"):
        Settings.from_file(missing)
    monkeypatch.setenv("WATCHER_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="WATCHER_CONFIG"):
        Settings()
    monkeypatch.delenv("WATCHER_CONFIG")
    assert Settings().listen == "127.0.0.1:4318" and Settings.config_file() is None


def test_the_daemon_refuses_a_budget_file_that_does_not_exist(tmp_path: Path) -> None:
    """`build` given a config file that is not there raises instead of starting with no budgets."""
    settings = Settings(listen="127.0.0.1:0", grpc_listen="", state_dir=tmp_path / "state")
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        build(settings, config_file=tmp_path / "missing.toml").start().stop()  # stopped if it was built


def test_serve_with_a_missing_config_file_exits_2_with_one_line_on_stderr(tmp_path: Path) -> None:
    """`watcher serve --config missing.toml` prints one line naming the file, no traceback, and exits 2."""
    env = {**os.environ, "WATCHER_STATE_DIR": str(tmp_path / "state"), "WATCHER_GRPC_LISTEN": ""}
    command = [sys.executable, "-m", "watcher.cli", "serve", "--config", "missing.toml", "--listen", "127.0.0.1:0"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "missing.toml: the config file does not exist; fix the path given to --config or WATCHER_CONFIG"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'endpoint = "http://127.0.0.1:4318"\nlisen = "0.0.0.0:4318"\n',
            ":2: unknown key 'lisen' at the top level; did you mean 'listen'?",
        ),
        (
            '[[budgets]]\nname = "a"\n\n[alerts]\nurl = ["json://x"]\n',
            ":5: unknown key 'url' in [alerts]; did you mean 'urls'?",
        ),
        ('alerts.url = ["json://x"]\n', ":1: unknown key 'url' in [alerts]; did you mean 'urls'?"),
        (
            'listen = "127.0.0.1:1"\n\n[alert]\nurls = []\n',
            ":3: unknown key 'alert' at the top level; did you mean 'alerts'?",
        ),
        ("zzz = 1\n", ":1: unknown key 'zzz' at the top level; use one of "),
    ],
)
def test_an_unknown_key_is_refused_at_its_line_with_the_closest_valid_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    """A key that no setting, budget list or alerts field reads is refused at its line, naming the likely key."""
    config = tmp_path / "watcher.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as refused:
        Settings.from_file(config)
    assert str(refused.value).startswith(f"{config}{expected}"), refused.value
    if expected.endswith("use one of "):  # no close key: every valid one is listed
        assert all(key in str(refused.value) for key in ("alerts", "budgets", "listen", "token")), refused.value


def test_budgets_and_alerts_are_allowed_beside_the_settings(tmp_path: Path) -> None:
    """The file's settings, `[[budgets]]` and `[alerts]` are read together without complaint."""
    config = tmp_path / "watcher.toml"
    config.write_text('listen = "127.0.0.1:1"\n[alerts]\nurls = ["json://x"]\n[[budgets]]\nname = "a"\n')
    assert Settings.from_file(config).alerts.urls == ["json://x"]


def test_bad_toml_syntax_is_refused_at_its_line_and_column(tmp_path: Path) -> None:
    """A syntax error in the config file is a ConfigError at `file:line`, with tomllib's column and reason."""
    config = tmp_path / "watcher.toml"
    config.write_text('listen = "127.0.0.1:1"\nendpoint = http://x\n')
    with pytest.raises(ConfigError, match=rf"^{config}:2: invalid TOML at column 12: Invalid value; fix the syntax"):
        Settings.from_file(config)
    config.write_text('listen = "127.0.0.1:1"\nx = [\n')  # cut off: tomllib names no column
    with pytest.raises(ConfigError, match=rf"^{config}:2: invalid TOML at the end of the file: Invalid value; fix"):
        Settings.from_file(config)


def test_a_config_mistake_stops_any_command_with_one_line_and_exit_2(
    tmp_path: Path, refused_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`watcher status` reading ./watcher.toml with a misspelt key prints that one error and exits 2."""
    (tmp_path / "watcher.toml").write_text('\nendpont = "http://127.0.0.1:1"\n')
    assert main(["status"]) == 2
    assert capsys.readouterr().err == (
        "watcher.toml:2: unknown key 'endpont' at the top level; did you mean 'endpoint'?\n"
    )


def test_an_invalid_setting_value_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A setting that fails validation names the setting, its value and both places to fix it, in one line."""
    monkeypatch.setenv("WATCHER_ENDPOINT", "127.0.0.1:4318")
    assert main(["killswitch", "status"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("invalid setting endpoint = '127.0.0.1:4318': Value error, must start with http://")
    assert line.endswith("fix WATCHER_ENDPOINT or endpoint in the config file")


def test_a_variable_that_cannot_be_parsed_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A WATCHER_* value that is not the JSON it must be (WATCHER_ALERTS) is one line and exit 2, no traceback."""
    monkeypatch.setenv("WATCHER_ALERTS", "urls=slack://x")
    assert main(["status"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith('invalid settings: error parsing value for field "alerts"')
