"""`archip user|project|quota`: identity administration, in-process over the control database."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from archipelago.errors import InvalidArgument
from control.context import print_json, wants_json
from control.host.clirun import run_plugin
from control.volume_fmt import human, parse_size


def _svc(args: argparse.Namespace, fn: Any) -> Any:
    return run_plugin(args, "identity", lambda plugin: fn(plugin.service))


def _read_password(args: argparse.Namespace) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise InvalidArgument("--password-stdin: empty password on stdin")
    return line


def add_user(args: argparse.Namespace, print_token: bool = False) -> int:
    """Create a user: prints its uuid (or, for the gateway alias, its token)."""
    password = _read_password(args)
    user, token = _svc(args, lambda s: s.add_user(args.name, email=args.email or "",
                                                  password=password, is_admin=args.admin))
    if wants_json(args):
        print_json({**user.to_dict(), "token": token, "account": user.uuid})
    else:
        print(token if print_token else user.uuid)
    return 0


def list_users(args: argparse.Namespace) -> int:
    """Every user."""
    users = _svc(args, lambda s: s.users())
    if wants_json(args):
        print_json([{**u.to_dict(), "account": u.uuid} for u in users])
        return 0
    for u in users:
        flags = ",".join(f for f, on in (("admin", u.is_admin), ("disabled", not u.active)) if on)
        print(f"{u.name}\t{u.uuid}\t{flags or '-'}\t"
              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(u.created))}")
    return 0


def _show_user(args: argparse.Namespace, user: Any) -> int:
    if wants_json(args):
        print_json(user.to_dict())
    else:
        for k, v in user.to_dict().items():
            print(f"{k:9} {v}")
    return 0


def info(args: argparse.Namespace) -> int:
    """One user."""
    return _show_user(args, _svc(args, lambda s: s.user(args.name)))


def disable(args: argparse.Namespace) -> int:
    """Disable a user and revoke its tokens."""
    return _show_user(args, _svc(args, lambda s: s.set_active(args.name, False)))


def enable(args: argparse.Namespace) -> int:
    """Enable a user."""
    return _show_user(args, _svc(args, lambda s: s.set_active(args.name, True)))


def renew(args: argparse.Namespace) -> int:
    """Revoke a user's tokens and print a new one."""
    token = _svc(args, lambda s: s.renew_token(args.name))
    if wants_json(args):
        print_json({"name": args.name, "token": token})
    else:
        print(token)
    return 0


def _limits(pairs: list[str]) -> dict[str, int]:
    out = {}
    for pair in pairs:
        res, sep, value = pair.partition("=")
        if not sep or not res:
            raise InvalidArgument(f"expected RESOURCE=LIMIT, got {pair!r}")
        out[res] = parse_size(value)
    return out


def create_project(args: argparse.Namespace) -> int:
    """Create a project with limits; prints its uuid."""
    plim, mlim = _limits(args.limit), _limits(args.member_limit)
    both = {r: (plim.get(r, mlim.get(r, 0)), mlim.get(r, plim.get(r, 0)))
            for r in {*plim, *mlim}}
    uid = _svc(args, lambda s: s.create_project(args.name, both, owner=args.owner))
    if wants_json(args):
        print_json({"uuid": uid, "name": args.name})
    else:
        print(uid)
    return 0


def add_member(args: argparse.Namespace) -> int:
    """Add a user to a project."""
    _svc(args, lambda s: s.add_member(args.project, args.user))
    return 0


def list_projects(args: argparse.Namespace) -> int:
    """Projects with members and limits."""
    projs = _svc(args, lambda s: s.projects())
    if wants_json(args):
        print_json(projs)
        return 0
    for p in projs:
        lims = " ".join(f"{r}={v['project_limit']}/{v['member_limit']}"
                        for r, v in sorted(p["limits"].items()))
        print(f"{p['name']}\t{p['uuid']}\tmembers: {','.join(p['members']) or '-'}\t{lims}")
    return 0


def show_quota(args: argparse.Namespace) -> int:
    """Quotas of one user, or of every user."""
    async def go(s: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        data = await s.service_quotas(args.user)
        units = {n: r.unit for n, r in (await s.resources()).items()}
        names = (await s.catalogs(list(data), []))["uuid_catalog"]
        return data, units, names

    data, units, names = _svc(args, go)
    if wants_json(args):
        print_json(data)
        return 0
    print("USER\tPROJECT\tRESOURCE\tLIMIT\tUSAGE\tPENDING")
    for uid, per_project in data.items():
        for proj, per_res in per_project.items():
            label = "system" if proj == uid else proj
            for res, q in per_res.items():
                fmt = human if units.get(res) == "bytes" else str
                print(f"{names.get(uid, uid)}\t{label}\t{res}\t{fmt(q['limit'])}\t"
                      f"{fmt(q['usage'])}\t{fmt(q['pending'])}")
    return 0


def set_quota(args: argparse.Namespace) -> int:
    """Set a resource's limit in a user's system project."""
    limit = parse_size(args.limit)
    _svc(args, lambda s: s.set_quota(args.user, args.resource, limit))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `user`, `project` and `quota`."""
    def group(name: str, text: str) -> argparse._SubParsersAction:
        p = subparsers.add_parser(name, help=text)
        p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])
        return p.add_subparsers(title=f"{name} commands", metavar="COMMAND",
                                parser_class=type(p))

    u = group("user", "identity users (accounts) and their tokens")
    a = u.add_parser("add", help="create a user (prints its uuid; --json adds its token)")
    a.add_argument("name")
    a.add_argument("--email", default="")
    a.add_argument("--password-stdin", action="store_true",
                   help="read a password for password logins from stdin (one line)")
    a.add_argument("--admin", action="store_true", help="an administrator")
    a.set_defaults(func=add_user)
    u.add_parser("list", help="list users").set_defaults(func=list_users)
    for name, fn, text in (("info", info, "show a user"),
                           ("disable", disable, "disable a user, revoking its tokens"),
                           ("enable", enable, "enable a user"),
                           ("renew-token", renew, "revoke a user's tokens, print a new one")):
        c = u.add_parser(name, help=text)
        c.add_argument("name", help="user name or uuid")
        c.set_defaults(func=fn)

    p = group("project", "projects: shared quota pools with members")
    c = p.add_parser("create", help="create a project (prints its uuid)")
    c.add_argument("name")
    c.add_argument("--limit", action="append", default=[], metavar="RESOURCE=LIMIT",
                   help="the whole project's limit (size suffixes: 10G)")
    c.add_argument("--member-limit", action="append", default=[], metavar="RESOURCE=LIMIT",
                   help="each member's limit in the project (default: the project's)")
    c.add_argument("--owner", help="user owning (and first member of) the project")
    c.set_defaults(func=create_project)
    c = p.add_parser("add-member", help="add a user to a project")
    c.add_argument("project")
    c.add_argument("user")
    c.set_defaults(func=add_member)
    p.add_parser("list", help="list projects").set_defaults(func=list_projects)

    q = group("quota", "quotas: limits and usage")
    c = q.add_parser("show", help="limits, usage and pending charges")
    c.add_argument("user", nargs="?", help="user name or uuid (default: every user)")
    c.set_defaults(func=show_quota)
    c = q.add_parser("set", help="set a limit in a user's system project")
    c.add_argument("user")
    c.add_argument("resource")
    c.add_argument("limit", help="bytes with optional suffix (10G) or a count")
    c.set_defaults(func=set_quota)
