"""A bound port in this process and its event-loop pump (uvloop add_reader on its eventfd).

One port can serve requests (a :class:`~archipelago.peers.peer.Peer`) and receive
replies (an :class:`~archipelago.peers.client.AsyncClient`) at the same time, as
the mapper does. The pump drains both rings; only when both are empty does it
publish "sleeping" and wait on the eventfd, so busy traffic costs no syscalls.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from archipelago.peers.registry import PeerLink

#: Microseconds to poll the rings (in C, GIL released) before sleeping: a request or
#: reply arriving within this window costs no eventfd syscall and no context switch.
#: Off by default: on an oversubscribed 2-core host spinning starved the other side
#: (C-client PING rate 0.3M/s with 50 us vs 0.9-2.2M/s without, benchmarks/peers.py).
SPIN_US = int(os.environ.get("ARCHIPELAGO_PEER_SPIN_US", "0"))


class Port:
    """Port ``no`` bound through ``link`` (static when ``port`` is given, else dynamic)."""

    def __init__(self, link: PeerLink, port: int | None = None) -> None:
        self.link = link
        self.seg = link.segment
        self.lib = self.seg.lib
        self.no, self.gen = link.bind(port)
        self.efd = link.efds[self.no]
        self.server: Any = None
        self.client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._wake: set[int] = set()
        self._idle = 0

    #: Ports attached in this process: spinning only pays when one port owns the loop.
    _attached = 0

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start pumping this port from ``loop`` (idempotent)."""
        if self._loop is None:
            Port._attached += 1
            self._loop = loop or asyncio.get_running_loop()
            self._loop.add_reader(self.efd, self._on_wake)
            self.kick()

    def detach(self) -> None:
        """Stop pumping."""
        if self._loop is not None:
            Port._attached -= 1
            self._loop.remove_reader(self.efd)
            self._loop = None

    def kick(self) -> None:
        """Schedule a pump soon (after a completion, or new work submitted locally)."""
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._pump)

    def defer_wake(self, port: int) -> None:
        """Signal ``port`` (if it sleeps) once, after the callbacks of this loop iteration.

        Everything submitted or completed meanwhile rides on one wake-up, so a burst
        of requests finds the consumer awake instead of paying a syscall each.
        """
        if not self._wake:
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._flush)
        self._wake.add(port)

    def _flush(self) -> None:
        lib, base, efds = self.lib, self.seg.base, self.link.efds
        wake, self._wake = self._wake, set()
        for port in wake:
            lib.ap_wake(base, port, efds[port])

    def _on_wake(self) -> None:
        try:
            os.eventfd_read(self.efd)
        except BlockingIOError:
            pass
        self._pump()  # directly: a loop iteration less per wake-up

    def _pump(self) -> None:
        self._scheduled = False
        if self._loop is None:
            return
        lib, base, no = self.lib, self.seg.base, self.no
        progress = False
        if self.client is not None and self.client.drain():
            progress = True
        if self.server is not None and self.server.drain():
            progress = True
        if progress:
            self._idle = 0
            self.kick()
            return
        mask = (1 if self.server is not None and self.server.wants_requests else 0) | (
            2 if self.client is not None else 0)
        if self._wake or Port._attached > 1 or self._busy():
            # wake-ups pending, other ports or callbacks to serve: do not spin, let them run
            again = not lib.ap_prepare_sleep(base, no, mask)
        else:
            again = bool(mask and SPIN_US and lib.ap_spin_wait(base, no, mask, SPIN_US)) or \
                not lib.ap_prepare_sleep(base, no, mask)
        if again:
            # a ring whose head slot a dead producer claimed looks non-empty until the
            # registry repairs it: after many fruitless rounds, poll every millisecond
            self._idle += 1
            if self._idle > 1000:
                self._loop.call_later(0.001, self.kick)
            else:
                self.kick()

    def _busy(self) -> bool:
        ready = getattr(self._loop, "_ready", None)  # asyncio's ready queue; uvloop hides it
        return bool(ready)

    def close(self) -> None:
        """Detach and release the port (queued requests fail back to their clients)."""
        self.detach()
        try:
            self.link.unbind(self.no)
        except Exception:  # noqa: BLE001 - the registry may already be gone
            pass
