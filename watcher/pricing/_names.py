"""Normalising model names from the Anthropic API, Bedrock and Vertex to price-table keys."""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["GLOBAL", "REGIONAL_ENDPOINT", "bedrock_endpoint", "candidates", "vertex_endpoint"]

GLOBAL, REGIONAL_ENDPOINT = "global", "regional"
"""The values of ``TokenUsage.endpoint``: where a Bedrock or Vertex AI call was served."""

# Bedrock: optional region/profile prefix ("us.", "eu.", "global.", ...), "anthropic.", a version suffix.
_BEDROCK = re.compile(r"^(?:[a-z0-9-]+\.)?anthropic\.(?P<name>.+?)(?:-v\d+(?::\d+)?)?$")
# A Bedrock id's own part (after any ARN path): an optional profile prefix, then "anthropic.".
_BEDROCK_ID = re.compile(r"^(?:(?P<profile>[a-z0-9-]+)\.)?anthropic\.")
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


def bedrock_endpoint(model: str) -> str | None:
    """``"global"`` for a Bedrock ``global.`` inference profile, ``"regional"`` for any other Bedrock id
    (a geographic profile such as ``us.``, ``eu.``, ``apac.``, ``jp.``, ``au.``, or a plain in-region
    ``anthropic.claude-...`` id, also inside an ARN); None for a name that is not a Bedrock id.

    Bedrock's regional and cross-region (geographic) profiles cost more than the global one on
    recent models; an unknown profile prefix is taken as regional, as only ``global.`` is exempt.
    """
    found = _BEDROCK_ID.match(model.strip().lower().rsplit("/", 1)[-1])
    if found is None:
        return None
    return GLOBAL if found.group("profile") == GLOBAL else REGIONAL_ENDPOINT


def vertex_endpoint(location: str | None) -> str | None:
    """``"global"`` for the Vertex AI location ``global``, ``"regional"`` for any other (a region such as
    ``us-east5``, or a multi-region such as ``us`` or ``eu``); None when the location is unknown."""
    if not location:
        return None
    return GLOBAL if location.strip().lower() == GLOBAL else REGIONAL_ENDPOINT
