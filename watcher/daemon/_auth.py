"""The bearer-token check both of the daemon's ports make."""

from __future__ import annotations

import hmac

__all__ = ["bearer_ok"]


def bearer_ok(authorization: str, token: str | None) -> bool:
    """True when no token is required, or `authorization` is `Bearer <token>`.

    The scheme is matched case-insensitively (RFC 9110: `bearer x` and `BEARER x` are the same
    credentials) and may be followed by more than one space; the token itself is compared in
    constant time, so its content cannot be guessed from the answer's timing.
    """
    if token is None:
        return True
    scheme, _, given = authorization.strip().partition(" ")
    matched = hmac.compare_digest(given.strip().encode(), token.encode())
    return scheme.lower() == "bearer" and matched
