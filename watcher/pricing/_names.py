"""Normalising model names from the Anthropic API, Bedrock and Vertex to price-table keys."""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["candidates"]

# Bedrock: optional region/profile prefix ("us.", "eu.", "global.", ...), "anthropic.", a version suffix.
_BEDROCK = re.compile(r"^(?:[a-z0-9-]+\.)?anthropic\.(?P<name>.+?)(?:-v\d+(?::\d+)?)?$")
# A dated snapshot ("-20251001") or the "-latest" pointer at the end of a name.
_SNAPSHOT = re.compile(r"-(?:\d{8}|latest)$")


def candidates(name: str) -> Iterator[str]:
    """Yield lookup keys for ``name``, most specific first; all lower-case.

    Order: the name as given; without any path or ARN prefix; without the Bedrock wrapping;
    without a Vertex ``@date`` suffix; without a trailing ``-YYYYMMDD`` or ``-latest``.
    """
    key = name.strip().lower()
    yield key
    key = key.rsplit("/", 1)[-1]
    yield key
    bedrock = _BEDROCK.match(key)
    if bedrock:
        key = bedrock.group("name")
        yield key
    key = key.split("@", 1)[0]
    yield key
    yield _SNAPSHOT.sub("", key)
