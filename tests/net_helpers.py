"""Area helpers for the network tests: what an instance left in the kernel (namespace,
links, dnsmasq processes), read with `ip` and /proc as an operator would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest


def need_net_tools() -> None:
    """Skip unless root with ip, dnsmasq and nft (scripts/install.sh installs them)."""
    if os.geteuid() != 0:
        pytest.skip("networks need root (network namespaces, bridges, taps)")
    for tool in ("ip", "dnsmasq", "nft"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"{tool} is not installed (bash scripts/install.sh)")


def ns_name(data_dir: Path) -> str:
    """The instance's network namespace."""
    from control.compute.network.host import NetHost

    return NetHost(data_dir.resolve()).ns


def netns_list() -> list[str]:
    """`ip netns list`, names only."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def links(ns: str | None = None) -> list[str]:
    """`ip [-n NS] -o link`, interface names."""
    cmd = ["ip"] + (["-n", ns] if ns else []) + ["-o", "link", "show"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def dnsmasq_pids(data_dir: Path) -> list[int]:
    """Pids of dnsmasq processes whose config file is under DATA_DIR, as `ps` lists them."""
    key = str(data_dir.resolve() / "net")
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True,
                         check=True).stdout
    pids = []
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if args.split(" ", 1)[0].endswith("dnsmasq") and key in args:
            pids.append(int(pid))
    return pids


def scrub(data_dir: Path) -> None:
    """Teardown after a failed test: kill the instance's dnsmasq, delete its namespace."""
    for pid in dnsmasq_pids(data_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ns = ns_name(data_dir)
    if ns in netns_list():
        subprocess.run(["ip", "netns", "del", ns], check=False)
