"""Re-issuing a request while its peer restarts: the one retry-while-PeerDied loop.

A peer killed or restarting fails its requests with PeerDied; the supervisor restarts
it within seconds, and every request the callers retry is idempotent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from archipelago.errors import PeerDied

T = TypeVar("T")
#: Pause between attempts: a restarted peer binds its port within tens of milliseconds.
PAUSE = 0.05


def retry_blocking(fn: Callable[[], T], seconds: float, pause: float = PAUSE) -> T:
    """``fn()``, called again after PeerDied until ``seconds`` have passed (then raised)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except PeerDied:
            if time.monotonic() > deadline:
                raise
        time.sleep(pause)


async def retry_async(fn: Callable[[], Awaitable[T]], seconds: float, pause: float = PAUSE) -> T:
    """``await fn()``, awaited again after PeerDied until ``seconds`` have passed (then raised)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await fn()
        except PeerDied:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(pause)
