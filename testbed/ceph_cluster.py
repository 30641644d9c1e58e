#!/usr/bin/env python3
"""A throwaway single-host Ceph cluster for tests and benchmarks (tests/ceph_cluster.py runs this file).

Usage (run with /work/main/.venv/bin/python or /usr/bin/python3, as root):

  ceph_cluster.py up DIR [--store memstore|bluestore] [--size-mb N] [--auth cephx|none]
                         [--watch-pid PID]   -> last stdout line: DIR/ceph.conf
  ceph_cluster.py down DIR [--keep]          -> kill every daemon, wait, remove the state
  ceph_cluster.py osd-stop DIR [--graceful]  -> SIGKILL (or SIGTERM) the OSD
  ceph_cluster.py osd-start DIR              -> start the OSD again, wait until it is up
  ceph_cluster.py status DIR                 -> pids and `rados -p archipelago ls` check

One mon + one OSD (no mgr) on 127.0.0.1 at a free port, cephx, all state under DIR,
pools "archipelago-test" and "archipelago" (size 1) ready when `up` returns. Daemons
run in their own sessions with pids in DIR/run/*.pid, so `down` also cleans up after a
crashed `up`; --watch-pid adds a watchdog that runs `down` when that process dies.
memstore loses everything when the OSD restarts; bluestore (a sparse file) does not.
Uses only the standard library and Ceph's own python3-rados.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

if not __package__:  # run as a script (scripts/test.sh, the watchdog): find testbed/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed.procs import pid_is_ours, watch  # noqa: E402

POOLS = ("archipelago-test", "archipelago")
PG_NUM = 8
_CREATED = ("ceph.conf", "keyring", "monmap", "cluster.json", "mon.a", "osd.0", "run", "log")


def _key() -> str:
    """A cephx secret in ceph-authtool's format (CryptoKey: type, created, len, bytes)."""
    head = struct.pack("<hiih", 1, int(time.time()), 0, 16)
    return base64.b64encode(head + os.urandom(16)).decode()


def _free_port() -> int:
    """A free loopback port (ephemeral, so the next 99 ports exist for the OSD to bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


def _conf(d: Path, port: int, store: str, size_mb: int, auth: str, fsid: str) -> str:
    """ceph.conf text: loopback only, size-1 pools allowed, everything under d."""
    store_conf = (
        f"osd objectstore = memstore\nmemstore device bytes = {size_mb << 20}\n"
        if store == "memstore"
        else f"osd objectstore = bluestore\nbluestore block size = {size_mb << 20}\n"
        "bluestore fsck on mkfs = false\nbluestore block create = true\n"
        "osd op num shards = 1\nbluestore cache autotune = false\n"
        "bluestore cache size = 134217728\n"
    )
    return f"""[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{port}]
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
ms bind port min = {port + 1}
ms bind port max = {port + 99}
run dir = {d}/run
keyring = {d}/keyring
auth cluster required = {auth}
auth service required = {auth}
auth client required = {auth}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = {PG_NUM}
osd pool default pgp num = {PG_NUM}
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon max pg per osd = 1000
mon data avail warn = 2
mon data avail crit = 1
log to stderr = false
err to stderr = false

[mon]
mon data = {d}/$name
paxos propose interval = 0.05
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
pid file = {d}/run/$name.pid

[osd]
osd data = {d}/$name
osd memory target = 1073741824
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
pid file = {d}/run/$name.pid
{store_conf}"""


def _run(cmd: list[str], timeout: float = 60) -> str:
    """Run a Ceph tool with a timeout; raise with its output on failure."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr or p.stdout}")
    return p.stdout


def _spawn(d: Path, name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Start a daemon in the foreground of its own session; record its pid."""
    log = open(d / "log" / f"{name}.stderr", "ab")  # noqa: SIM115 -- handed to the child
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    log.close()
    (d / "run" / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def _connect(conf: Path, timeout: int = 20):  # noqa: ANN202 -- rados.Rados
    import rados  # Ceph's own binding (python3-rados), not a third-party package

    cl = rados.Rados(conffile=str(conf), conf={
        "client_mount_timeout": str(timeout), "rados_mon_op_timeout": str(timeout),
        "rados_osd_op_timeout": str(timeout)})
    cl.connect(timeout=timeout)
    return cl


def _mon(cl, cmd: dict, timeout: int = 20) -> str:  # noqa: ANN001
    ret, out, err = cl.mon_command(json.dumps(cmd), b"", timeout=timeout)
    if ret != 0:
        raise RuntimeError(f"mon command {cmd['prefix']} failed ({ret}): {err}")
    return out.decode()


def _start_osd(d: Path) -> int:
    # glibc's dynamic mmap threshold otherwise parks freed 4 MiB buffers (doc: pitfalls).
    return _spawn(d, "osd.0", ["ceph-osd", "-f", "-i", "0", "-c", str(d / "ceph.conf")],
                  env={"MALLOC_MMAP_THRESHOLD_": "131072"})


def _up_from(cl) -> int:  # noqa: ANN001
    """The osdmap epoch in which the current OSD instance booted (-1 when down)."""
    osds = json.loads(_mon(cl, {"prefix": "osd dump", "format": "json"}))["osds"]
    return int(osds[0]["up_from"]) if osds and osds[0]["up"] else -1


def _wait_osd_up(cl, deadline: float, after: int = 0) -> None:  # noqa: ANN001
    """Wait until an OSD instance that booted after epoch ``after`` is up."""
    while _up_from(cl) <= after:
        if time.monotonic() > deadline:
            raise RuntimeError("OSD did not come up (see log/osd.0.log)")
        time.sleep(0.05)


def _probe(cl, deadline: float) -> None:  # noqa: ANN001
    """The data path is the readiness probe: a put blocks until the PG is active."""
    for pool in POOLS:
        io = cl.open_ioctx(pool)  # closed by cl.shutdown()
        while True:
            try:
                io.write_full("ceph-cluster-probe", b"probe")
                io.remove_object("ceph-cluster-probe")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def up(d: Path, store: str = "memstore", size_mb: int = 0, auth: str = "cephx",
       watch_pid: int | None = None, timeout: float = 60) -> Path:
    """Create and start the cluster; return the ceph.conf path once pools accept I/O."""
    d = d.resolve()
    if (d / "run").exists():
        down(d)  # leftovers of an earlier run in the same directory
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in ("run", "log"):
        (d / sub).mkdir(mode=0o700)
    size_mb = size_mb or (2048 if store == "memstore" else 10240)
    port = _free_port()
    conf = d / "ceph.conf"
    fsid = str(uuid.uuid4())
    _private(conf, _conf(d, port, store, size_mb, auth, fsid))
    osd_caps = 'caps mon = "allow profile osd"\n\tcaps osd = "allow *"\n\tcaps mgr = "allow profile osd"'
    keyring = (f'[mon.]\n\tkey = {_key()}\n\tcaps mon = "allow *"\n'
               f'[client.admin]\n\tkey = {_key()}\n\tcaps mon = "allow *"\n\tcaps osd = "allow *"\n'
               f'\tcaps mgr = "allow *"\n[osd.0]\n\tkey = {_key()}\n\t{osd_caps}\n')
    _private(d / "keyring", keyring)
    (d / "cluster.json").write_text(json.dumps({"port": port, "store": store, "auth": auth}))
    deadline = time.monotonic() + timeout
    try:
        _run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
              f"[v2:127.0.0.1:{port}]", str(d / "monmap")])
        _run(["ceph-mon", "--mkfs", "-i", "a", "-c", str(conf), "--monmap", str(d / "monmap"),
              "--keyring", str(d / "keyring")])
        _spawn(d, "mon.a", ["ceph-mon", "-f", "-i", "a", "-c", str(conf)])
        if watch_pid:
            _spawn(d, "watchdog", [sys.executable, os.path.abspath(__file__), "_watch", str(d),
                                   str(watch_pid)])
        cl = _connect(conf)
        try:
            osd_uuid = str(uuid.uuid4())
            _mon(cl, {"prefix": "osd new", "uuid": osd_uuid, "id": 0})
            (d / "osd.0").mkdir(mode=0o700)
            mkfs = subprocess.Popen(
                ["ceph-osd", "--mkfs", "-i", "0", "--osd-uuid", osd_uuid, "-c", str(conf)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # Pools are created while the OSD formats its store.
            for pool in POOLS:
                _mon(cl, {"prefix": "osd pool create", "pool": pool, "pg_num": PG_NUM,
                          "pgp_num": PG_NUM})
                app = "rbd" if pool == "archipelago-test" else "archipelago"
                _mon(cl, {"prefix": "osd pool application enable", "pool": pool, "app": app,
                          "yes_i_really_mean_it": True})
            out, _ = mkfs.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if mkfs.returncode != 0:
                raise RuntimeError(f"ceph-osd --mkfs failed: {out}")
            _start_osd(d)
            _wait_osd_up(cl, deadline)
            _probe(cl, deadline)
        finally:
            cl.shutdown()
    except BaseException:
        down(d, keep=True)
        raise
    return conf


def _kill(d: Path, names: list[str], sig: int = signal.SIGTERM, wait: float = 10) -> None:
    """Signal the named daemons by pid file and wait for them to exit (SIGKILL fallback)."""
    pids = []
    for name in names:
        f = d / "run" / f"{name}.pid"
        try:
            pid = int(f.read_text().split()[0])
            if pid != os.getpid() and pid_is_ours(pid, d):
                os.kill(pid, sig)
                pids.append(pid)
        except (OSError, ValueError, IndexError):
            pass  # no pid file, garbage in it, or the process is gone
        f.unlink(missing_ok=True)
    end = time.monotonic() + wait
    for pid in pids:
        while pid_is_ours(pid, d):
            if time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                end = time.monotonic() + 5
            time.sleep(0.02)
        try:
            os.waitpid(pid, os.WNOHANG)  # our own child when up() failed half-way
        except ChildProcessError:
            pass


def down(d: Path, keep: bool = False) -> None:
    """Kill every daemon recorded under d, wait for them, and remove the cluster state."""
    d = d.resolve()
    if (d / "run").is_dir():
        names = sorted(p.stem for p in (d / "run").glob("*.pid"))
        # The OSD first and alone: it tells the mon it is going down, and waits 5 s
        # (osd_mon_shutdown_timeout) when the mon is already dead.
        _kill(d, [n for n in names if n.startswith("osd")])
        _kill(d, [n for n in names if not n.startswith("osd")])
    if not keep:
        for name in _CREATED:
            p = d / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def osd_stop(d: Path, graceful: bool = False) -> None:
    """Stop the OSD: SIGKILL (a crash) by default, SIGTERM with graceful."""
    _kill(d.resolve(), ["osd.0"], signal.SIGTERM if graceful else signal.SIGKILL)


def osd_start(d: Path, timeout: float = 60) -> None:
    """Start the OSD again and wait until the pools accept I/O."""
    d = d.resolve()
    cl = _connect(d / "ceph.conf")
    try:
        # A SIGKILLed OSD still looks up to the mon: wait for the new instance's boot.
        before = _up_from(cl)
        _start_osd(d)
        deadline = time.monotonic() + timeout
        _wait_osd_up(cl, deadline, before)
    finally:
        cl.shutdown()
    cl = _connect(d / "ceph.conf")  # a fresh client starts from the new osdmap
    try:
        _probe(cl, deadline)
    finally:
        cl.shutdown()


def _watch(d: Path, pid: int) -> None:
    """Watchdog: tear the cluster down when the watched process exits."""
    watch(pid, d / "run", lambda: down(d))


def status(d: Path) -> int:
    """Print daemon pids and check that `rados ls` works on every pool."""
    d = d.resolve()
    ok = True
    for f in sorted((d / "run").glob("*.pid")) if (d / "run").is_dir() else []:
        pid = int(f.read_text().split()[0])
        alive = pid_is_ours(pid, d)
        ok &= alive or f.stem == "watchdog"
        print(f"{f.stem}: pid {pid} {'running' if alive else 'DEAD'}")
    for pool in POOLS:
        try:
            _run(["timeout", "20", "rados", "-c", str(d / "ceph.conf"), "-p", pool, "ls"], 30)
            print(f"pool {pool}: ok")
        except Exception as e:  # noqa: BLE001 -- report, do not crash
            ok = False
            print(f"pool {pool}: {e}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    subs = {n: sub.add_parser(n) for n in ("up", "down", "osd-stop", "osd-start", "status", "_watch")}
    for p in subs.values():
        p.add_argument("dir", type=Path)
    up_p = subs["up"]
    up_p.add_argument("--store", choices=("memstore", "bluestore"), default="memstore")
    up_p.add_argument("--size-mb", type=int, default=0,
                      help="memstore bytes (default 2048) or bluestore file size (default 10240)")
    up_p.add_argument("--auth", choices=("cephx", "none"), default="cephx")
    up_p.add_argument("--watch-pid", type=int, default=None)
    up_p.add_argument("--timeout", type=float, default=60)
    subs["down"].add_argument("--keep", action="store_true", help="keep logs and data")
    subs["osd-stop"].add_argument("--graceful", action="store_true")
    subs["_watch"].add_argument("pid", type=int)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "up":
            t0 = time.monotonic()
            conf = up(a.dir, a.store, a.size_mb, a.auth, a.watch_pid, a.timeout)
            print(f"cluster up in {time.monotonic() - t0:.1f}s ({a.store})", file=sys.stderr)
            print(conf)
        elif a.cmd == "down":
            down(a.dir, a.keep)
        elif a.cmd == "osd-stop":
            osd_stop(a.dir, a.graceful)
        elif a.cmd == "osd-start":
            osd_start(a.dir)
        elif a.cmd == "status":
            return status(a.dir)
        elif a.cmd == "_watch":
            _watch(a.dir.resolve(), a.pid)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"ceph_cluster {a.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
