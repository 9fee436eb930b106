"""Reading an OTLP request body safely: size limits before and after decompression."""

from __future__ import annotations

import zlib

__all__ = ["BodyError", "inflate"]


class BodyError(Exception):
    """The body cannot be accepted; `status` is the HTTP status to answer with (400, 413 or 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decompressed per its Content-Encoding, never growing past `limit` bytes.

    A decompression bomb stops at `limit` (413), not after filling memory. `deflate` accepts
    both the zlib-wrapped form (the standard) and raw deflate (what some clients send).
    Raises BodyError.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return _bounded(body, zlib.MAX_WBITS | 16, limit)
    if encoding == "deflate":
        try:
            return _bounded(body, zlib.MAX_WBITS, limit)
        except BodyError as error:
            if error.status == 413:
                raise
            return _bounded(body, -zlib.MAX_WBITS, limit)
    raise BodyError(415, f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")


def _bounded(body: bytes, wbits: int, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as error:
        raise BodyError(400, f"the body is not valid compressed data: {error}") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise BodyError(413, f"the decompressed body is over the {limit}-byte limit")
    if not decompressor.eof:
        raise BodyError(400, "the compressed body is truncated")
    return out
