"""Wake-ups: a producer signals a port's eventfd only when its consumer published "sleeping"."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from archipelago.peers.segment import Segment, SegmentConfig

CFG = SegmentConfig(nr_ports=4, nr_static=2, nr_desc=16, classes=((4096, 4),))
SERVER, CLIENT = 0, 1


@pytest.fixture
def seg() -> Iterator[Segment]:
    s = Segment.create(f"archip-test-wake-{uuid.uuid4().hex[:8]}", CFG)
    try:
        assert s.lib.ap_port_bind(s.base, SERVER, os.getpid()) > 0
        assert s.lib.ap_port_bind(s.base, CLIENT, os.getpid()) > 0
        yield s
    finally:
        s.close()
        s.unlink()


def signals(efd: int) -> int:
    """How many wake-ups the eventfd got since the last call (0 when none)."""
    try:
        return os.eventfd_read(efd)
    except BlockingIOError:
        return 0


def submit(s: Segment, efd: int) -> int:
    """Queue one request from the client port to the server port."""
    idx = int(s.lib.ap_desc_alloc(s.base, CLIENT))
    assert idx >= 0
    assert s.lib.ap_submit(s.base, idx, SERVER, efd) == 0
    return idx


def test_only_a_sleeping_consumer_is_signalled(seg: Segment) -> None:
    lib, base = seg.lib, seg.base
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        submit(seg, efd)  # the server is busy (not sleeping): no syscall, no signal
        assert signals(efd) == 0
        assert lib.ap_pop_request(base, SERVER) >= 0
        assert lib.ap_prepare_sleep(base, SERVER, 1) == 1  # nothing queued: may sleep
        submit(seg, efd)
        assert signals(efd) == 1  # it slept: exactly one wake-up
        submit(seg, efd)  # the wake-up cleared the flag: the next producer stays silent
        assert signals(efd) == 0
        # Work already queued: prepare_sleep refuses (and clears the flag), so no lost wake-up
        # and no needless signal either.
        assert lib.ap_prepare_sleep(base, SERVER, 1) == 0
        submit(seg, efd)
        assert signals(efd) == 0
    finally:
        os.close(efd)
