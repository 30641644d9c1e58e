"""The `archip` command line: global options plus auto-discovered control/cmd_*.py modules.

Each cmd module defines ``register(subparsers)`` adding its subcommand(s) with
``set_defaults(func=callable(args) -> int)``. Global options (--data-dir, --config,
--json, -o/--set) are accepted before or after the subcommand name.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import archipelago
from archipelago.errors import ArchipelagoError

PROG = "archip"


def _add_globals(parser: argparse.ArgumentParser, default: Any) -> None:
    # Subparsers use SUPPRESS so a flag given after the subcommand overrides, and
    # its absence does not clobber a flag given before it.
    g = parser.add_argument_group("global options")
    g.add_argument("--data-dir", metavar="DIR", default=default,
                   help="instance directory (env ARCHIPELAGO_DATA_DIR)")
    g.add_argument("--config", metavar="FILE", default=default,
                   help="extra config file (env ARCHIPELAGO_CONFIG)")
    g.add_argument("--json", action="store_true", default=default,
                   help="machine-readable output")
    g.add_argument("-o", "--set", dest="overrides", metavar="SECTION.KEY=VALUE",
                   action="append", default=default,
                   help="override one config key (repeatable)")


class _SubParser(argparse.ArgumentParser):
    """Every subcommand parser also understands the global options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_globals(self, argparse.SUPPRESS)


def discover() -> list[str]:
    """Names of the control.cmd_* modules, sorted."""
    import control

    return sorted(
        f"control.{m.name}" for m in pkgutil.iter_modules(control.__path__)
        if m.name.startswith("cmd_")
    )


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every discovered subcommand registered."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="archipelago: content-addressed volumes over shared-memory peers, "
                    "exported over NBD and a Pithos+/Swift gateway.",
    )
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {archipelago.__version__}")
    _add_globals(parser, None)
    parser.set_defaults(json=False, overrides=[])
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND",
                                       parser_class=_SubParser)
    for name in discover():
        try:
            module = importlib.import_module(name)
            module.register(subparsers)
        except Exception as e:  # one broken plugin must not take the whole CLI down
            print(f"{PROG}: warning: cannot load {name}: {e}", file=sys.stderr)
            if os.environ.get("ARCHIPELAGO_DEBUG") == "1":
                traceback.print_exc()
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse and dispatch; exceptions propagate (main() turns them into exit codes)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: one line on stderr per error, exit code per class."""
    debug = os.environ.get("ARCHIPELAGO_DEBUG") == "1"
    try:
        return run(argv)
    except ArchipelagoError as e:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error worth a message.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- silence the exit flush
        except OSError:
            pass
        return 1
    except SystemExit:
        raise
    except Exception as e:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: internal error: {type(e).__name__}: {e} "
              f"(set ARCHIPELAGO_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
