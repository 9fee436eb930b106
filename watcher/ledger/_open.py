"""Opening a ledger from its URL: the scheme chooses the backend."""

from __future__ import annotations

from pathlib import Path

from watcher.exceptions import ConfigError
from watcher.ledger._sqlite import SqliteLedger
from watcher.ledger._store import Ledger

__all__ = ["open_ledger"]

_SQLITE = "sqlite://"
_MEMORY = frozenset({"", ":memory:", "/:memory:"})
_POSTGRES = ("postgresql://", "postgres://")
_USE = "use sqlite:///path/to/ledger.db or postgresql://user@host/database"


def open_ledger(url: str, *, read_only: bool = False) -> Ledger:
    """The ledger at `url`, created (with its directory) if absent; call `close()` when done.

    With `read_only`, the file must exist and is only read (SQLite `mode=ro`): never created,
    never migrated; ConfigError when it is absent, for a reader that must not invent an empty ledger.

    `postgresql://...` (or `postgres://...`, any URL libpq accepts) opens the ledger in that
    PostgreSQL database, shared by every daemon given the same URL (`PostgresLedger`; needs the
    `postgres` extra): its tables are created or migrated unless `read_only`. ConfigError, the
    password masked, when the server cannot be reached or psycopg rejects the URL.

    `sqlite:///PATH` opens the file PATH, taken as written after the third slash: relative
    (`sqlite:///ledger.db`) or absolute (`sqlite:////var/lib/watcher/ledger.db`, which is also
    what `f"sqlite:///{absolute_path}"` gives); `~` is expanded. `sqlite://:memory:` (or
    `sqlite://`) is a private in-memory ledger for tests. Blocks while the file is migrated.
    Raises ConfigError for any other URL or a file that cannot be used as a ledger.
    """
    if url.startswith(_POSTGRES):
        return _open_postgres(url, read_only)
    if not url.startswith(_SQLITE):
        shown = f"{url.partition('://')[0]}://..." if "://" in url else repr(url)  # never a password
        raise ConfigError(f"ledger URL {shown} is not understood: {_USE}")
    rest = url.removeprefix(_SQLITE)
    if rest in _MEMORY and not read_only:
        return SqliteLedger(":memory:")
    if not rest.startswith("/") or rest in ("/", *_MEMORY) or "?" in rest:
        raise ConfigError(f"ledger URL {url!r} names no file: use sqlite:///path/to/ledger.db, without options")
    path = Path(rest[1:]).expanduser()
    if read_only:
        if not path.is_file():
            raise ConfigError(f"no ledger file at {path}; check the path (reading a ledger never creates one)")
        return SqliteLedger(path, read_only=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory of ledger {path}: {exc}") from exc
    return SqliteLedger(path)


def _open_postgres(url: str, read_only: bool) -> Ledger:
    """A `PostgresLedger`, imported only now: psycopg is an optional dependency."""
    try:
        from watcher.ledger._postgres import PostgresLedger
    except ImportError as exc:
        raise ConfigError(
            f"a postgresql:// ledger needs psycopg ({exc}): pip install 'claude-spend-watcher[postgres]'"
        ) from None
    return PostgresLedger(url, read_only=read_only)
