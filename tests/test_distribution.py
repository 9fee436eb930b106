"""The installed distribution: its name on the package index, its command, and the entry points others find."""

from __future__ import annotations

import importlib.metadata


def test_the_distribution_is_claude_spend_watcher_and_its_command_is_watcher() -> None:
    """The package installs as `claude-spend-watcher` (`watcher` is another project) with the `watcher` command."""
    dist = importlib.metadata.distribution("claude-spend-watcher")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"watcher": "watcher.cli:main"}
    assert dist.version == __import__("watcher").__version__


def test_the_instrumentor_is_registered_where_opentelemetry_instrument_looks() -> None:
    """The `opentelemetry_instrumentor` entry point `anthropic_spend` loads watcher's BaseInstrumentor subclass."""
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

    dist = importlib.metadata.distribution("claude-spend-watcher")
    found = {ep.name: ep for ep in dist.entry_points if ep.group == "opentelemetry_instrumentor"}
    assert set(found) == {"anthropic_spend"}
    instrumentor = found["anthropic_spend"].load()
    assert issubclass(instrumentor, BaseInstrumentor)
    assert instrumentor.__module__ == "watcher.instrumentation"
