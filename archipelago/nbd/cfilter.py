"""The C nbdkit filter archip-fast (native/nbdkit_filter_archip.c, archip_fast_map.c): build, publish.

nbdkit loads the filter and the Python plugin into one process; the filter serves
pread/pwrite of blocks the plugin's map cache knows (peer_cache.py) without entering
Python. This module builds the .so (``python -m archipelago.nbd.cfilter build``, run
by scripts/install.sh), says where it is, and gives the plugin the ctypes binding it
uses to publish map entries into the filter (:class:`Publisher`).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
_NATIVE = _ROOT / "native"
#: The nbdkit glue and the map cache / coherence half (archip_fast.h joins them).
SOURCES = [_NATIVE / "nbdkit_filter_archip.c", _NATIVE / "archip_fast_map.c",
           _NATIVE / "archip_fast_hold.c"]
SOURCE = SOURCES[0]
#: Everything the build reads (a newer one makes the built filter outdated).
INPUTS = [*SOURCES, _NATIVE / "archip_fast.h", _NATIVE / "archip_layout.h"]
#: Where the build puts the filter (gitignored, like every *.so).
SO_PATH = _ROOT / "native" / "build" / "archip-fast.so"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Wconversion", "-fPIC", "-shared", "-fvisibility=hidden"]
#: Set by the filter's load hook to its own path, so the plugin can find it.
ENV = "ARCHIPELAGO_NBD_CFILTER"


def so_path() -> Path | None:
    """The built filter, if it exists and is not older than its source."""
    try:
        if SO_PATH.stat().st_mtime >= max(p.stat().st_mtime for p in INPUTS):
            return SO_PATH
    except FileNotFoundError:
        pass
    return None


def build(force: bool = False) -> Path:
    """Compile the filter (needs cc and nbdkit-plugin-dev's nbdkit-filter.h)."""
    if not force and (p := so_path()) is not None:
        return p
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler ({cc}); apt-get install build-essential")
    if not Path("/usr/include/nbdkit-filter.h").exists():
        raise RuntimeError("nbdkit-filter.h missing; apt-get install nbdkit-plugin-dev")
    SO_PATH.parent.mkdir(parents=True, exist_ok=True)
    tmp = SO_PATH.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run([cc, *CFLAGS, "-Werror", f"-I{_NATIVE}", "-o", str(tmp),
                    *map(str, SOURCES), "-lpthread"], check=True)
    os.replace(tmp, SO_PATH)  # atomic: a running nbdkit keeps its mapped copy
    return SO_PATH


class Publisher:
    """ctypes binding of the filter loaded in this (nbdkit) process."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._page = lib.archip_cf_page
        self._page.argtypes = [ctypes.c_char_p]
        self._pub = lib.archip_cf_publish
        self._pub.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint64,
                              ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint32,
                              ctypes.POINTER(ctypes.c_char_p), ctypes.c_char_p]
        self._fence = lib.archip_cf_fence
        self._fence.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint64]
        self._forget = lib.archip_cf_forget
        self._forget.argtypes = [ctypes.c_char_p]
        self._stats = lib.archip_cf_stats
        self._stats.argtypes = [ctypes.POINTER(ctypes.c_uint64)]
        self._page_path = ""

    @classmethod
    def find(cls) -> Publisher | None:
        """The filter if nbdkit loaded it into this process, else None."""
        # the filter sets the variable after Python started: read it from libc, not os.environ
        libc = ctypes.CDLL(None)
        libc.getenv.restype = ctypes.c_char_p
        libc.getenv.argtypes = [ctypes.c_char_p]
        path = libc.getenv(ENV.encode())
        if not path:
            return None
        try:
            lib = ctypes.CDLL(path.decode(), mode=os.RTLD_NOLOAD | os.RTLD_NOW)
        except OSError:
            return None
        return cls(lib)

    def publish(self, page: str, name: str, slot: int, block_size: int, gen: int,
                first: int, entries: Sequence[tuple[str, bool]]) -> None:
        """Entries of blocks [first, first+len) of ``name``, valid at generation ``gen``."""
        if page != self._page_path:
            if self._page(page.encode()) != 0:
                return
            self._page_path = page
        n = len(entries)
        paths = (ctypes.c_char_p * n)(*[p.encode() for p, _ in entries])
        owned = bytes(1 if o else 0 for _, o in entries)
        self._pub(name.encode(), slot, block_size, gen, first, n, paths, owned)

    def fence(self, name: str, path: str, gen: int) -> None:
        """The fence (file, writer generation) in-place writes of ``name`` must hold;
        "" for none (then the filter leaves every write to the plugin)."""
        self._fence(name.encode(), path.encode(), gen)

    def forget(self, name: str) -> None:
        """Drop the entries (and open descriptors) of ``name``: its last connection closed."""
        self._forget(name.encode())

    def stats(self) -> tuple[int, int, int, int]:
        """(read hits, write hits, requests sent down to the plugin, write holds taken:
        the slot and fence locks, kept across in-place writes, native/archip_fast_hold.c)."""
        out = (ctypes.c_uint64 * 4)()
        self._stats(out)
        return int(out[0]), int(out[1]), int(out[2]), int(out[3])


def main(argv: list[str]) -> int:
    """``build`` (if outdated) or ``path``."""
    if argv[:1] == ["build"]:
        try:
            print(build(force="--force" in argv))
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"archip-fast filter not built: {e}", file=sys.stderr)
            return 1
        return 0
    p = so_path()
    print(p or "")
    return 0 if p else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
