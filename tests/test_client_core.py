"""The sans-I/O client core (archipelago/client/core.py) driven by a fake daemon: how requests
are split, when a handle reopens, and that both shells expose every plan."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest

from archipelago.client import aio, blocking
from archipelago.client.core import CLIENT_METHODS, HANDLE_METHODS, Call, HandleCore
from archipelago.errors import NotFound, PeerDied, StaleHandle
from archipelago.peers.ops import Op
from archipelago.wire import VolumeInfo

INFO = VolumeInfo("v", 64, 4, 1, False, None, 0.0, "volume")


class FakeReply:
    """What a peer answers: data, arg, release()."""

    def __init__(self, data: bytes = b"", arg: int = 0) -> None:
        self.data, self.arg, self.released = memoryview(data), arg, False

    def release(self) -> None:
        self.released = True

    def bytes(self) -> bytes:
        return bytes(self.data)

    def __enter__(self) -> FakeReply:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FakeDaemon:
    """A mapper peer in memory: a byte array volume, failing the next calls on demand."""

    def __init__(self) -> None:
        self.volume = bytearray(64)
        self.calls: list[Call] = []
        self.fail: list[Exception] = []
        self.opens = 0

    def issue(self, c: Call) -> FakeReply:
        self.calls.append(c)
        if c.op == Op.CTRL:
            self.opens += 1
            d = {"handle": 100 + self.opens, "info": INFO.to_dict()}
            return FakeReply(msgpack.packb(d))
        if self.fail:
            raise self.fail.pop(0)
        if c.op == Op.WRITE:
            self.volume[c.offset : c.offset + c.size] = bytes(c.payload or b"")
            return FakeReply()
        return FakeReply(bytes(self.volume[c.offset : c.offset + c.size]))


class Client:
    max_buffer = 4


def handle(reopen_for: float = 30.0) -> tuple[FakeDaemon, HandleCore]:
    return FakeDaemon(), HandleCore(Client(), 1, INFO, reopen_for=reopen_for)


def run(d: FakeDaemon, h: HandleCore, plan: Any) -> Any:
    def reopen(generation: int) -> None:
        if h.reopened == generation:
            blocking.drive(h.plan_reopen(), d.issue)

    return blocking.drive(plan, d.issue, reopen)


def test_large_requests_are_split_at_max_buffer() -> None:
    d, h = handle()
    run(d, h, h.plan_write(3, b"abcdefghij"))
    assert [(c.op, c.offset, c.size) for c in d.calls] == [
        (Op.WRITE, 3, 4), (Op.WRITE, 7, 4), (Op.WRITE, 11, 2)]
    assert run(d, h, h.plan_read(3, 10)) == b"abcdefghij"


@pytest.mark.parametrize("error", [StaleHandle("not open here"), PeerDied("restarting")])
def test_a_restarted_mapper_reopens_once_and_reissues(error: Exception) -> None:
    d, h = handle()
    d.fail = [error]
    run(d, h, h.plan_write(0, b"xy"))
    assert d.volume[:2] == b"xy" and h.reopened == 1 and h.handle == 101 and d.opens == 1
    assert [c.op for c in d.calls] == [Op.WRITE, Op.CTRL, Op.WRITE]


def test_other_errors_and_closed_handles_do_not_reopen() -> None:
    d, h = handle()
    d.fail = [NotFound("no such volume")]
    with pytest.raises(NotFound):
        run(d, h, h.plan_read(0, 2))
    d, h = handle(reopen_for=0)
    d.fail = [StaleHandle("not open here")]
    with pytest.raises(StaleHandle):
        run(d, h, h.plan_read(0, 2))
    assert d.opens == 0


def test_both_shells_expose_every_plan() -> None:
    for shell in (blocking.Client, aio.AsyncClient):
        assert all(callable(getattr(shell, n)) for n in CLIENT_METHODS)
    for shell in (blocking.VolumeHandle, aio.AsyncVolumeHandle):
        assert all(callable(getattr(shell, n)) for n in HANDLE_METHODS)
    assert asyncio.iscoroutinefunction(aio.AsyncVolumeHandle.write)
    assert not asyncio.iscoroutinefunction(blocking.VolumeHandle.write)
    assert blocking.Client.create.__doc__ == "Create an empty volume."
