"""Login throttling: failed logins counted per user name and per client address over a
sliding window; past the limit the next attempt is refused with 429 (TooManyRequests)
before any password is checked. In memory, per API-server process."""

from __future__ import annotations

import time
from collections import defaultdict, deque

from archipelago.errors import TooManyRequests


class Throttle:
    """Counts failures by key; ``check`` raises TooManyRequests while a key is over."""

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures[key]
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def check(self, *keys: str) -> None:
        """TooManyRequests when any key had ``attempts`` failures within the window."""
        now = time.monotonic()
        for key in keys:
            if key and len(self._recent(key, now)) >= self.attempts:
                raise TooManyRequests("too many failed logins: try again later")

    def failed(self, *keys: str) -> None:
        """Count one failure for every key."""
        now = time.monotonic()
        for key in keys:
            if key:
                self._failures[key].append(now)

    def succeeded(self, name_key: str) -> None:
        """A successful login clears its name's failures (not the address's)."""
        self._failures.pop(name_key, None)
