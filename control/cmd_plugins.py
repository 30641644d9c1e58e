"""The `archip` subcommands of every installed control-plane plugin (entry points
``archipelago.control``); `archip db` is control/cmd_db.py."""

from __future__ import annotations

import argparse
import sys

from control.host import registry


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add every installed plugin's commands."""
    for name in sorted(registry.installed()):
        try:
            cls = registry.load_class(name)
        except Exception as e:  # noqa: BLE001 -- one broken plugin must not take the CLI down
            print(f"archip: warning: cannot load plugin {name}: {e}", file=sys.stderr)
            continue
        cls.register_cli(subparsers)
