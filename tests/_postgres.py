"""A PostgreSQL database of the test's own on the machine's server (127.0.0.1:5432, trust auth), dropped after.

CI and this machine run PostgreSQL; set WATCHER_TEST_POSTGRES to another server's URL (a database
the tests may create and drop databases from). Without a server, the tests that need one skip,
saying why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

SERVER = os.environ.get("WATCHER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped (with whatever still holds it open) on exit."""
    psycopg = pytest.importorskip("psycopg")
    name = f"watcher_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL at {SERVER} ({error}); set WATCHER_TEST_POSTGRES")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield SERVER.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
