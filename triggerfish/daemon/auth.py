"""API keys: made random, stored only as hashes, compared in constant time.

A key is 32 random bytes (``tf_`` + url-safe base64), so a plain SHA-256 is as strong as a
slow password hash would be: nobody can guess a preimage of 256 random bits. The config and the
data directory hold ``sha256:<hex>`` digests; the key itself is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from ..errors import ConfigurationError

__all__ = ["KeyRing", "hash_key", "new_key"]

PREFIX = "sha256:"


def new_key() -> str:
    """A fresh API key."""
    return "tf_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What the daemon stores for ``key``."""
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


def check_hash(entry: str) -> str:
    """A stored key hash, checked; raises ConfigurationError naming a malformed one."""
    digest = entry.removeprefix(PREFIX)
    if not entry.startswith(PREFIX) or len(digest) != 64:
        shown = entry[:12] + "..." if len(entry) > 12 else entry
        raise ConfigurationError(
            f"api_keys: {shown!r} is not a key hash (sha256:<64 hex digits>); "
            "make one with 'triggerfish keys create'"
        )
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise ConfigurationError("api_keys: a key hash has characters that are not hex") from None
    return entry.lower()


class KeyRing:
    """The hashes of the keys the daemon accepts."""

    def __init__(self, hashes: Iterable[str]) -> None:
        self._hashes = [check_hash(h).encode() for h in hashes]

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def accepts(self, key: str | None) -> bool:
        """Whether ``key`` is one of ours. Compares against every hash, in constant time."""
        if not key:
            return False
        presented = hash_key(key).encode()
        found = False
        for stored in self._hashes:
            found |= hmac.compare_digest(presented, stored)
        return found
