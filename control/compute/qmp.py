"""A small asyncio client of the QEMU Machine Protocol (QMP) over a unix socket.

One connection per call site: ``async with await QMP.connect(path) as q: await
q.execute("query-status")``. Replies are matched by ``id``; asynchronous events
(SHUTDOWN, DEVICE_DELETED, ...) are queued for :meth:`wait_event`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

from archipelago.errors import Busy, NotRunning, TimedOut

#: Seconds a command waits for its reply (device_del and friends answer at once).
DEFAULT_TIMEOUT = 30.0


class QMPCommandError(Busy):
    """qemu refused a command (its ``error.desc`` is the message)."""


class QMP:
    """One QMP session: capabilities negotiated, commands and events."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 path: Path) -> None:
        self._reader = reader
        self._writer = writer
        self.path = path
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.greeting: dict[str, Any] = {}

    @classmethod
    async def connect(cls, path: str | Path, timeout: float = 10.0) -> QMP:
        """Connect, read the greeting and leave capabilities-negotiation mode."""
        path = Path(path)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path), limit=1 << 22), timeout)
        except (TimeoutError, OSError) as e:
            raise NotRunning(f"no QMP monitor at {path}: {e}") from None
        q = cls(reader, writer, path)
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                raise NotRunning(f"QMP monitor at {path} closed before its greeting")
            q.greeting = json.loads(line)
            q._task = asyncio.create_task(q._read_loop())
            await q.execute("qmp_capabilities", timeout=timeout)
        except BaseException:
            await q.close()
            raise
        return q

    async def __aenter__(self) -> QMP:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read_loop(self) -> None:
        err: BaseException = NotRunning(f"QMP monitor at {self.path} closed")
        try:
            while line := await self._reader.readline():
                msg = json.loads(line)
                if "event" in msg:
                    self._events.put_nowait(msg)
                    continue
                fut = self._pending.pop(str(msg.get("id")), None)
                if fut is None or fut.done():
                    continue
                if "error" in msg:
                    fut.set_exception(QMPCommandError(msg["error"].get("desc", str(msg["error"]))))
                else:
                    fut.set_result(msg.get("return"))
        except (OSError, ValueError) as e:
            err = NotRunning(f"QMP monitor at {self.path}: {e}")
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()
            self._events.put_nowait({"event": "_CLOSED"})

    async def execute(self, command: str, arguments: dict[str, Any] | None = None,
                      timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Run one command; its ``return`` value, QMPCommandError if qemu refused it."""
        if self._task is not None and self._task.done():
            raise NotRunning(f"QMP monitor at {self.path} closed")
        ident = str(next(self._ids))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        msg: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._writer.write(json.dumps(msg).encode() + b"\n")
            await self._writer.drain()
        except OSError as e:
            self._pending.pop(ident, None)
            raise NotRunning(f"QMP monitor at {self.path}: {e}") from None
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._pending.pop(ident, None)
            raise TimedOut(f"QMP {command} got no reply in {timeout:g} s") from None

    async def execute_fd(self, command: str, arguments: dict[str, Any], fd: int,
                         timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Run one command with a file descriptor attached (SCM_RIGHTS), as ``getfd`` and
        ``add-fd`` take them."""
        import array
        import os
        import socket

        if self._task is not None and self._task.done():
            raise NotRunning(f"QMP monitor at {self.path} closed")
        ident = str(next(self._ids))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        data = json.dumps({"execute": command, "id": ident, "arguments": arguments}).encode()
        await self._writer.drain()  # nothing of an earlier command may follow this one
        # the stream API cannot carry ancillary data: send through a duplicate of the socket
        raw = self._writer.get_extra_info("socket")
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        try:
            sock.sendmsg([data + b"\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                           array.array("i", [fd]))])
        except OSError as e:
            self._pending.pop(ident, None)
            raise NotRunning(f"QMP monitor at {self.path}: {e}") from None
        finally:
            sock.close()  # the duplicate only: the stream keeps its own descriptor
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._pending.pop(ident, None)
            raise TimedOut(f"QMP {command} got no reply in {timeout:g} s") from None

    async def wait_event(self, name: str, timeout: float,
                         match: dict[str, Any] | None = None) -> dict[str, Any]:
        """The next event called ``name`` (whose data contains ``match``); TimedOut otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimedOut(f"no QMP event {name} in {timeout:g} s")
            try:
                ev = await asyncio.wait_for(self._events.get(), left)
            except TimeoutError:
                raise TimedOut(f"no QMP event {name} in {timeout:g} s") from None
            if ev["event"] == "_CLOSED":
                self._events.put_nowait(ev)  # stays closed for later waiters
                raise NotRunning(f"QMP monitor at {self.path} closed while waiting for {name}")
            data = ev.get("data", {})
            if ev["event"] == name and all(data.get(k) == v for k, v in (match or {}).items()):
                return ev

    async def close(self) -> None:
        """Hang up (qemu keeps running)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 -- closing anyway
                pass
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass
