"""Opening a ledger from its URL: the scheme chooses the backend."""

from __future__ import annotations

from pathlib import Path

from watcher.exceptions import ConfigError
from watcher.ledger._sqlite import SqliteLedger
from watcher.ledger._store import Ledger

__all__ = ["open_ledger"]

_SQLITE = "sqlite://"
_MEMORY = frozenset({"", ":memory:", "/:memory:"})
_NOT_YET = ("postgresql://", "postgres://", "postgresql+")


def open_ledger(url: str) -> Ledger:
    """The ledger at `url`, created (with its directory) if absent; call `close()` when done.

    `sqlite:///PATH` opens the file PATH, taken as written after the third slash: relative
    (`sqlite:///ledger.db`) or absolute (`sqlite:////var/lib/watcher/ledger.db`, which is also
    what `f"sqlite:///{absolute_path}"` gives); `~` is expanded. `sqlite://:memory:` (or
    `sqlite://`) is a private in-memory ledger for tests. Blocks while the file is migrated.
    Raises ConfigError for any other URL or a file that cannot be used as a ledger.
    """
    if url.startswith(_NOT_YET):
        raise ConfigError(
            f"ledger URL {url.split('://')[0]}://... is not yet supported: use sqlite:///path/to/ledger.db"
        )
    if not url.startswith(_SQLITE):
        raise ConfigError(f"ledger URL {url!r} is not understood: use sqlite:///path/to/ledger.db")
    rest = url.removeprefix(_SQLITE)
    if rest in _MEMORY:
        return SqliteLedger(":memory:")
    if not rest.startswith("/") or rest == "/" or "?" in rest:
        raise ConfigError(f"ledger URL {url!r} names no file: use sqlite:///path/to/ledger.db, without options")
    path = Path(rest[1:]).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory of ledger {path}: {exc}") from exc
    return SqliteLedger(path)
