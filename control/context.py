"""Helpers every `archip` subcommand uses: the instance, the config, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from archipelago.config import Config
from archipelago.instance import Instance


def get_instance(args: argparse.Namespace) -> Instance:
    """The instance selected by --data-dir / $ARCHIPELAGO_DATA_DIR / the default."""
    return Instance.from_args(getattr(args, "data_dir", None))


def get_config(args: argparse.Namespace, instance: Instance | None = None) -> Config:
    """The effective config: defaults < DIR/archipelago.toml < $ARCHIPELAGO_CONFIG/--config < -o."""
    inst = instance or get_instance(args)
    return inst.config(getattr(args, "config", None), getattr(args, "overrides", None) or [])


def wants_json(args: argparse.Namespace) -> bool:
    """True when --json was given."""
    return bool(getattr(args, "json", False))


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout."""
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
