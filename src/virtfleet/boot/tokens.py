"""Per-host install tokens: a random secret handed to one machine in its iPXE script.

The token proves that a kickstart fetch or a callback comes from the machine `boot serve` gave
the script to. Only its SHA-256 is stored: the token is 256 random bits, so a slow password
hash would add nothing, and a stolen database does not yield a usable token. Tokens expire
(--token-ttl) and are replaced each time the machine fetches its script again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

TOKEN_BYTES = 32
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")  # what token_urlsafe makes, with room


def new_token() -> str:
    """A URL-safe secret: it travels in a URL on the kernel command line."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def refusal(token: str | None, stored_hash: str | None, expires_at: datetime | None,
            now: datetime) -> str | None:
    """Why `token` is refused for a host holding (stored_hash, expires_at), or None if it is
    accepted. The reason never contains the token."""
    if not token:
        return "no token given"
    if stored_hash is None or expires_at is None:
        return "no token is issued to this host (it has not fetched its script, or is done)"
    if not _TOKEN_RE.match(token) or not hmac.compare_digest(hash_token(token), stored_hash):
        return "wrong token"
    if now >= expires_at:
        return f"token expired at {expires_at:%Y-%m-%d %H:%M:%S} UTC"
    return None
