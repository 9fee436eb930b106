"""Reading an HTTP request body safely: strict framing, size limits before and after decompression."""

from __future__ import annotations

import re
import time
import zlib
from email.message import Message
from io import BufferedIOBase

__all__ = ["BodyError", "body_length", "inflate", "read_body"]

_LENGTH = re.compile(r"[0-9]{1,20}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(;[^\r\n]*)?\r?\n")
_MAX_LINE = 4096  # a chunk-size line or a trailer field, extensions included
_MAX_TRAILERS = 32
_PIECE = 1 << 20


class BodyError(Exception):
    """The body cannot be accepted; `status` is the HTTP status to answer with (400, 413 or 415).

    After a BodyError from `body_length` or `read_body` the connection is out of step with the
    client (the rest of the body is unread, or its framing is unknown): answer and close it.
    """

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


def body_length(headers: Message, limit: int) -> int | None:
    """The request's Content-Length, or None for a chunked body; checked before a byte of it is read.

    Raises BodyError 400 for a length that is not a plain non-negative integer (`-1`, `1e3`),
    for lengths that disagree, and for a Transfer-Encoding other than `chunked`; 413 for a
    length over `limit`. A body with no Content-Length and no Transfer-Encoding is empty.
    """
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.strip().lower() != "chunked":
            raise BodyError(400, f"unsupported Transfer-Encoding {encoding!r}; send chunked or a Content-Length")
        return None
    values = {value.strip() for value in headers.get_all("content-length", [])}
    if not values:
        return 0
    if len(values) > 1 or not _LENGTH.fullmatch(text := values.pop()):
        raise BodyError(400, "Content-Length must be one non-negative integer")
    if (length := int(text)) > limit:
        raise BodyError(413, f"the body is over the {limit}-byte limit")
    return length


def read_body(rfile: BufferedIOBase, length: int | None, limit: int, *, within_s: float = 60.0) -> bytes:
    """Exactly the body `body_length` announced (None: chunked), never more than `limit` bytes of it.

    Blocks until the body has arrived. Raises BodyError 400 for a body that ends early, a
    malformed chunk, a connection that fails, or a body still arriving after `within_s` seconds
    (checked between pieces of 1 MiB, so a client sending slowly cannot hold a turn for long);
    413 for chunks adding up past `limit`.
    """
    deadline = time.monotonic() + within_s
    try:
        if length is None:
            return _read_chunked(rfile, limit, deadline)
        return _read_exactly(rfile, length, deadline)
    except OSError as error:  # a timeout or a reset: nobody may be left to read the answer
        raise BodyError(400, f"the body could not be read: {type(error).__name__}") from None


def _read_exactly(rfile: BufferedIOBase, size: int, deadline: float) -> bytes:
    parts: list[bytes] = []
    while size > 0:
        if time.monotonic() > deadline:
            raise BodyError(400, "the body did not arrive in time")
        part = rfile.read(min(size, _PIECE))
        if not part:
            raise BodyError(400, "the body ended before its announced length")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _read_chunked(rfile: BufferedIOBase, limit: int, deadline: float) -> bytes:
    parts: list[bytes] = []
    total = 0
    while size := _chunk_size(rfile.readline(_MAX_LINE + 1)):
        total += size
        if total > limit:
            raise BodyError(413, f"the body is over the {limit}-byte limit")
        parts.append(_read_exactly(rfile, size, deadline))
        if rfile.readline(3) not in (b"\r\n", b"\n"):
            raise BodyError(400, "a chunk of the body is not followed by CRLF")
    for _ in range(_MAX_TRAILERS + 1):
        line = rfile.readline(_MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return b"".join(parts)
        if not line.endswith(b"\n"):
            break
    raise BodyError(400, "the chunked body has no proper end (trailers too long, too many, or cut short)")


def _chunk_size(line: bytes) -> int:
    """The size on a chunk-size line: hex digits, optionally an extension; BodyError 400 for anything else."""
    match = _CHUNK_SIZE.fullmatch(line)
    if match is None:
        raise BodyError(400, "a chunk size is not a hexadecimal number on a line of its own")
    return int(match.group(1), 16)
