"""Running plugin CLI commands in-process: open the instance's host (config, database with
migrations, enabled plugins), run one coroutine with a plugin, close."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from control.context import get_config, get_instance
from control.host.host import Host
from control.host.plugin import Plugin

T = TypeVar("T")


def open_host(args: argparse.Namespace) -> Host:
    """The Host of the instance named by the command line (not opened yet)."""
    inst = get_instance(args).ensure()
    return Host(inst, get_config(args, inst))


def run_host(args: argparse.Namespace, fn: Callable[[Host], Awaitable[T]]) -> T:
    """Open the host, await ``fn(host)``, close it; returns fn's result."""
    os.umask(0o077)  # the database holds password and token hashes
    host = open_host(args)

    async def run() -> T:
        try:
            await host.open()
            return await fn(host)
        finally:
            await host.close()

    return asyncio.run(run())


def run_plugin(args: argparse.Namespace, name: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn(plugin)`` with the enabled plugin ``name`` (ConfigError when not enabled)."""
    async def call(host: Host) -> T:
        plugin: Plugin = host.plugin(name)
        return await fn(plugin)

    return run_host(args, call)
