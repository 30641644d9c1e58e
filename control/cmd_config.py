"""`archip config show|sample|paths`: the effective configuration and instance paths."""

from __future__ import annotations

import argparse

from archipelago import config as cfgmod
from control.context import get_config, get_instance, print_json, wants_json


def _show(args: argparse.Namespace) -> int:
    """Print the effective config (TOML, or JSON with --json)."""
    cfg = get_config(args)
    if wants_json(args):
        print_json(cfg.to_dict())
    else:
        print(cfgmod.to_toml(cfg), end="")
    return 0


def _sample(args: argparse.Namespace) -> int:
    """Print the commented sample config with every default."""
    print(sample_text(), end="")
    return 0


def sample_text() -> str:
    """The text of etc/archipelago.toml.sample."""
    head = (
        "# archipelago configuration: every key with its default, commented out.\n"
        "# Read from DATA_DIR/archipelago.toml, then $ARCHIPELAGO_CONFIG or --config FILE;\n"
        "# `archip -o section.key=value` overrides one key. Unknown keys are errors.\n"
        "# Empty paths derive from the data directory. Show the result: archip config show\n\n"
    )
    return head + cfgmod.to_toml(cfgmod.config_class()(), commented=True)


def _paths(args: argparse.Namespace) -> int:
    """Print the instance paths."""
    inst = get_instance(args)
    paths = {
        "data_dir": inst.data_dir, "config": inst.config_path, "blocks": inst.blocks_dir,
        "segment": inst.segment_path, "control_socket": inst.control_socket,
        "nbd_socket": inst.nbd_socket, "daemon_pid": inst.daemon_pid,
        "gateway_pid": inst.gateway_pid, "log": inst.log_file, "gateway_log": inst.gateway_log,
    }
    if wants_json(args):
        print_json({k: str(v) for k, v in paths.items()})
    else:
        for k, v in paths.items():
            print(f"{k:15} {v}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `config`."""
    p = subparsers.add_parser("config", help="show the effective configuration")
    sub = p.add_subparsers(title="config commands", metavar="ACTION", required=True)
    sub.add_parser("show", help="print the effective config").set_defaults(func=_show)
    sub.add_parser("sample", help="print the commented sample").set_defaults(func=_sample)
    sub.add_parser("paths", help="print the instance paths").set_defaults(func=_paths)
