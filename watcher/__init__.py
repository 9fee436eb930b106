"""watcher: spend observability and budget enforcement for applications that call the Claude API."""

from ._instrument._context import attributes, request_type
from ._instrument._hook import flush, instrument, uninstrument
from ._version import __version__
from .exceptions import BudgetExceeded, ConfigError, PricingError, WatcherError
from .settings import Settings

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "PricingError",
    "Settings",
    "WatcherError",
    "__version__",
    "attributes",
    "flush",
    "instrument",
    "request_type",
    "uninstrument",
]
