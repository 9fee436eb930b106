"""Database URLs: which ones name PostgreSQL, and how to show one without its password."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["hide_password", "postgres_dsn"]

_POSTGRES = ("postgresql://", "postgres://")


def postgres_dsn(url: str | None) -> str | None:
    """The libpq URL of a PostgreSQL database URL, None for any other (or none).

    `postgresql://` and `postgres://` are taken as they are; a driver suffix written for other tools
    (`postgresql+psycopg://`) is dropped, so every spelling of one database reaches the same database.
    """
    if not url:
        return None
    if url.startswith(_POSTGRES):
        return url
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith("postgresql+"):
        return f"postgresql://{rest}"
    return None


def hide_password(url: str) -> str:
    """`url` with its password shown as `***` (in the user part, or a `password=` query parameter), all else kept,
    so logs and `watcher config show` still tell which database it is; a URL that cannot be parsed shows its
    scheme alone."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return f"{url.partition('://')[0]}://..."
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    in_query = any(key == "password" for key, _ in pairs)
    if password is None and not in_query:
        return url  # untouched: rebuilding would drop the empty host of `sqlite:////path`
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = parts.query
    if in_query:
        query = urlencode([(key, "***" if key == "password" else value) for key, value in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
