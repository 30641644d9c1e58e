"""Area helpers for the daemon tests: a real daemon in a tmp --data-dir, the archip CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARCHIP = [sys.executable, "-m", "control"]
MiB = 1024 * 1024
BS = 4 * MiB


@dataclass
class CLIResult:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Daemon:
    """One instance directory and the daemon serving it."""

    data_dir: Path
    overrides: list[str] = field(default_factory=list)

    def archip(self, *args: str, timeout: float = 90, check: bool = False) -> CLIResult:
        """Run `archip --data-dir DIR [-o ...] ARGS` and capture its output."""
        cmd = [*ARCHIP, "--data-dir", str(self.data_dir)]
        for o in self.overrides:
            cmd += ["-o", o]
        p = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                           cwd=ROOT, stdin=subprocess.DEVNULL)
        r = CLIResult(p.returncode, p.stdout, p.stderr)
        if check and r.rc != 0:
            raise AssertionError(f"archip {' '.join(args)} failed ({r.rc}): {r.err or r.out}")
        return r

    def start(self) -> dict[str, Any]:
        """`daemon start --no-nbd --json`."""
        return self.archip("daemon", "start", "--no-nbd", "--json", check=True).json()

    def status(self) -> dict[str, Any]:
        """`daemon status --json`."""
        return self.archip("daemon", "status", "--json").json()

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "run" / "daemon.pid").read_text())
        except (OSError, ValueError):
            return None

    def child_pid(self, name: str) -> int:
        for c in self.status()["children"]:
            if c["name"] == name and c["pid"]:
                return int(c["pid"])
        raise AssertionError(f"no running child {name}")

    def log(self) -> str:
        try:
            return (self.data_dir / "log" / "archipelago.log").read_text(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        """SIGKILL the whole daemon (supervisor and every child: one process group)."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop cleanly; SIGKILL the group if that fails (tests must not leak daemons)."""
        try:
            self.archip("daemon", "stop", timeout=60)
        finally:
            pid = self.pid()
            if pid is not None:
                self.kill9()
            seg = Path("/dev/shm")
            from archipelago.instance import Instance

            (seg / Instance(self.data_dir.resolve()).segment_name).unlink(missing_ok=True)


def start_daemon(tmp: Path, overrides: list[str] | None = None) -> Daemon:
    """Start a daemon on the file blocker in ``tmp``."""
    d = Daemon(tmp, list(overrides or []))
    d.start()
    return d


def make_image(path: Path, size: int, seed: int, data_blocks: list[int],
               zero_blocks: list[int] = (), tail: bool = True) -> Path:  # type: ignore[assignment]
    """A sparse raw image: random data in some 4 MiB blocks (partly, unaligned), holes
    elsewhere, explicit zero-filled blocks (data regions that read as zeros)."""
    r = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for i in data_blocks:
            off = i * BS + r.randrange(0, 4096)
            f.seek(off)
            f.write(r.randbytes(min(size - off, r.randrange(MiB, BS))))
        for i in zero_blocks:
            f.seek(i * BS)
            f.write(bytes(min(BS, size - i * BS)))
        if tail:
            f.seek(size - 7)
            f.write(b"archip!")
    return path


def sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def content_objects(data_dir: Path) -> set[str]:
    """Names of content-addressed (64-hex) objects in the file blocker."""
    out = set()
    for p in (data_dir / "blocks" / "objects").rglob("*"):
        if p.is_file() and len(p.name) == 64 and all(c in "0123456789abcdef" for c in p.name):
            out.add(p.name)
    return out


def wait_gateway_status(d: Daemon, timeout: float = 60.0) -> dict[str, Any]:
    """The daemon's `gateway status` once its gateway answers /info."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        r = d.archip("--json", "gateway", "status")
        if r.rc == 0:
            st = dict(r.json())
            try:
                if requests.get(f"{st['url']}/info", timeout=2).status_code == 200:
                    return st
            except requests.RequestException:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the daemon's gateway never answered: {d.log()[-2000:]}")
        time.sleep(0.1)


def wait_gateway(d: Daemon, timeout: float = 60.0) -> str:
    """The URL of the daemon's gateway once it answers /info."""
    return str(wait_gateway_status(d, timeout)["url"])
