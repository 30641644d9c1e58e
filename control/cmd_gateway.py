"""`archip gateway start|stop|status|user add|user list`: the Pithos+/Swift gateway."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

from archipelago.blocker.base import pid_alive
from archipelago.errors import AlreadyExists, Busy, NotRunning, TimedOut
from archipelago.instance import Instance
from control.context import get_config, get_instance, print_json, wants_json

#: Seconds `gateway start` waits for the server to answer.
START_TIMEOUT = 30.0


def gateway_state(inst: Instance) -> dict[str, Any] | None:
    """{"url", "pid", ...} of this instance's running gateway, or None."""
    from pithos_gw.server import state_path

    try:
        state = json.loads(state_path(inst).read_text())
        pid = int(state["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return dict(state) if pid_alive(pid) else None


def run_by_daemon(inst: Instance, pid: int) -> bool:
    """True when ``pid`` is the gateway child of this instance's running daemon."""
    from archipelago.service.supervisor import status_path

    if not inst.daemon_running():
        return False
    try:
        children = json.loads(status_path(inst).read_text())["children"]
    except (OSError, ValueError, KeyError):
        return False
    return any(c.get("name") == "gateway" and c.get("pid") == pid for c in children)


def _server_cmd(inst: Instance, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "control.host.apiserver", "--data-dir", str(inst.data_dir)]
    if args.listen:
        cmd += ["--listen", args.listen]
    if getattr(args, "config", None):
        cmd += ["--config", args.config]
    for o in getattr(args, "overrides", None) or []:
        cmd += ["-o", o]
    return cmd


def _start(args: argparse.Namespace) -> int:
    """Start the gateway (detached unless --foreground) and print its URL."""
    inst = get_instance(args).ensure()
    if args.listen:
        from pithos_gw.server import parse_listen

        parse_listen(args.listen)  # refuse non-loopback before forking anything
    running = gateway_state(inst)
    if running:
        raise AlreadyExists(f"a gateway is already running at {running['url']} "
                            f"(pid {running['pid']})")
    cmd = _server_cmd(inst, args)
    if args.foreground:
        os.execv(sys.executable, cmd)
    os.umask(0o077)
    log_start = inst.gateway_log.stat().st_size if inst.gateway_log.exists() else 0
    with open(inst.gateway_log, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(inst.gateway_log, "rb") as f:  # this run's output only
                f.seek(log_start)
                lines = f.read().decode(errors="replace").strip().splitlines()
            said = [ln for ln in lines if ln.startswith("gateway: error: ")]
            tail = said[-1:] or lines[-3:]
            raise NotRunning(f"gateway exited ({proc.returncode}): " + " | ".join(tail))
        state = gateway_state(inst)
        if state and state["pid"] == proc.pid and _answers(state["url"]):
            if wants_json(args):
                print_json({**state, "log": str(inst.gateway_log)})
            else:
                print(f"gateway serving {inst.data_dir} at {state['url']} (pid {proc.pid})")
            return 0
        time.sleep(0.1)
    proc.terminate()
    raise TimedOut(f"gateway did not answer within {START_TIMEOUT:.0f}s "
                   f"(log {inst.gateway_log})")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/info", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _stop(args: argparse.Namespace) -> int:
    """Stop the gateway (SIGTERM, then wait for it to exit)."""
    inst = get_instance(args)
    state = gateway_state(inst)
    if state is None:
        raise NotRunning("no gateway is running for this instance")
    pid = int(state["pid"])
    if run_by_daemon(inst, pid):
        # The supervisor would only restart it: the daemon owns this gateway.
        raise Busy("the gateway is run by the daemon (started with --gateway): stop it with "
                   "`archip daemon stop`, or start the daemon without --gateway")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _alive(pid):
        if time.monotonic() > deadline:
            raise TimedOut(f"gateway (pid {pid}) did not stop within 30s")
        time.sleep(0.05)
    print(f"stopped gateway (pid {pid})")
    return 0


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child of ours counts as gone, and is reaped)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    return pid_alive(pid)


def _status(args: argparse.Namespace) -> int:
    """Report whether the gateway runs, its URL and pid."""
    inst = get_instance(args)
    state = gateway_state(inst)
    doc = {"running": state is not None, "url": state["url"] if state else None,
           "pid": state["pid"] if state else None, "data_dir": str(inst.data_dir),
           "blocks": state.get("blocks") if state else None,
           "run_by_daemon": bool(state) and run_by_daemon(inst, int(state["pid"]))}
    if wants_json(args):
        print_json(doc)
    elif state:
        print(f"gateway running at {doc['url']} (pid {doc['pid']}, blocks: {doc['blocks']})")
    else:
        print("gateway not running")
    return 0 if state else NotRunning.exit_code


def _with_meta(inst: Instance, fn: Any, cfg: Any = None) -> Any:
    from pithos_gw.meta import MetaStore
    from pithos_gw.server import meta_url

    os.umask(0o077)  # the database and its WAL hold user keys
    url = meta_url(inst, cfg)

    async def run() -> Any:
        meta = MetaStore(url)
        try:
            await meta.open()
            return await fn(meta)
        finally:
            await meta.close()

    return asyncio.run(run())


def _identity_on(args: argparse.Namespace) -> bool:
    """True when the identity plugin owns users ([control] plugins); else the v1 table."""
    return "identity" in get_config(args).control.plugins


def _user_add(args: argparse.Namespace) -> int:
    """Create a gateway user (its account) and print its key."""
    if _identity_on(args):
        # Alias of `archip user add`: the printed key is the user's token, which works
        # both as X-Auth-Key on /auth/v1.0 and as X-Auth-Token; the account is its uuid.
        from control.identity.cli import add_user

        args.name, args.email, args.admin = args.account, "", False
        return add_user(args, print_token=True)
    inst = get_instance(args).ensure()
    key = _with_meta(inst, lambda m: m.user_add(args.account),  # checks the name
                     get_config(args, inst))
    if wants_json(args):
        print_json({"account": args.account, "key": key})
    else:
        print(key)
    return 0


def _user_list(args: argparse.Namespace) -> int:
    """List gateway users."""
    if _identity_on(args):
        from control.identity.cli import list_users

        return list_users(args)
    inst = get_instance(args).ensure()
    users = _with_meta(inst, lambda m: m.user_list(), get_config(args, inst))
    if wants_json(args):
        print_json([{"account": a, "created": c} for a, c in users])
    else:
        for a, c in users:
            print(f"{a}\t{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(c))}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `archip gateway start|stop|status|user`."""
    p = subparsers.add_parser("gateway", help="the Pithos+/Swift HTTP gateway")
    sub = p.add_subparsers(title="gateway commands", metavar="COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])

    s = sub.add_parser("start", help="start the gateway on a loopback address")
    s.add_argument("--listen", metavar="HOST:PORT", default="",
                   help="loopback address to bind (default gateway.listen, 127.0.0.1:8080)")
    s.add_argument("--foreground", action="store_true", help="stay in the foreground")
    s.set_defaults(func=_start)
    sub.add_parser("stop", help="stop the gateway").set_defaults(func=_stop)
    sub.add_parser("status", help="is the gateway running, and where").set_defaults(
        func=_status)

    u = sub.add_parser("user", help="gateway users (embedded identity)")
    usub = u.add_subparsers(title="user commands", metavar="COMMAND", parser_class=type(p))
    u.set_defaults(func=lambda a: (u.print_help(sys.stderr), 2)[1])
    ua = usub.add_parser("add", help="create a user and print its key")
    ua.add_argument("account")
    ua.set_defaults(func=_user_add)
    usub.add_parser("list", help="list users").set_defaults(func=_user_list)
