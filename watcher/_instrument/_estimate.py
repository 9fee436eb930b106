"""A high estimate of a request's input tokens from its size, for a stream that ends before it reports usage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["BYTES_PER_TOKEN", "ESTIMATE_FLAG", "IMAGE_TOKENS", "input_tokens_bound"]

BYTES_PER_TOKEN = 3
IMAGE_TOKENS = 4_800
ESTIMATE_FLAG = "estimated_input_from_request"
_SIZED = ("system", "messages", "tools")


def input_tokens_bound(body: Mapping[str, Any] | None) -> int:
    """The input tokens a Messages request `body` is taken to bill when the API never said: its size over 3.

    The size is that of the compact UTF-8 JSON of its `system`, `messages` and `tools`, less
    commas and brackets (every string and key with its quotes, every number), divided by
    `BYTES_PER_TOKEN` (3) and rounded up; a base64 image counts as its data's bytes over 3 but
    at most `IMAGE_TOKENS` (4,800: about the most one image costs, on the models that read
    images at the highest resolution). It errs high, since spend reported too low is what a
    budget cannot recover from: English prose runs near 4 bytes a token, code and other
    scripts nearer 3, and JSON keys and quotes are mostly not billed. Base64 PDFs, billed by
    page rather than by byte, are where it errs furthest. Pure and cheap (no serialization: an
    ASCII string's size is its length), so it runs when the request is sent, and the hook
    keeps this number, never the body.
    """
    if not body:
        return 0
    sizes = [0, 0]  # text bytes, image tokens
    for key in _SIZED:
        _add(body.get(key), sizes)
    return _ceil_div(sizes[0], BYTES_PER_TOKEN) + sizes[1]


def _add(node: object, sizes: list[int]) -> None:
    """Adds `node`'s JSON bytes to `sizes[0]`, and its base64 images' tokens to `sizes[1]`."""
    if isinstance(node, str):
        sizes[0] += (len(node) if node.isascii() else len(node.encode())) + 2
    elif isinstance(node, dict):
        data = _base64_image(node)
        if data is not None:
            sizes[1] += min(_ceil_div(len(data), BYTES_PER_TOKEN), IMAGE_TOKENS)
            return
        for key, value in node.items():
            _add(str(key), sizes)
            sizes[0] += 1
            _add(value, sizes)
    elif isinstance(node, list | tuple):
        for item in node:
            _add(item, sizes)
    elif node is not None:
        sizes[0] += len(str(node))


def _base64_image(block: dict[Any, Any]) -> str | None:
    """The data of an image block with a base64 source; None for any other object."""
    if block.get("type") != "image":
        return None
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        data: str = source["data"]
        return data
    return None


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
