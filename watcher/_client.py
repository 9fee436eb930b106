"""`DaemonClient`: the one way the CLI and the hook talk to a watcher daemon's JSON API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["DaemonClient", "DaemonRefused"]


class DaemonRefused(OSError):
    """The daemon answered with an HTTP error; `status` is its code, the message its own words.

    An OSError, like an unreachable daemon, so a caller that only cares whether it got an
    answer catches one type; one that must tell a wrong token (401) apart reads `status`.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}".strip())
        self.status = status


class DaemonClient:
    """Sends GET and POST requests to `endpoint`, with the bearer `token` when one is set.

    Built once from the endpoint and token; each call blocks for at most `timeout_s` (or the
    per-call timeout). Raises DaemonRefused for an HTTP error status, OSError when the daemon
    cannot be reached, ValueError when a JSON answer cannot be parsed.
    """

    def __init__(self, endpoint: str, token: str | None = None, *, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, timeout_s: float | None = None) -> bytes:
        """The body of `GET {endpoint}{path}`."""
        return self._send(urllib.request.Request(self.endpoint + path, headers=self._headers), timeout_s)

    def get_json(self, path: str, timeout_s: float | None = None) -> Any:
        return json.loads(self.get(path, timeout_s))

    def post_json(self, path: str, body: bytes = b"", timeout_s: float | None = None) -> Any:
        """The parsed answer to `POST {endpoint}{path}` with `body`."""
        request = urllib.request.Request(self.endpoint + path, data=body, headers=self._headers, method="POST")
        return json.loads(self._send(request, timeout_s))

    def _send(self, request: urllib.request.Request, timeout_s: float | None) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as error:
            raise DaemonRefused(error.code, _error_text(error.read())) from None


def _error_text(body: bytes) -> str:
    """The `error` field of a JSON error answer, else the body as text (cut short)."""
    try:
        document = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:200]
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, str):
        return error
    return body.decode(errors="replace")[:200]
