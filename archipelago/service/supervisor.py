"""The supervisor: owns the segment and the registry, runs child processes and restarts them.

Children are a list of :class:`ChildSpec` (blocker peers, the mapper peer, then extra
services such as nbdkit), started in order and stopped in reverse order. A child that
exits while the daemon runs is restarted (with a growing delay if it keeps dying); the
registry meanwhile fails back whatever was queued to its ports (PeerDied), and the
mapper re-issues requests of a restarted blocker peer. One daemon per instance: an
flock on DIR/run/daemon.lock; the pid file and DIR/run/daemon.json (children, pids,
ports) are written for ``archip daemon status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from archipelago import metrics
from archipelago.blocker.fileio import pwrite_all
from archipelago.config import Config
from archipelago.errors import ArchipelagoError, Busy, ConfigError
from archipelago.instance import Instance
from archipelago.peers.client import AsyncClient
from archipelago.peers.registry import PeerLink, Registry
from archipelago.peers.segment import Segment
from archipelago.service.peer_process import (
    MAX_BLOCKERS,
    blocker_ports,
    segment_config,
)
from archipelago.wire import MAPPER_PORT

log = logging.getLogger("archipelago.daemon")


@dataclass
class ChildSpec:
    """A supervised process: its argv, the static port it binds (if any), stop order."""

    name: str
    argv: list[str]
    port: int | None = None
    kind: str = "service"
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30.0
    env: dict[str, str] | None = None
    #: Files removed before each start (a socket left by a killed predecessor).
    stale_paths: list[str] = field(default_factory=list)
    #: Files the child creates that must be private (nbdkit makes its socket 0755).
    private_paths: list[str] = field(default_factory=list)


@dataclass
class Child:
    """A running (or restarting) child."""

    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    deaths: list[float] = field(default_factory=list)
    next_start: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Status-file form."""
        alive = self.proc is not None and self.proc.poll() is None
        return {"name": self.spec.name, "kind": self.spec.kind, "port": self.spec.port,
                "pid": self.proc.pid if alive and self.proc else None, "alive": alive,
                "restarts": self.restarts, "started": self.started}


#: Hooks adding extra child specs (nbdkit, gateway): f(instance, config, base argv) -> specs.
EXTRA_CHILDREN: list[Callable[[Instance, Config, list[str]], list[ChildSpec]]] = []


def child_base_args(inst: Instance, config_file: str | None, overrides: list[str],
                    foreground: bool) -> list[str]:
    """Arguments every child process gets to find the same instance and config."""
    out = ["--data-dir", str(inst.data_dir)]
    if config_file:
        out += ["--config", config_file]
    for o in overrides:
        out += ["-o", o]
    if foreground:
        out.append("--foreground")
    return out


def peer_specs(inst: Instance, cfg: Config, base: list[str]) -> list[ChildSpec]:
    """Blocker peers then the mapper peer."""
    n = cfg.peers.blockers
    if not 1 <= n <= MAX_BLOCKERS:
        raise ConfigError(f"[peers] blockers must be 1..{MAX_BLOCKERS}, got {n}")
    if cfg.blocker.backend == "memory" and n > 1:
        # Each process would hold its own private store: one peer keeps one store.
        log.warning("memory backend: running 1 blocker peer instead of %d", n)
        n = 1
    py = sys.executable
    specs = [ChildSpec(f"blocker-{i}", [py, "-m", "archipelago.service.blocker_peer", *base,
                                        "--port", str(p)], port=p, kind="blocker")
             for i, p in enumerate(blocker_ports(n))]
    specs.append(ChildSpec("mapper", [py, "-m", "archipelago.service.mapper_main", *base,
                                      "--blockers", str(n)], port=MAPPER_PORT, kind="mapper",
                           stop_timeout=60.0))
    return specs


def lock_instance(inst: Instance) -> IO[str]:
    """Take the instance's daemon lock; Busy naming the running pid if held."""
    inst.ensure()
    f = open(inst.daemon_lock, "a+")  # noqa: SIM115 - held for the daemon's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        pid = read_pid(inst)
        raise Busy(f"an archipelago daemon is already running for {inst.data_dir}"
                   + (f" (pid {pid})" if pid else "")) from None
    return f


def read_pid(inst: Instance) -> int | None:
    """The pid in the pid file, if any."""
    try:
        return int(inst.daemon_pid.read_text().strip())
    except (OSError, ValueError):
        return None


def overwrite(path: Path, data: bytes) -> None:
    """Write ``data`` over the file at ``path`` in place (its allocated blocks are reused,
    so this works on a full disk when the file was as big before)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        pwrite_all(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def status_path(inst: Instance) -> Path:
    """DIR/run/daemon.json."""
    return inst.run_dir / "daemon.json"


class Supervisor:
    """Segment + registry + children of one instance."""

    def __init__(self, inst: Instance, cfg: Config, specs: list[ChildSpec]) -> None:
        self.inst = inst
        self.cfg = cfg
        self.children = [Child(s) for s in specs]
        self.segment: Segment | None = None
        self.registry: Registry | None = None
        self.stopping = False
        self.ready = False
        self.started = time.time()
        self._stop = asyncio.Event()
        self._status_failed = False

    def write_status(self) -> None:
        """Rewrite DIR/run/daemon.json (atomically when the disk allows; never raises)."""
        doc = {"pid": os.getpid(), "started": self.started, "ready": self.ready,
               "stopping": self.stopping, "data_dir": str(self.inst.data_dir),
               "segment": self.segment.path if self.segment else None,
               "registry": str(self.inst.control_socket), "backend": self.cfg.blocker.backend,
               "children": [c.to_dict() for c in self.children]}
        text = json.dumps(doc, indent=1).encode()
        path = status_path(self.inst)
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_bytes(text)
            os.replace(tmp, path)
        except OSError as e:
            # A full disk (ENOSPC, EDQUOT) must not take the supervisor down: that
            # would orphan the children and leave the segment behind. Overwrite the old
            # file in place instead (its blocks are already allocated).
            with contextlib.suppress(OSError):
                tmp.unlink()
            try:
                overwrite(path, text)
            except OSError as e2:
                if not self._status_failed:
                    log.warning("cannot write %s (%s, then %s): status is stale", path,
                                e.strerror, e2.strerror)
                self._status_failed = True
                return
        self._status_failed = False

    def spawn(self, c: Child) -> None:
        """Start one child."""
        env = dict(os.environ, **(c.spec.env or {}))
        for path in c.spec.stale_paths:  # we hold the instance lock: nobody else uses them
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        c.proc = subprocess.Popen(c.spec.argv, stdin=subprocess.DEVNULL, env=env,
                                  close_fds=True)
        c.started = time.time()
        log.info("started %s (pid %d%s)", c.spec.name, c.proc.pid,
                 f", port {c.spec.port}" if c.spec.port is not None else "")
        self.write_status()

    async def run(self) -> int:
        """Create the segment, serve the registry, run children until SIGTERM."""
        loop = asyncio.get_running_loop()
        name = self.inst.segment_name
        if self.inst.segment_path.exists():
            log.warning("removing stale segment %s (its daemon is gone)", self.inst.segment_path)
        self.segment = Segment.create(name, segment_config(self.cfg.peers), replace=True)
        self.registry = Registry(self.segment, str(self.inst.check_socket_path(
            self.inst.control_socket)))
        self.registry.start(loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        log.info("daemon %d: segment %s, registry %s, %s backend", os.getpid(),
                 self.segment.path, self.inst.control_socket, self.cfg.blocker.backend)
        # One metrics directory for every child (archipelago.metrics): emptied per start.
        mdir = str(self.inst.run_dir / "metrics")
        metrics.prepare_dir(mdir)
        os.environ[metrics.ENV] = mdir
        try:
            for c in self.children:
                self.spawn(c)
            watcher = loop.create_task(self._watch())
            await self._wait_ready()
            await self._stop.wait()
            watcher.cancel()
        finally:
            await self._shutdown()
        return 0

    async def _wait_ready(self) -> None:
        """Mark ready once the mapper answers a PING (its blockers are up by then)."""
        # The registry is served by this loop: every blocking registry RPC (hello, bind,
        # unbind) runs in a thread so the loop can answer it.
        link = await asyncio.to_thread(PeerLink, str(self.inst.control_socket))
        client = await asyncio.to_thread(AsyncClient, link)
        try:
            while not self._stop.is_set():
                try:
                    await client.ping(MAPPER_PORT, timeout=1.0)
                    break
                except ArchipelagoError:
                    await asyncio.sleep(0.05)
            else:
                return
        finally:
            client.port.detach()
            await asyncio.to_thread(link.unbind, client.port.no)
            link.close()
        self.ready = True
        self.write_status()
        log.info("daemon ready")

    async def _watch(self) -> None:
        """Restart children that exit (backing off when one keeps dying)."""
        while not self.stopping:
            now = time.monotonic()
            for c in self.children:
                if c.proc is not None and c.proc.poll() is not None:
                    rc = c.proc.returncode
                    how = f"signal {-rc}" if rc < 0 else f"exit {rc}"
                    c.deaths = [t for t in c.deaths if now - t < 60] + [now]
                    delay = min(5.0, 0.1 * 2 ** max(0, len(c.deaths) - 2))
                    log.error("%s (pid %d) died (%s): restarting in %.1fs", c.spec.name,
                              c.proc.pid, how, delay)
                    metrics.mark_dead(c.proc.pid)
                    c.proc = None
                    c.next_start = now + delay
                    self.write_status()
                if c.proc is None and now >= c.next_start and not self.stopping:
                    c.restarts += 1
                    self.spawn(c)
                for path in c.spec.private_paths:
                    with contextlib.suppress(OSError):
                        if os.stat(path).st_mode & 0o077:
                            os.chmod(path, 0o600)
            await asyncio.sleep(0.05)

    async def _stop_child(self, c: Child) -> None:
        p = c.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(c.spec.stop_signal)
        deadline = time.monotonic() + c.spec.stop_timeout
        while p.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if p.poll() is None:
            log.error("%s (pid %d) did not stop in %.0fs: killing it", c.spec.name, p.pid,
                      c.spec.stop_timeout)
            p.kill()
            p.wait()
        for path in c.spec.stale_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        log.info("stopped %s (pid %d)", c.spec.name, p.pid)

    async def _shutdown(self) -> None:
        """Stop extra services, then the mapper (drain, flush, unlock), then the blockers;
        the segment is removed whatever failed before."""
        self.stopping = True
        try:
            self.write_status()
            order = {"service": 0, "mapper": 1, "blocker": 2}
            for rank in range(3):
                group = [c for c in self.children if order.get(c.spec.kind, 0) == rank]
                await asyncio.gather(*(self._stop_child(c) for c in group))
        finally:
            if self.registry is not None:
                self.registry.stop()
            if self.segment is not None:
                self.segment.close()
                self.segment.unlink()
        log.info("daemon %d stopped", os.getpid())
