"""The archipelago daemon: start/stop/status of one instance's supervisor.

``python -m archipelago.daemon --data-dir DIR [--foreground]`` runs the supervisor in
this process (archipelago.service.supervisor): segment, registry, N blocker peers,
the mapper peer and extra services (nbdkit on DIR/nbd.sock unless --no-nbd). The
functions here are what ``archip daemon`` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from archipelago.config import Config
from archipelago.errors import ArchipelagoError, Busy, ConfigError, TimedOut
from archipelago.instance import Instance
from archipelago.service.peer_process import run_loop, setup_logging
from archipelago.service.supervisor import (
    EXTRA_CHILDREN,
    ChildSpec,
    Supervisor,
    child_base_args,
    lock_instance,
    peer_specs,
    read_pid,
    status_path,
)

log = logging.getLogger("archipelago.daemon")


def nbd_spec(inst: Instance, cfg: Config) -> ChildSpec | None:
    """nbdkit with the archipelago plugin on the instance's NBD socket (if nbdkit exists).

    backend=peer: every connection goes through the daemon's mapper peer, which holds
    the volume's lock, so `archip volume snapshot` (and every other volume op) works on
    an exported, connected volume. Speed comes from nbdkit's map cache (nbd/peer_cache.py:
    known blocks of the file blocker read/written in place, kept coherent by the mapper's
    generation page, service/mapgen.py) and the mapper's own fast path (fastread.py): 4 KiB
    random I/O measured at or above backend=direct (benchmarks/nbd.py).
    """
    if shutil.which("nbdkit") is None:
        return None
    from archipelago.nbd import PLUGIN_PATH

    sock = str(inst.check_socket_path(Path(cfg.nbd.socket) if cfg.nbd.socket
                                      else inst.nbd_socket))
    argv = ["nbdkit", "-f", "-t", str(cfg.nbd.threads), "-U", sock, "python", str(PLUGIN_PATH),
            f"dir={inst.data_dir}", f"venv={sys.prefix}", "backend=peer"]
    if cfg.nbd.cfilter:
        from archipelago.nbd.cfilter import so_path

        # the C filter serves reads/writes of cached blocks without Python (about 2x
        # the IOPS at QD32, benchmarks/nbd.py archipelago-peer-cfilter); misses fall
        # through to the plugin, so running without it is only slower
        if (so := so_path()) is not None:
            argv.insert(argv.index("python"), f"--filter={so}")
    if cfg.nbd.default_export:
        argv.append(f"default-export={cfg.nbd.default_export}")
    return ChildSpec("nbdkit", argv, kind="service", stop_timeout=5.0,
                     stale_paths=[sock], private_paths=[sock])


def check_backend(cfg: Config) -> None:
    """Refuse a rados backend that cannot work (no ceph.conf, no cluster, no pool) now,
    with one clear error, rather than peers that keep dying after the fork."""
    if cfg.blocker.backend != "rados":
        return
    conffile = cfg.blocker.rados.conffile
    if not os.path.isfile(conffile):
        raise ConfigError(f"Ceph config {conffile!r} not found "
                          f"(give --ceph-conf PATH or set [blocker.rados] conffile)")
    from archipelago.blocker import open_blocker

    async def probe() -> None:
        b = open_blocker(cfg)
        try:
            await b.open()  # type: ignore[attr-defined]
        finally:
            await b.close()

    asyncio.run(probe())  # the peers connect on their own after the fork


def gateway_spec(inst: Instance, config_file: str | None, overrides: list[str]) -> ChildSpec:
    """The API server (the Pithos+/Swift gateway and the control-plane plugins, run as
    ``python -m control.host.apiserver``: a command line, not an import) on [gateway] listen."""
    argv = [sys.executable, "-m", "control.host.apiserver", "--data-dir", str(inst.data_dir)]
    if config_file:
        argv += ["--config", config_file]
    for o in overrides:
        argv += ["-o", o]
    return ChildSpec("gateway", argv, kind="service", stop_timeout=10.0)


def run_foreground(inst: Instance, cfg: Config, config_file: str | None,
                   overrides: list[str], foreground: bool, nbd: bool,
                   gateway: bool = False) -> int:
    """Run the supervisor in this process until SIGTERM/SIGINT."""
    lock = lock_instance(inst)
    os.umask(0o077)
    setup_logging(inst.log_file, foreground)
    try:
        inst.daemon_pid.write_text(f"{os.getpid()}\n")
        base = child_base_args(inst, config_file, overrides, foreground)
        specs = peer_specs(inst, cfg, base)
        if nbd and (spec := nbd_spec(inst, cfg)) is not None:
            specs.append(spec)
        if gateway or cfg.gateway.with_daemon:
            specs.append(gateway_spec(inst, config_file, overrides))
        for hook in EXTRA_CHILDREN:
            specs += hook(inst, cfg, base)
        return run_loop(Supervisor(inst, cfg, specs).run())
    finally:
        inst.daemon_pid.unlink(missing_ok=True)
        lock.close()


def _read_status(inst: Instance) -> dict[str, Any] | None:
    try:
        return json.loads(status_path(inst).read_text())
    except (OSError, ValueError):
        return None


def _log_tail(inst: Instance, n: int = 5) -> str:
    try:
        lines = inst.log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def start(inst: Instance, config_file: str | None, overrides: list[str], nbd: bool = True,
          gateway: bool = False, timeout: float = 60.0) -> dict[str, Any]:
    """Start the supervisor in the background; returns its status once ready."""
    lock_instance(inst).close()  # refuse early, with the running pid, if one runs
    cfg = inst.config(config_file, overrides)
    peer_specs(inst, cfg, [])  # refuse a bad config now
    check_backend(cfg)
    argv = [sys.executable, "-m", "archipelago.daemon", "--data-dir", str(inst.data_dir)]
    if config_file:
        argv += ["--config", config_file]
    for o in overrides:
        argv += ["-o", o]
    if not nbd:
        argv.append("--no-nbd")
    if gateway:
        argv.append("--gateway")
    with open(inst.log_file, "ab") as logf:
        os.chmod(inst.log_file, 0o600)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = _read_status(inst)
        if st is not None and st.get("pid") == proc.pid and st.get("ready"):
            return st
        if proc.poll() is not None:
            raise ArchipelagoError(f"daemon exited with status {proc.returncode}: "
                                   f"{_log_tail(inst)}")
        time.sleep(0.05)
    proc.terminate()  # do not leave a daemon that never got ready behind
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    raise TimedOut(f"daemon did not become ready in {timeout:.0f}s: {_log_tail(inst)}")


def stop(inst: Instance, timeout: float = 120.0) -> int | None:
    """Stop the running supervisor; returns its pid, or None if none was running."""
    if not inst.daemon_running():
        # A supervisor killed (kill -9) left its pid file: clean up after it.
        _stop_orphans(inst, read_pid(inst))
        _remove_stale_segment(inst, read_pid(inst))
        return None
    pid = read_pid(inst)
    if pid is None:
        raise ConfigError(f"daemon lock held but no pid file in {inst.run_dir}")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while inst.daemon_running():
        if time.monotonic() > deadline:
            raise TimedOut(f"daemon (pid {pid}) did not stop in {timeout:.0f}s")
        time.sleep(0.05)
    _stop_orphans(inst, pid)
    _remove_stale_segment(inst, pid)
    return pid


def _orphans(inst: Instance, pgid: int) -> list[int]:
    """Processes of group ``pgid`` whose command line names this instance's directory."""
    out = []
    mark = os.fsencode(str(inst.data_dir))
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pgid:
            continue  # the supervisor itself may still be exiting (after its unlock)
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if mark in f.read():
                    out.append(int(entry))
        except (OSError, ValueError):
            continue
    return out


def _stop_orphans(inst: Instance, pid: int | None) -> None:
    """Stop children a supervisor (pid ``pid``, the leader of their process group) left
    behind when it died before stopping them: they hold volume locks and ports."""
    if pid is None or not (left := _orphans(inst, pid)):
        return
    names = []
    for p in left:
        with contextlib.suppress(OSError):
            names.append(f"{Path(f'/proc/{p}/comm').read_text().strip()} {p}")
    log.warning("daemon (pid %d) left %d children behind: stopping them (%s)", pid, len(left),
                ", ".join(names))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + 30
        while (left := _orphans(inst, pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not left:
            return


def _remove_stale_segment(inst: Instance, pid: int | None) -> None:
    """Remove the segment of a supervisor that died before its cleanup (kill -9, a
    crash): it holds hundreds of MB of RAM, and with the lock free none uses it."""
    if not inst.segment_path.exists():
        return
    try:
        lock = lock_instance(inst)
    except Busy:
        return  # a daemon started meanwhile: the segment is its own
    try:
        log.warning("%s left its segment behind: removed %s",
                    f"daemon (pid {pid})" if pid else "a daemon that died", inst.segment_path)
        inst.segment_path.unlink(missing_ok=True)
    finally:
        lock.close()


def status(inst: Instance) -> dict[str, Any]:
    """Supervisor status (children, pids, ports) merged with the mapper peer's."""
    if not inst.daemon_running():
        return {"running": False, "data_dir": str(inst.data_dir)}
    st = _read_status(inst) or {}
    st["running"] = True
    try:
        from archipelago.client import Client

        with Client.connect(inst, timeout=5.0) as c:
            st["mapper"] = c.status()
    except ArchipelagoError as e:
        st["mapper"] = {"error": e.message}
    try:  # tmpfs commits a page of the segment when a process first touches it
        seg = os.stat(st["segment"])
        st["segment_bytes"], st["segment_committed_bytes"] = seg.st_size, seg.st_blocks * 512
    except (OSError, TypeError, KeyError):
        pass
    try:  # written by the mapper peer when its Prometheus endpoint is up
        st["metrics_url"] = json.loads((inst.run_dir / "metrics.json").read_text())["url"]
    except (OSError, ValueError, KeyError):
        st["metrics_url"] = None
    return st


def main(argv: list[str] | None = None) -> int:
    """``python -m archipelago.daemon``: run the supervisor in this process."""
    p = argparse.ArgumentParser(prog="archipelago-daemon")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--config", default=None)
    p.add_argument("-o", "--set", dest="overrides", action="append", default=[])
    p.add_argument("--foreground", action="store_true", help="also log to stderr")
    p.add_argument("--no-nbd", action="store_true", help="do not run nbdkit")
    p.add_argument("--gateway", action="store_true", help="also run the Pithos+/Swift gateway")
    args = p.parse_args(argv)
    inst = Instance.from_args(args.data_dir).ensure()
    try:
        cfg = inst.config(args.config, args.overrides)
        return run_foreground(inst, cfg, args.config, args.overrides, args.foreground,
                              not args.no_nbd, args.gateway)
    except ArchipelagoError as e:
        print(f"archipelago-daemon: error: {e.message}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
