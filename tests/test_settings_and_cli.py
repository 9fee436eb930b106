"""Settings come from the documented sources with clear errors; the CLI and the README's examples work."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from watcher import Settings
from watcher._demo import run_demo
from watcher.cli import main
from watcher.testing import FakeAnthropic, OTLPReceiver

ROOT = Path(__file__).resolve().parents[1]


def test_environment_variables_override_the_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value in WATCHER_* wins over the same key in the file named by WATCHER_CONFIG."""
    config = tmp_path / "watcher.toml"
    config.write_text(
        'default_request_type = "from-file"\nendpoint = "http://10.0.0.1:4318"\n[[budgets]]\nname = "x"\n'
    )
    monkeypatch.setenv("WATCHER_CONFIG", str(config))
    monkeypatch.setenv("WATCHER_ENDPOINT", "http://127.0.0.1:9999/")
    settings = Settings()
    assert settings.default_request_type == "from-file"
    assert settings.endpoint == "http://127.0.0.1:9999"


def test_a_config_file_given_directly_is_read_without_touching_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Settings.from_file` reads the file it is given over WATCHER_CONFIG, and leaves the environment as it was."""
    named, given = tmp_path / "named.toml", tmp_path / "given.toml"
    named.write_text('default_request_type = "from-env-file"\n')
    given.write_text('default_request_type = "from-given-file"\n')
    monkeypatch.setenv("WATCHER_CONFIG", str(named))
    settings = Settings.from_file(given, listen="127.0.0.1:1")
    assert (settings.default_request_type, settings.listen) == ("from-given-file", "127.0.0.1:1")
    assert type(settings).config_file() == given and isinstance(settings, Settings)
    assert os.environ["WATCHER_CONFIG"] == str(named)
    assert Settings().default_request_type == "from-env-file"


def test_a_bad_endpoint_is_rejected_with_the_fix_in_the_message() -> None:
    """An endpoint without a scheme fails when settings are built, and says what to write instead."""
    with pytest.raises(ValidationError, match="must start with http"):
        Settings(endpoint="127.0.0.1:4318")


def test_export_delay_is_capped_at_one_second() -> None:
    """Spans must reach the daemon within a second, so a longer export delay is refused."""
    with pytest.raises(ValidationError):
        Settings(export_delay_ms=5000)


def test_price_command_prints_the_exact_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    """`watcher price` prices usage exactly: sonnet 4.6, 1000 in, 500 out, 10000 cache read."""
    assert main(["price", "claude-sonnet-4-6", "--input", "1000", "--output", "500", "--cache-read", "10000"]) == 0
    out = capsys.readouterr().out
    # 1000 x 3 + 500 x 15 + 10000 x 0.30 = 3000 + 7500 + 3000 = 13500 per 1e6
    assert re.search(r"total\s+\$0\.0135\b", out), out


def test_demo_drives_every_request_type_and_flags_the_estimated_model() -> None:
    """`watcher demo` needs no key or network and prints cost by request type and model."""
    out = io.StringIO()
    assert run_demo(out) == 0
    text = out.getvalue()
    for request_type in ("extraction", "summarise", "agent", "backfill", "experiment"):
        assert request_type in text
    assert "10 cost spans recorded" in text
    assert re.search(r"claude-nova-1 .* \*$", text, re.MULTILINE)
    assert re.search(r"^total .*0\.404210$", text, re.MULTILINE), text
    assert "ALERT: watcher: budget alert" in text and "ALERT: watcher: budget exhausted, calls refused" in text
    assert re.search(r"call +\d+: refused: budget 'extraction-daily'", text)
    assert re.search(r"extraction-daily .*exhausted", text)


def test_the_readme_quick_start_runs_as_written() -> None:
    """The README's instrumentation snippet, run as an app against the fake API, exports a span labelled with its
    request type and one carrying its dimensions."""
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("## Instrument your application", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    code = snippet.replace("messages=[...]", 'messages=[{"role": "user", "content": "hi"}]')
    with FakeAnthropic() as fake, OTLPReceiver() as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "WATCHER_", "ANTHROPIC_"))}
        env.update(ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY="test", WATCHER_ENDPOINT=receiver.endpoint)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        labelled, dimensioned = sorted(receiver.wait_for(2), key=lambda s: "enduser.id" in s.attributes)
    assert labelled.attributes["watcher.request_type"] == "extraction"
    assert labelled.attributes["gen_ai.request.model"] == "claude-haiku-4-5"
    assert dimensioned.attributes["enduser.id"] == "u-42"
    assert dimensioned.attributes["watcher.attr.tenant"] == "acme"
    assert dimensioned.attributes["gen_ai.agent.name"] == "triage"


def test_the_span_capture_example_in_the_testing_docs_passes() -> None:
    """docs/testing.md's SpanCapture example runs and its assertions hold."""
    text = (ROOT / "docs" / "testing.md").read_text()
    block = text.split("## Checking the spend your code reports", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/testing.md", "exec"), namespace)
    namespace["test_extraction_is_labelled_and_priced"]()  # type: ignore[operator]
