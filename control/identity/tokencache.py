"""A short-lived in-process cache of validated tokens (as Keystone's auth_token middleware
keeps one): every gateway request checks a token, and a database lookup per request
costs more than the rest of a small-object GET.

Entries are keyed by the token's sha256 (tokens are secrets: the clear token is never
stored, here or in the database), live ``ttl`` seconds at most, and hold the token's
expiry, which is checked on every hit. A revocation in this process (logout, token
renewal, disabling a user, a password change, a membership change) drops the entries at
once; another process (a second API server, the CLI) sees it only after ``ttl``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: Entries kept at most (the oldest is dropped first).
MAX_ENTRIES = 10_000


class TokenCache:
    """token hash -> (principal, token expiry), for ``ttl`` seconds of ``clock``."""

    def __init__(self, ttl: float, size: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._entries: OrderedDict[str, tuple[float, Any, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[Any, float] | None:
        """(principal, expiry) cached for ``key`` less than ``ttl`` ago, else None."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if self.clock() >= hit[0]:
            del self._entries[key]
            return None
        return hit[1], hit[2]

    def put(self, key: str, principal: Any, expires: float) -> None:
        """Remember a validated token (nothing when the TTL is 0: the cache is off)."""
        if self.ttl <= 0:
            return
        self._entries[key] = (self.clock() + self.ttl, principal, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, key: str) -> None:
        """Forget one token (revoked)."""
        self._entries.pop(key, None)

    def drop_user(self, uuid: str) -> None:
        """Forget every token of a user (disabled, renewed, password or projects changed)."""
        for key in [k for k, v in self._entries.items() if v[1].uuid == uuid]:
            del self._entries[key]
