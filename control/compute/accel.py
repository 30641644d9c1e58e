"""Which qemu accelerator works here: KVM when a probe guest runs under it, else TCG.

/dev/kvm can open and still be useless (nested hosts where a KVM guest hangs at
"Booting from ROM"), so the probe boots a 512-byte boot sector that writes to an
isa-debug-exit port: qemu then exits with status 3. No exit within the timeout, or
any other status, means KVM does not work and TCG is used.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from archipelago.errors import ConfigError

QEMU = "qemu-system-x86_64"
#: Exit status of qemu when the probe's boot sector wrote 1 to the isa-debug-exit port.
PROBE_OK = (1 << 1) | 1
#: mov al,1; out 0xf4,al; hlt; jmp $  -- padded to a boot sector.
_BOOT = bytes([0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE])
_SECTOR = _BOOT + bytes(510 - len(_BOOT)) + b"\x55\xaa"

_cache: dict[tuple[str, float], str] = {}


def probe(accel: str, timeout: float, qemu: str = QEMU) -> bool:
    """True when a probe guest boots and exits under ``accel`` within ``timeout`` seconds."""
    with tempfile.TemporaryDirectory(prefix="archip-accel-") as d:
        img = Path(d) / "probe.img"
        img.write_bytes(_SECTOR)
        argv = [qemu, "-accel", accel, "-nodefaults", "-display", "none", "-m", "16",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot",
                "-drive", f"file={img},format=raw,if=floppy,snapshot=on"]
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        except OSError:
            return False
        return p.returncode == PROBE_OK


def detect(setting: str, timeout: float = 5.0, qemu: str = QEMU) -> str:
    """The accelerator to use for ``[compute] accel`` = auto | kvm | tcg (auto is probed once)."""
    if setting in ("kvm", "tcg"):
        return setting
    if setting != "auto":
        raise ConfigError(f"[compute] accel must be auto, kvm or tcg, not {setting!r}")
    key = (qemu, timeout)
    if key not in _cache:
        usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and probe("kvm", timeout, qemu)
        _cache[key] = "kvm" if usable else "tcg"
    return _cache[key]
