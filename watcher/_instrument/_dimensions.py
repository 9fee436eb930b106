"""A call's dimensions as span attributes: allow-listed, length-capped, user ids hashed on request.

Runs on the recorder's worker thread, never on the call path: the call path only keeps the
`watcher.attributes` mapping and the OpenTelemetry context it was made in (`CallInfo`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.util.types import AttributeValue

from ._failures import report_failure

__all__ = ["DEFAULT_NAMES", "DimensionPolicy", "KeyFile", "key_source", "span_name"]

log = logging.getLogger("watcher")

DEFAULT_NAMES = ("user", "tenant", "session", "conversation", "agent")
CONVENTIONS = {
    "user": "enduser.id",
    "session": "session.id",
    "conversation": "gen_ai.conversation.id",
    "agent": "gen_ai.agent.name",
}
"""Dimension names whose span attribute an OpenTelemetry semantic convention defines; others are `watcher.attr.*`."""

USER = "user"
TRUNCATED = "watcher.attributes.truncated"
HASHED = "watcher.enduser.id_hashed"
HASH_HEX_CHARS = 32  # 128 bits of HMAC-SHA256: collisions are out of reach for any number of users
KEY_FILE_NAME = "user-id-hash.key"

Attributes = dict[str, AttributeValue]


def span_name(name: str) -> str:
    """The span attribute a dimension is carried in: the convention's where there is one, else `watcher.attr.<name>`."""
    return CONVENTIONS.get(name) or f"watcher.attr.{name}"


class KeyFile:
    """The installation's secret for hashing user ids, in a file created on first use (0600).

    `get` reads it, or creates it with 32 random bytes (hex) when absent. Creation is atomic
    (written beside it, then linked into place), so processes starting together agree on one
    key. Raises OSError or ValueError when the file cannot be read or made, or is not a key.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._read() if self.path.exists() else self._create()
            return self._key

    def _read(self) -> bytes:
        text = self.path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
        if len(key) < 16:
            raise ValueError("the user-id hash key file holds fewer than 16 bytes")
        return key

    def _create(self) -> bytes:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(32) + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)
        return self._read()


class DimensionPolicy:
    """Which dimensions reach a span and in what form; built once by `instrument()` from the settings.

    `attributes(explicit, parent)` returns the span attributes for one call: the allowed names of
    `explicit` (the `watcher.attributes` blocks, which win) and, for allowed names they do not
    mention, the call's OpenTelemetry baggage under the dimension's name (`user`) or its span
    attribute's (`enduser.id`). A name that is not allowed is dropped, logged at WARNING once per
    name. A value longer than `max_length` is cut to it, and its name listed in
    `watcher.attributes.truncated`. With `hash_key`, the user id is replaced by
    `hmac_sha256(key, id)`'s first 32 hex digits (of the whole id, before any cut) and
    `watcher.enduser.id_hashed` is true; a key that cannot be had drops the user id (logged):
    the raw id is never sent in its place. Never raises.
    """

    def __init__(
        self,
        names: Iterable[str] = DEFAULT_NAMES,
        max_length: int = 128,
        hash_key: Callable[[], bytes] | None = None,
    ) -> None:
        self.names = frozenset(names)
        self.max_length = max_length
        self.hash_key = hash_key
        self._baggage_keys = tuple((name, (name, span_name(name))) for name in sorted(self.names))
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()

    def attributes(self, explicit: Mapping[str, str | None] | None, parent: Context | None) -> Attributes:
        try:
            return self._build(self._values(explicit or {}, parent))
        except Exception as exc:
            report_failure("add a call's dimensions to its span", exc)
            return {}

    def _values(self, explicit: Mapping[str, str | None], parent: Context | None) -> dict[str, str]:
        """The allowed dimensions' values: explicit first, then baggage for the names explicit leaves out."""
        values = {name: value for name, value in self.from_baggage(parent).items() if name not in explicit}
        for name, value in explicit.items():
            if name not in self.names:
                self._warn_once(name)
            elif value is not None:
                values[name] = value
        return values

    def from_baggage(self, parent: Context | None) -> dict[str, str]:
        """The allowed dimensions `parent`'s OpenTelemetry baggage has, under their names or span attribute names."""
        found = baggage.get_all(parent) if parent is not None else {}
        values: dict[str, str] = {}
        if not found:
            return values
        for name, keys in self._baggage_keys:
            for key in keys:
                value = found.get(key)
                if isinstance(value, str) and value:
                    values[name] = value
                    break
        return values

    def _build(self, values: Mapping[str, str]) -> Attributes:
        attributes: Attributes = {}
        truncated: list[str] = []
        for name, value in sorted(values.items()):
            if name == USER and self.hash_key is not None:
                hashed = self._hash(value)
                if hashed is not None:
                    attributes[span_name(name)] = hashed
                    attributes[HASHED] = True
                continue
            if len(value) > self.max_length:
                value = value[: self.max_length]
                truncated.append(name)
            attributes[span_name(name)] = value
        if truncated:
            attributes[TRUNCATED] = truncated
        return attributes

    def _hash(self, value: str) -> str | None:
        assert self.hash_key is not None
        try:
            key = self.hash_key()
        except Exception as exc:
            report_failure("read the user-id hash key (user ids are left off spans)", exc)
            return None
        return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:HASH_HEX_CHARS]

    def _warn_once(self, name: str) -> None:
        with self._warned_lock:
            if name in self._warned:
                return
            self._warned.add(name)
        log.warning(
            "watcher dropped the attribute %r: it is not in WATCHER_ATTRIBUTE_NAMES (%s); "
            "add it there to record it. Logged once per name",
            name,
            ",".join(sorted(self.names)),
        )


def key_source(secret: str | None, state_dir: Path) -> Callable[[], bytes]:
    """Where user ids' hash key comes from: `secret` (WATCHER_ATTRIBUTE_HASH_KEY) when given, else the key file
    in `state_dir`, read or made when the first user id is hashed (on the worker, not in `instrument()`)."""
    if secret:
        key = secret.encode("utf-8")
        return lambda: key
    return KeyFile(state_dir / KEY_FILE_NAME).get
