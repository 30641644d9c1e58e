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

#: Upper bound (microseconds) of the adaptive spin before sleeping (0: never spin). A
#: wake-up costs 20-60 us on a VM (an IPI to a halted vCPU), so the bound must cover one:
#: a client that spins through the server's wake-up keeps itself awake, the server then
#: catches the next request in its own spin, and both stay out of the kernel (depth-1
#: round trip 3-4 us against 60 us for 30 us or no spin on an idle 2-core VM; with both
#: cores busy, 100 us did no worse than 0, benchmarks/peers.py). The spin adapts
#: (native/archip.h, struct ap_spin): its budget follows twice the waits it caught, halves
#: on a miss, drops to 0 below 1/8 of the bound and then probes (half the bound) once per
#: 16 idle moments;
#: a spin during which the thread was descheduled counts as a miss, so it backs off when
#: the CPU is contended instead of stealing it from the peer it waits for.
SPIN_US = int(os.environ.get("ARCHIPELAGO_PEER_SPIN_US", "100"))


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
        self.spin = self.seg.ffi.new("struct ap_spin *")
        self.lib.ap_spin_init(self.spin, SPIN_US * 1000)
        self.wakeups = 0  # eventfd wake-ups received
        self.signals = 0  # eventfd signals sent to sleeping peers
        self.sleeps = 0   # times this port published "sleeping"

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
        if not self._wake:
            return
        lib, base, efds = self.lib, self.seg.base, self.link.efds
        wake, self._wake = self._wake, set()
        for port in wake:
            self.signals += lib.ap_wake(base, port, efds[port])

    def _on_wake(self) -> None:
        self.wakeups += 1
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
        # signal the peers now, not after this callback: their answers can then arrive
        # while we spin (one batch of submissions, one signal per peer)
        self._flush()
        mask = (1 if self.server is not None and self.server.wants_requests else 0) | (
            2 if self.client is not None else 0)
        if mask and Port._attached == 1 and not self._busy() and \
                lib.ap_spin_adaptive(base, no, mask, self.spin):
            again = True  # work arrived while spinning: no sleep, no wake-up
        elif lib.ap_prepare_sleep(base, no, mask):
            self.sleeps += 1
            again = False
        else:
            again = True
        if again:
            # a ring whose head slot a dead producer claimed looks non-empty until the
            # registry repairs it: after many fruitless rounds, poll every millisecond
            self._idle += 1
            if self._idle > 1000:
                self._loop.call_later(0.001, self.kick)
            else:
                self.kick()

    def stats(self) -> dict[str, int]:
        """Counters of this port's pump: wake-ups, batches, spins (for status APIs)."""
        sp = self.spin
        out = {"port": self.no, "wakeups": self.wakeups, "signals": self.signals,
               "sleeps": self.sleeps, "spins": int(sp.episodes), "spin_hits": int(sp.hits),
               "spin_skipped": int(sp.skipped), "spun_us": int(sp.spun_ns) // 1000,
               "spin_yields": int(sp.yields),
               "spin_preempted": int(sp.preempted), "spin_budget_us": int(sp.budget_ns) // 1000,
               "spin_max_us": int(sp.max_ns) // 1000}
        if self.client is not None:
            out["completions"] = self.client.completions
            out["completion_batches"] = self.client.batches
        if self.server is not None:
            out["requests"] = self.server.served
        return out

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
