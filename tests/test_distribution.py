"""The installed distribution: its name on the package index, its command, and the entry points others find."""

from __future__ import annotations

import importlib.metadata


def test_the_distribution_is_claude_spend_watcher_and_its_command_is_watcher() -> None:
    """The package installs as `claude-spend-watcher` (`watcher` is another project) with the `watcher` command."""
    dist = importlib.metadata.distribution("claude-spend-watcher")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"watcher": "watcher.cli:main"}
    assert dist.version == __import__("watcher").__version__
