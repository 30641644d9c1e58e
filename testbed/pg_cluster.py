#!/usr/bin/env python3
"""A throwaway PostgreSQL server for tests and benchmarks (Debian's PostgreSQL 15 binaries;
tests/pg_cluster.py runs this file).

Usage (run with the project's .venv/bin/python or /usr/bin/python3):

  pg_cluster.py up DIR [--watch-pid PID]  -> last stdout line: the SQLAlchemy URL
  pg_cluster.py down DIR [--keep]         -> stop the server, wait, remove the state
  pg_cluster.py stop DIR [--kill]         -> stop the server, keep the data (an outage)
  pg_cluster.py start DIR                 -> start it again on the same data
  pg_cluster.py status DIR                -> pid and a connection check

initdb in DIR/data, unix socket only (listen_addresses = '', socket in DIR/run), trust
authentication over that socket (the directory is 0700: only its owner and root get
in), no system service. PostgreSQL refuses to run as root: as root the server runs as
the "postgres" user (else "nobody"). The URL is
``postgresql+asyncpg://archipelago@/archipelago?host=DIR/run``. The postmaster runs in
its own session with its pid in DIR/run/postgres.pid (ours, not PostgreSQL's own
postmaster.pid), so `down` stops exactly what `up` started; --watch-pid adds a
watchdog that runs `down` when that process dies. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a script (scripts/test.sh, the watchdog): find testbed/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed.procs import pid_is_ours, watch  # noqa: E402

BIN = Path(os.environ.get("ARCHIPELAGO_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = DB = "archipelago"
PORT = 5432  # names the socket file only: nothing listens on TCP
_CREATED = ("data", "run", "log", "url")
#: Seconds a fast shutdown may take before SIGKILL.
STOP_WAIT = 30.0


def _run_as() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


def _demote(pw: pwd.struct_passwd | None):  # noqa: ANN202 -- a preexec_fn or None
    if pw is None:
        return None

    def drop() -> None:
        os.setgid(pw.pw_gid)
        os.setgroups([])
        os.setuid(pw.pw_uid)

    return drop


def _own(path: Path, pw: pwd.struct_passwd | None) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    if pw is not None:
        os.chown(path, pw.pw_uid, pw.pw_gid)


def url_of(d: Path) -> str:
    """The SQLAlchemy URL of the server in DIR."""
    return f"postgresql+asyncpg://{USER}@/{DB}?host={d.resolve() / 'run'}"


def _spawn(d: Path, name: str, cmd: list[str], pw: pwd.struct_passwd | None = None) -> int:
    """Start a process in its own session; record its pid in DIR/run/NAME.pid."""
    log = open(d / "log" / f"{name}.log", "ab")  # noqa: SIM115 -- handed to the child
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, preexec_fn=_demote(pw), cwd=d)
    log.close()
    (d / "pids").mkdir(mode=0o700, exist_ok=True)
    (d / "pids" / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def _ready(d: Path, timeout: float) -> None:
    """Wait until the server accepts connections (pg_isready), or raise."""
    deadline = time.monotonic() + timeout
    while True:
        p = subprocess.run([str(BIN / "pg_isready"), "-q", "-h", str(d / "run"), "-p", str(PORT),
                            "-U", USER, "-d", DB], check=False, capture_output=True)
        if p.returncode == 0:
            return
        pid = _pid(d, "postgres")
        if pid is None or not pid_is_ours(pid, d):
            log = (d / "log" / "postgres.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"postgres exited during start-up:\n{log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"postgres not ready after {timeout:.0f}s")
        time.sleep(0.1)


def _pid(d: Path, name: str) -> int | None:
    try:
        return int((d / "pids" / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def start(d: Path, timeout: float = 60) -> None:
    """Start the postmaster on the existing data directory; wait until it is ready."""
    d = d.resolve()
    pid = _pid(d, "postgres")
    if pid is not None and pid_is_ours(pid, d):
        raise RuntimeError(f"postgres already running (pid {pid})")
    pw = _run_as()
    _spawn(d, "postgres", [str(BIN / "postgres"), "-D", str(d / "data"), "-k", str(d / "run"),
                           "-p", str(PORT)], pw)
    _ready(d, timeout)


def up(d: Path, watch_pid: int | None = None, timeout: float = 60) -> str:
    """initdb (when new) and start the server; return its URL once it accepts connections."""
    d = d.resolve()
    if (d / "pids").exists():
        down(d)  # leftovers of an earlier run in the same directory
    pw = _run_as()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    if pw is not None:
        d.chmod(0o711)  # the server's user must reach its subdirectories, not list ours
    for sub in ("data", "run", "log"):
        _own(d / sub, pw)
    try:
        if not (d / "data" / "PG_VERSION").exists():
            p = subprocess.run(
                [str(BIN / "initdb"), "-D", str(d / "data"), "-U", USER, "--auth=trust",
                 "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                capture_output=True, text=True, preexec_fn=_demote(pw), cwd=d, check=False,
                timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(f"initdb failed: {p.stderr or p.stdout}")
            with open(d / "data" / "postgresql.conf", "a") as f:
                # Small and quiet: a test server on a shared machine.
                f.write("\nlisten_addresses = ''\nshared_buffers = 32MB\nmax_connections = 100\n"
                        "unix_socket_permissions = 0700\nlog_min_messages = warning\n")
        if watch_pid:
            _spawn(d, "watchdog", [sys.executable, os.path.abspath(__file__), "_watch", str(d),
                                   str(watch_pid)])
        start(d, timeout)
        p = subprocess.run([str(BIN / "createdb"), "-h", str(d / "run"), "-p", str(PORT),
                            "-U", USER, DB], capture_output=True, text=True, check=False)
        if p.returncode != 0 and "already exists" not in p.stderr:
            raise RuntimeError(f"createdb failed: {p.stderr}")
    except BaseException:
        down(d, keep=True)
        raise
    url = url_of(d)
    (d / "url").write_text(url + "\n")
    return url


def _kill(d: Path, name: str, sig: int, wait: float = STOP_WAIT) -> None:
    """Signal one recorded process and wait for it to exit (SIGKILL fallback)."""
    pid = _pid(d, name)
    (d / "pids" / f"{name}.pid").unlink(missing_ok=True)
    if pid is None or pid == os.getpid() or not pid_is_ours(pid, d):
        return
    os.kill(pid, sig)
    end = time.monotonic() + wait
    while pid_is_ours(pid, d):
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            end = time.monotonic() + 5
        time.sleep(0.02)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(d: Path, kill: bool = False) -> None:
    """Stop the server, keep its data: a fast shutdown (SIGINT), or a crash (SIGKILL)."""
    d = d.resolve()
    _kill(d, "postgres", signal.SIGKILL if kill else signal.SIGINT)
    if kill:
        # The postmaster's children notice its death on their own; wait for them to go
        # so that the next start finds no live backend attached to the shared memory.
        end = time.monotonic() + STOP_WAIT
        while _children_left(d) and time.monotonic() < end:
            time.sleep(0.05)


def _children_left(d: Path) -> bool:
    data = str(d / "data")
    pidfile = Path(data) / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        return Path(f"/proc/{pid}").exists() and "postgres" in Path(
            f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


def down(d: Path, keep: bool = False) -> None:
    """Stop the server and the watchdog started in DIR and remove the state (not DIR)."""
    d = d.resolve()
    if (d / "pids").is_dir():
        _kill(d, "postgres", signal.SIGINT)
        _kill(d, "watchdog", signal.SIGTERM, wait=5)
    if not keep:
        for name in (*_CREATED, "pids"):
            p = d / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _watch(d: Path, pid: int) -> None:
    """Watchdog: tear the server down when the watched process exits."""

    def teardown() -> None:
        # Not our own pid file: down() must not wait for the watchdog itself.
        (d / "pids" / "watchdog.pid").unlink(missing_ok=True)
        down(d)

    watch(pid, d / "pids", teardown)


def status(d: Path) -> int:
    """Print the server's pid and whether it accepts connections."""
    d = d.resolve()
    pid = _pid(d, "postgres")
    alive = pid is not None and pid_is_ours(pid, d)
    print(f"postgres: pid {pid} {'running' if alive else 'DEAD'}")
    p = subprocess.run([str(BIN / "pg_isready"), "-h", str(d / "run"), "-p", str(PORT),
                        "-U", USER, "-d", DB], check=False, capture_output=True, text=True)
    print(p.stdout.strip())
    return 0 if alive and p.returncode == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    subs = {n: sub.add_parser(n) for n in ("up", "down", "stop", "start", "status", "_watch")}
    for p in subs.values():
        p.add_argument("dir", type=Path)
    subs["up"].add_argument("--watch-pid", type=int, default=None)
    subs["up"].add_argument("--timeout", type=float, default=60)
    subs["down"].add_argument("--keep", action="store_true", help="keep logs and data")
    subs["stop"].add_argument("--kill", action="store_true", help="SIGKILL (a crash)")
    subs["_watch"].add_argument("pid", type=int)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "up":
            t0 = time.monotonic()
            url = up(a.dir, a.watch_pid, a.timeout)
            print(f"postgres up in {time.monotonic() - t0:.1f}s", file=sys.stderr)
            print(url)
        elif a.cmd == "down":
            down(a.dir, a.keep)
        elif a.cmd == "stop":
            stop(a.dir, a.kill)
        elif a.cmd == "start":
            start(a.dir)
        elif a.cmd == "status":
            return status(a.dir)
        elif a.cmd == "_watch":
            _watch(a.dir.resolve(), a.pid)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"pg_cluster {a.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
