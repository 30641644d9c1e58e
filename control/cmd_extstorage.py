"""`archip extstorage install DIR`: the Ganeti ExtStorage provider "archipelago"."""

from __future__ import annotations

import argparse
from pathlib import Path

from control.context import get_instance, print_json, wants_json


def _install(a: argparse.Namespace) -> int:
    from control.compute.extstorage import install

    inst = get_instance(a)
    written = install(Path(a.dir), inst, getattr(a, "config", None))
    if wants_json(a):
        print_json({"dir": str(Path(a.dir).resolve()), "files": [p.name for p in written]})
    else:
        print(f"installed the archipelago ExtStorage provider in {Path(a.dir).resolve()} "
              f"({len(written)} files)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `archip extstorage`."""
    p = subparsers.add_parser("extstorage", help="Ganeti ExtStorage provider for this instance")
    sub = p.add_subparsers(title="extstorage commands", metavar="ACTION")
    s = sub.add_parser("install", help="write the provider's scripts into DIR "
                       "(e.g. /srv/ganeti/extstorage/archipelago)")
    s.add_argument("dir")
    s.set_defaults(func=_install)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
