"""Supervision of the networks' dnsmasq: a pidfd per process, read by the event loop, so an
exit is seen at once without polling; the service then restarts what it did not stop.

dnsmasq daemonizes (it is not our child), so a pidfd is the one race-free way to learn of
its exit. An exit the service caused itself (a new host list, a deleted network) is also
reported; the restart callback tells them apart by checking, under the service's lock,
whether the network still exists and still has no dnsmasq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

log = logging.getLogger("control.compute")


class DhcpWatch:
    """Watches one dnsmasq per network; ``on_exit(network id)`` runs when one exits."""

    def __init__(self, on_exit: Callable[[int], Awaitable[None]]) -> None:
        self._on_exit = on_exit
        self._fds: dict[int, tuple[int, int]] = {}  # network id -> (pid, pidfd)
        self._tasks: set[asyncio.Task[None]] = set()

    def watched(self) -> dict[int, int]:
        """Network id -> pid of the dnsmasq processes watched now."""
        return {nid: pid for nid, (pid, _) in self._fds.items()}

    def track(self, live: dict[int, int | None]) -> None:
        """Watch exactly these networks' dnsmasq (network id -> pid; None: not running)."""
        for nid, (pid, _) in list(self._fds.items()):
            if live.get(nid) != pid:
                self._drop(nid)
        loop = asyncio.get_running_loop()
        for nid, pid in live.items():
            if pid is None or nid in self._fds:
                continue
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:  # gone between its pid file and here: an exit
                self._spawn(nid)
                continue
            self._fds[nid] = (pid, fd)
            loop.add_reader(fd, self._exited, nid, pid)

    def _drop(self, nid: int) -> None:
        _, fd = self._fds.pop(nid)
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)

    def _exited(self, nid: int, pid: int) -> None:
        if self._fds.get(nid, (None, -1))[0] != pid:
            return
        self._drop(nid)
        self._spawn(nid)

    def _spawn(self, nid: int) -> None:
        t = asyncio.create_task(self._run(nid))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _run(self, nid: int) -> None:
        try:
            await self._on_exit(nid)
        except Exception:  # noqa: BLE001 -- one failed restart must not end supervision
            log.exception("restarting the dnsmasq of network %d failed", nid)

    async def close(self) -> None:
        """Stop watching (the processes keep running) and cancel pending restarts."""
        for nid in list(self._fds):
            self._drop(nid)
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await t
