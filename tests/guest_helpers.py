"""The test guest (tests/guest/build.sh): built once into a cache dir, read from its console.

``guest_files()`` builds the kernel + busybox initramfs once per machine (cache dir keyed
by the script's hash; a concurrent build by another session is harmless: each builds
into its own temp dir and renames it into place). ``Console`` reads the GUEST-* lines a
guest prints on its serial log.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "tests" / "guest" / "build.sh"
#: TCG boots the guest in 6-8 s alone; three at once on 2 loaded cores take much longer.
BOOT_TIMEOUT = 240.0


@dataclass(frozen=True)
class Guest:
    """The built guest: kernel and initramfs paths."""

    kernel: Path
    initrd: Path


def need_qemu() -> None:
    """Skip when qemu-system-x86_64 is not installed (scripts/install.sh installs it)."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (bash scripts/install.sh)")


def guest_files() -> Guest:
    """Build (once per machine and script version) and return the test guest."""
    need_qemu()
    digest = hashlib.sha256(BUILD.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("ARCHIPELAGO_GUEST_CACHE",
                                Path(tempfile.gettempdir()) / f"archipelago-guest-{digest}"))
    if not (cache / "vmlinuz").is_file() or not (cache / "initrd.gz").is_file():
        tmp = Path(tempfile.mkdtemp(prefix="archipelago-guest-build-"))
        try:
            subprocess.run(["bash", str(BUILD), str(tmp)], check=True, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=900)
            try:
                tmp.rename(cache)
            except OSError:  # another session won the race: its build is the same
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Guest(cache / "vmlinuz", cache / "initrd.gz")


class Console:
    """The GUEST-* lines of a serial console log."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        """The whole log so far."""
        try:
            return self.path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def lines(self, tag: str) -> list[str]:
        """Every `GUEST-<tag> ...` line, in order, without the tag."""
        pat = re.compile(rf"^GUEST-{re.escape(tag)}(?: (.*))?$")
        out = []
        for raw in self.text().splitlines():
            m = pat.match(raw.strip("\r"))
            if m:
                out.append((m.group(1) or "").strip())
        return out

    def wait(self, tag: str, count: int = 1, timeout: float = BOOT_TIMEOUT) -> list[str]:
        """Wait until ``count`` GUEST-<tag> lines are there (polling the file: a log, not a
        synchronisation point); AssertionError with the console on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.lines(tag)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"no GUEST-{tag} x{count} in {timeout:g} s; console:\n"
                                     f"{self.text()[-3000:]}")
            time.sleep(0.2)
