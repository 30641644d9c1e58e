"""Shared fixtures: every blocker backend over one store per test.

``backend`` is parametrized over memory, file and rados; ``make_blocker()`` builds a
new Blocker over the SAME store each call (to "reopen after a crash"); rados needs
$ARCHIPELAGO_CEPH_CONF (set by scripts/test.sh) and uses pool archipelago-test with
a fresh namespace per test. Blockers made here are closed at teardown.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from archipelago.blocker.base import Blocker

CEPH_CONF_ENV = "ARCHIPELAGO_CEPH_CONF"
RADOS_TEST_POOL = "archipelago-test"
BACKENDS = ["memory", "file", pytest.param("rados", marks=pytest.mark.rados)]


def ceph_conf_or_skip() -> str:
    """The test cluster's ceph.conf, or skip the test with the reason."""
    conf = os.environ.get(CEPH_CONF_ENV)
    if not conf:
        pytest.skip(f"{CEPH_CONF_ENV} is unset: no Ceph cluster (scripts/test.sh starts one)")
    return conf


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Name of the blocker backend under test."""
    return str(request.param)


def blocker_factory(backend: str, tmp_path: Path) -> Callable[..., Blocker]:
    """A callable building blockers of ``backend`` that all share one store."""
    if backend == "memory":
        from archipelago.blocker.memory import MemoryBlocker, MemoryStore

        store = MemoryStore()
        return lambda **kw: MemoryBlocker(store=store, **kw)
    if backend == "file":
        from archipelago.blocker.file import FileBlocker

        root = str(tmp_path / "file-store")
        return lambda **kw: FileBlocker(root, **kw)
    if backend == "rados":
        conf = ceph_conf_or_skip()
        from archipelago.blocker.rados import RadosBlocker

        namespace = f"test-{uuid.uuid4().hex}"
        return lambda **kw: RadosBlocker(conf, RADOS_TEST_POOL, namespace, **kw)
    raise ValueError(f"unknown backend {backend!r}")


@pytest.fixture
async def make_blocker(backend: str, tmp_path: Path) -> AsyncIterator[Callable[..., Blocker]]:
    """make_blocker(**kw) -> a new Blocker over this test's store; all closed at teardown."""
    factory = blocker_factory(backend, tmp_path)
    made: list[Blocker] = []

    def make(**kw: Any) -> Blocker:
        b = factory(**kw)
        made.append(b)
        return b

    yield make
    if backend == "rados" and made:
        # Leave the shared test pool clean: remove this test's namespace content.
        cleaner = factory()
        made.append(cleaner)
        for name in await cleaner.list():
            try:
                await cleaner.delete(name)
            except Exception:  # noqa: BLE001 -- best effort; the namespace is unique anyway
                pass
    for b in made:
        await b.close()


@pytest.fixture
async def blocker(make_blocker: Callable[..., Blocker]) -> Blocker:
    """One blocker of the parametrized backend."""
    return make_blocker()
