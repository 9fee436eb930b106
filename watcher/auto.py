"""`import watcher.auto` instruments every Anthropic client in the process, with settings from the environment."""

from ._instrument._hook import instrument
from .settings import Settings

_settings = Settings()
if _settings.enabled:
    instrument(_settings)
