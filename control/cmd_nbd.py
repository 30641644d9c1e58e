"""`archip nbd serve|uri|stop`: export volumes over NBD with nbdkit and the archipelago plugin."""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from archipelago.blocker.base import pid_alive
from archipelago.errors import Busy, ConfigError, InvalidArgument, NotRunning
from archipelago.instance import Instance
from archipelago.nbd import PLUGIN_PATH
from archipelago.nbd.sockets import clear_stale_socket, listening
from archipelago.nbd.tls import TlsSetup, tls_setup
from control.context import get_config, get_instance, print_json, wants_json


def parse_tcp(text: str) -> tuple[str, int]:
    """Parse HOST:PORT; only loopback addresses are accepted (never expose volumes)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"--tcp wants HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidArgument(f"--tcp must bind a loopback address (127.0.0.1 or ::1), got {host!r}")
    return host, int(port)


def choose_backend(inst: Instance, args: argparse.Namespace) -> str:
    """--direct / --peer, else peer when the instance's daemon runs, else direct."""
    if args.direct:
        return "direct"

    running = inst.daemon_running()
    if args.peer and not running:
        raise NotRunning(f"no daemon runs for {inst.data_dir} (archip daemon start, or --direct)")
    return "peer" if running else "direct"


def tcp_tls(inst: Instance, args: argparse.Namespace) -> TlsSetup:
    """TLS of a TCP export: --tls-certificates / [nbd] tls_certificates, else the PSK file
    (--tls-psk / [nbd] tls_psk, created when absent); none only with --insecure."""
    cfg = get_config(args, inst)
    return tls_setup(args.tls_psk or cfg.nbd.tls_psk,
                     args.tls_certificates or cfg.nbd.tls_certificates, args.insecure)


def nbdkit_command(inst: Instance, args: argparse.Namespace) -> list[str]:
    """The nbdkit command line for ``archip nbd serve``."""
    if shutil.which("nbdkit") is None:
        raise ConfigError("nbdkit is not installed (apt-get install nbdkit nbdkit-plugin-python)")
    cfg = get_config(args, inst)
    cmd = ["nbdkit", "-t", str(args.threads or cfg.nbd.threads)]
    if args.tcp:
        host, port = parse_tcp(args.tcp)
        # Any local user can reach a loopback port: TLS (the key file is private) or --insecure.
        cmd += ["-i", host, "-p", str(port), *tcp_tls(inst, args).nbdkit_args()]
    elif args.insecure or args.tls_psk or args.tls_certificates:
        raise InvalidArgument("--insecure, --tls-psk and --tls-certificates go with --tcp")
    else:
        cmd += ["-U", str(inst.check_socket_path(Path(args.socket or cfg.nbd.socket)))]
    cmd += ["-f", "--exit-with-parent"]  # always under _supervise (restart on crash)
    backend = choose_backend(inst, args)
    if backend == "peer" and cfg.nbd.cfilter:
        from archipelago.nbd.cfilter import so_path

        if (so := so_path()) is not None:  # cached blocks served in C (nbd/cfilter.py)
            cmd.append(f"--filter={so}")
    cmd += ["python", str(PLUGIN_PATH), f"dir={inst.data_dir}", f"venv={sys.prefix}",
            f"backend={backend}"]
    default = args.default_export or cfg.nbd.default_export
    if default:
        cmd.append(f"default-export={default}")
    if args.no_scratch:
        cmd.append("scratch=no")
    return cmd


def _make_private(path: Path, proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """chmod 0600 the socket once nbdkit listens (it makes it 0755 while binding; the
    data dir is 0700 already, this also covers --socket outside it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(path, None):
            os.chmod(path, 0o600)
            return
        if proc is not None and proc.poll() is not None:
            return
        time.sleep(0.02)


#: Restarts allowed within RESTART_WINDOW seconds before giving up.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: Seconds nbdkit gets to exit on SIGTERM (1.32 waits for connected clients) before SIGKILL.
STOP_GRACE = 8.0


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _supervise(cmd: list[str], sock: Path | None) -> int:
    """Run nbdkit in the foreground and restart it when it dies of a signal.

    nbdkit 1.32 can abort the whole server when a client hangs up with large requests
    in flight (fixed in 1.33.10): restarting at once lets clients reconnect. Nothing
    acknowledged is lost (writes are in the blocker, maps are write-through), and
    the restarted nbdkit breaks the dead one's volume locks (stale: dead pid).
    """
    # Explicitly: a background job of a non-interactive shell (as CI may start us) inherits
    # SIGINT ignored, and Python then keeps ignoring it -- Ctrl-C would do nothing.
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigterm)
    starts: list[float] = []
    try:
        while True:
            starts = [t for t in starts if time.monotonic() - t < RESTART_WINDOW]
            starts.append(time.monotonic())
            proc = subprocess.Popen(cmd)
            try:
                if sock is not None:
                    _make_private(sock, proc)
                rc = proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:  # killing loses nothing acknowledged
                    proc.kill()
                    try:
                        proc.wait(STOP_GRACE)
                    except subprocess.TimeoutExpired:  # stuck in the kernel: do not hang too
                        print(f"nbdkit (pid {proc.pid}) did not die of SIGKILL", file=sys.stderr)
                        return 1
                return 0
            if rc >= 0:  # a normal exit (config error, nbdkit stopped on purpose)
                return rc
            if len(starts) > MAX_RESTARTS:
                print(f"nbdkit died {len(starts)} times in {RESTART_WINDOW:.0f}s; giving up",
                      file=sys.stderr)
                return 1
            print(f"nbdkit died of signal {-rc}; restarting", file=sys.stderr, flush=True)
            clear_stale_socket(sock)
    finally:
        if sock is not None and not listening(sock, None):
            sock.unlink(missing_ok=True)


def _running_pid(inst: Instance) -> int | None:
    """Pid of the `nbd serve` supervisor of this instance, if alive."""
    try:
        pid = int(inst.nbd_pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _background(inst: Instance, args: argparse.Namespace, sock: Path | None,
                tcp: tuple[str, int] | None) -> int:
    """Start `nbd serve --foreground` detached (supervisor + nbdkit), logging to a file."""
    pid = _running_pid(inst)
    if pid is not None:
        raise Busy(f"nbdkit is already serving this instance (pid {pid}; archip nbd stop)")
    argv = [sys.executable, "-m", "control", "--data-dir", str(inst.data_dir)]
    if args.config:
        argv += ["--config", args.config]
    for o in args.overrides or []:
        argv += ["-o", o]
    argv += ["nbd", "serve", "--foreground", "--" + choose_backend(inst, args)]
    for flag, value in (("--socket", args.socket), ("--tcp", args.tcp),
                        ("--default-export", args.default_export),
                        ("--tls-psk", args.tls_psk),
                        ("--tls-certificates", args.tls_certificates)):
        if value:
            argv += [flag, value]
    if args.insecure:
        argv.append("--insecure")
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.no_scratch:
        argv.append("--no-scratch")
    with open(inst.nbd_log, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    inst.nbd_pid.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 60
    while not (listening(sock, tcp) and (sock is None or not sock.stat().st_mode & 0o077)):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            inst.nbd_pid.unlink(missing_ok=True)
            tail = inst.nbd_log.read_text(errors="replace").strip().splitlines()[-5:]
            raise ConfigError("nbdkit did not start: " + " | ".join(tail))
        time.sleep(0.05)
    return proc.pid


def _serve(args: argparse.Namespace) -> int:
    """Run nbdkit with the plugin under a restarting supervisor (detached unless --foreground)."""
    inst = get_instance(args).ensure()
    cmd = nbdkit_command(inst, args)
    tcp = parse_tcp(args.tcp) if args.tcp else None
    sock = None if tcp else Path(args.socket or get_config(args, inst).nbd.socket)
    where = args.tcp or str(sock)
    os.umask(0o077)  # the unix socket and pid/log files are private
    clear_stale_socket(sock)
    how = tcp_tls(inst, args).describe(*tcp) if tcp else {
        "uri": nbd_uri("VOLUME", str(sock))}
    if args.foreground:
        print(f"serving {inst.data_dir} over NBD on {where} ({choose_backend(inst, args)} "
              "backend; Ctrl-C stops)", file=sys.stderr, flush=True)
        print(_connect_help(how), file=sys.stderr, flush=True)
        return _supervise(cmd, sock)
    pid = _background(inst, args, sock, tcp)
    if wants_json(args):
        print_json({"listen": where, "pid": pid, "pid_file": str(inst.nbd_pid),
                    "log": str(inst.nbd_log), **how})
    else:
        print(f"nbdkit serving {inst.data_dir} on {where} (pid {pid}, log {inst.nbd_log})")
        print(_connect_help(how))
    return 0


def _connect_help(how: dict[str, str | None]) -> str:
    """How a client connects (libnbd URI; qemu options when TLS needs an --object)."""
    lines = [f"connect: {how['uri']}"]
    if how.get("tls") == "psk":
        lines[0] += "   (nbdinfo/nbdcopy; Python nbd: set_uri_allow_local_file(True) first)"
    if how.get("qemu_object"):
        lines.append(f"qemu:    --object {how['qemu_object']} "
                     f"--image-opts {how['qemu_drive']}   (qemu-system: -drive {how['qemu_drive']})")
    elif how.get("tls") == "none":
        lines.append("WARNING: plain TCP (--insecure): every local user can read and write "
                     "every volume")
    return "\n".join(lines)


def _stop(args: argparse.Namespace) -> int:
    """Stop the `archip nbd serve` of this instance (SIGTERM to its supervisor)."""
    inst = get_instance(args)
    pid = _running_pid(inst)
    if pid is None:
        inst.nbd_pid.unlink(missing_ok=True)
        raise NotRunning("no nbdkit is running for this instance")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE + 10
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    inst.nbd_pid.unlink(missing_ok=True)
    print(f"stopped nbdkit (pid {pid})")
    return 0


def nbd_uri(volume: str, socket_path: str | os.PathLike[str]) -> str:
    """The URI qemu, nbdcopy, nbdinfo and fio accept for ``volume``."""
    return f"nbd+unix:///{volume}?socket={socket_path}"


def _uri(args: argparse.Namespace) -> int:
    """Print the nbd+unix:// URI of a volume (nbds:// with --tcp)."""
    inst = get_instance(args)
    if args.tcp:
        host, port = parse_tcp(args.tcp)
        tls = tcp_tls(inst, args)
        uri = tls.uri(host, port, args.volume)
        if wants_json(args):
            print_json({"volume": args.volume, "uri": uri, "tls": tls.kind,
                        "qemu_object": tls.qemu_object(),
                        "qemu_drive": tls.qemu_drive(host, port, args.volume)})
        else:
            print(uri)
        return 0
    path = args.socket or get_config(args, inst).nbd.socket
    uri = nbd_uri(args.volume, path)
    if wants_json(args):
        print_json({"volume": args.volume, "uri": uri, "socket": str(path)})
    else:
        print(uri)
    return 0


def _tls_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-psk", metavar="FILE",
                   help="PSK file for --tcp (default [nbd] tls_psk: DATA_DIR/tls/keys.psk)")
    p.add_argument("--tls-certificates", metavar="DIR",
                   help="X.509 certificates directory for --tcp instead of the PSK")
    p.add_argument("--insecure", action="store_true",
                   help="plain TCP without TLS: every local user can use every volume")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `archip nbd serve|uri|stop`."""
    p = subparsers.add_parser("nbd", help="export volumes over NBD (nbdkit)")
    sub = p.add_subparsers(title="nbd commands", metavar="COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])

    s = sub.add_parser("serve", help="run nbdkit exporting every volume")
    s.add_argument("--socket", metavar="PATH", help="unix socket (default DATA_DIR/nbd.sock)")
    s.add_argument("--tcp", metavar="HOST:PORT",
                   help="listen on loopback TCP instead, with TLS (a PSK made in DATA_DIR/tls)")
    _tls_flags(s)
    how = s.add_mutually_exclusive_group()
    how.add_argument("--direct", action="store_true",
                     help="run the mapper inside nbdkit (like qemu-nbd on a file); "
                          "the default when no daemon runs")
    how.add_argument("--peer", action="store_true",
                     help="send every request to the running daemon's mapper peer; "
                          "the default when the daemon runs")
    s.add_argument("--foreground", action="store_true", help="stay in the foreground")
    s.add_argument("--threads", type=int, default=0, help="nbdkit worker threads")
    s.add_argument("--default-export", metavar="VOLUME", help="served to clients naming none")
    s.add_argument("--no-scratch", action="store_true", help="refuse VOLUME@scratch exports")
    s.set_defaults(func=_serve)

    u = sub.add_parser("uri", help="print the NBD URI of a volume")
    u.add_argument("volume")
    u.add_argument("--socket", metavar="PATH", help="unix socket (default DATA_DIR/nbd.sock)")
    u.add_argument("--tcp", metavar="HOST:PORT", help="the nbds:// URI of `nbd serve --tcp`")
    _tls_flags(u)
    u.set_defaults(func=_uri)

    t = sub.add_parser("stop", help="stop the nbdkit started by `nbd serve`")
    t.set_defaults(func=_stop)
