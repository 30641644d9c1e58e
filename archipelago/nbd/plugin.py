"""nbdkit Python plugin exporting archipelago volumes (``nbdkit python plugin.py KEY=VALUE...``).

Config keys:
  dir=DATA_DIR          instance data dir (the file blocker lives under it)
  blocker=file|rados|memory  override the instance's blocker (memory: RAM-only, for tests)
  blocker-path=PATH     file blocker root (overrides the one derived from dir=)
  backend=direct|peer   direct: the mapper in-process; peer: requests to the running
                        daemon's mapper peer over the shared-memory segment
  default-export=NAME   volume served to clients that send an empty export name
  scratch=yes|no        allow VOL@scratch exports (private clone dropped on disconnect)
  fastpath=yes|no       read/write known blocks straight in the file blocker (fastpath.py)
  create=NAME:SIZE      create a volume at startup if absent (repeatable; SIZE like 1G)
  venv=PATH             virtualenv whose site-packages hold archipelago's dependencies

nbdkit embeds Debian's Python, not the project's venv, and does not put this
file's directory on sys.path: so this module imports only the stdlib at load
time and imports archipelago in config_complete, after ``venv=`` was seen.
"""

from __future__ import annotations

import errno
import logging
import os
import site
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import nbdkit

API_VERSION = 2

_cfg: dict[str, Any] = {
    "dir": None,
    "blocker": "",
    "blocker-path": None,
    "backend": "direct",
    "default-export": None,
    "scratch": "yes",
    "fastpath": "yes",
    "create": [],
}
_table: Any = None  # archipelago.nbd.exports.ExportTable, built in config_complete
_errno_of: Any = None

#: nbdkit removes __file__ once the script has run: remember it now.
_HERE = Path(__file__).resolve()

MIN_BLOCK = 512
PREFERRED_BLOCK = 4096
MAX_BLOCK = 32 * 1024 * 1024
#: Map blocks described per extents request at most.
EXTENT_BLOCKS = 4096


def _add_venv(path: str) -> None:
    for sp in sorted(Path(path).glob("lib/python3*/site-packages")):
        site.addsitedir(str(sp))


class NbdError(Exception):
    """An expected failure, re-raised without the library's frames (one log line)."""


def _one_line_for_expected_errors() -> None:
    """Log expected failures (unknown export, missing block, read-only...) as one line.

    nbdkit's Python plugin logs every exception a callback raises through
    ``traceback.format_exception`` (plugins/python: print_python_traceback), so even
    a client asking for an unknown export name left a traceback in the log. NbdError
    is only raised for archipelago's own errors: format those as their message.
    """
    fmt = traceback.format_exception
    if getattr(fmt, "_archipelago", False):
        return

    def format_exception(exc: Any, /, *args: Any, **kwargs: Any) -> list[str]:
        value = args[0] if args else exc
        if isinstance(value, NbdError):
            return [str(value)]
        return fmt(exc, *args, **kwargs)

    format_exception._archipelago = True  # type: ignore[attr-defined]
    traceback.format_exception = format_exception  # type: ignore[assignment]


def _fail(exc: BaseException) -> NoReturn:
    """Tell nbdkit which errno the client gets, and raise (short for known errors)."""
    nbdkit.set_error(_errno_of(exc) if _errno_of else errno.EIO)
    if type(exc).__module__ == "archipelago.errors":
        raise NbdError(f"{type(exc).__name__}: {exc}") from None
    raise exc


def _yes(value: str) -> bool:
    return str(value).lower() in ("1", "yes", "true", "on")


def thread_model() -> int:
    """Requests run in parallel; they overlap while a thread waits on the backend."""
    return nbdkit.THREAD_MODEL_PARALLEL


def config(key: str, value: str) -> None:
    """Collect KEY=VALUE settings."""
    if key == "venv":
        _add_venv(value)
    elif key == "create":
        _cfg["create"].append(value)
    elif key in _cfg:
        _cfg[key] = value
    else:
        raise ValueError(f"unknown parameter {key!r}")


def config_complete() -> None:
    """Import archipelago (now that sys.path is set) and build the export table."""
    global _table, _errno_of
    if os.environ.get("ARCHIPELAGO_VENV"):
        _add_venv(os.environ["ARCHIPELAGO_VENV"])
    # Fallback for a plain install: the package root is three levels up from here.
    root = str(_HERE.parents[2])
    if root not in sys.path:
        sys.path.append(root)
    from archipelago.nbd.backend import make_backend
    from archipelago.nbd.direct_store import blocker_factory
    from archipelago.nbd.exports import ExportTable, errno_of

    _errno_of = errno_of
    _one_line_for_expected_errors()
    # Library warnings (e.g. a scratch clone that could not be removed) go to nbdkit's log.
    logging.basicConfig(level=logging.WARNING, format="archipelago: %(levelname)s: %(message)s")
    try:
        if _cfg["backend"] == "peer":
            blocker = None  # the daemon's peers own the blockers
        else:
            blocker = blocker_factory(_cfg["dir"], _cfg["blocker"], _cfg["blocker-path"])
        backend = make_backend(_cfg["backend"], blocker, _yes(_cfg["fastpath"]), _cfg["dir"])
    except Exception as e:
        _fail(e)  # a one-line config error, not a traceback
    scratch = _yes(_cfg["scratch"])
    _table = ExportTable(backend, _cfg["default-export"], scratch)


def after_fork() -> None:
    """Start the backend after nbdkit daemonized (threads do not survive fork)."""
    from archipelago.nbd.config import parse_size

    _table.backend.start()
    have = {v.name for v in _table.backend.list_volumes()}
    for spec in _cfg["create"]:
        name, _, size = spec.partition(":")
        if name not in have:
            _table.backend.create(name, parse_size(size))
    _table.sweep_scratch()


def cleanup() -> None:
    """Close every volume (flush + unlock) at exit."""
    if _table is not None:
        _table.backend.stop()


def list_exports(readonly: bool, is_tls: bool) -> list[tuple[str, str]]:
    """Every volume and snapshot, with its kind and size as description."""
    try:
        return [(v.name, f"{v.kind} {v.size} bytes") for v in _table.list()]
    except Exception as e:
        _fail(e)


def default_export(readonly: bool, is_tls: bool) -> str:
    """The configured default export ("" if none)."""
    return _cfg["default-export"] or ""


def open(readonly: bool) -> Any:  # noqa: A001 - nbdkit's callback name
    """Open the export the client named (ENOENT if it does not exist)."""
    try:
        return _table.connect(nbdkit.export_name(), readonly)
    except Exception as e:
        _fail(e)


def close(h: Any) -> None:
    """Drop the connection: the last one closes the volume, scratch clones go away."""
    try:
        _table.disconnect(h)
    except Exception as e:
        nbdkit.debug(f"archipelago: close of {h.export!r} failed: {e}")


def export_description(h: Any) -> str:
    """Human description shown by nbdinfo."""
    kind = "scratch clone of" if h.scratch else "volume"
    return f"archipelago {kind} {h.export}"


def get_size(h: Any) -> int:
    """Exact size of the volume."""
    return h.size


def block_size(h: Any) -> tuple[int, int, int]:
    """Any 512-aligned request works; 4 KiB avoids read-modify-write of sectors."""
    return (MIN_BLOCK, PREFERRED_BLOCK, MAX_BLOCK)


def can_write(h: Any) -> bool:
    """False for snapshots, read-only maps and read-only connections."""
    return bool(h.writable)


def can_flush(h: Any) -> bool:
    """Flush persists data and map entries."""
    return True


def can_fua(h: Any) -> int:
    """FUA is handled by the mapper per write."""
    return nbdkit.FUA_NATIVE


def can_trim(h: Any) -> bool:
    """Trim turns whole blocks into zero entries."""
    return True


def can_zero(h: Any) -> bool:
    """Zero: whole blocks are map updates, partial ones zero writes."""
    return True


def can_fast_zero(h: Any) -> bool:
    """Fast zero succeeds only where it is a pure map update (whole blocks)."""
    return True


def can_extents(h: Any) -> bool:
    """Extents come from the map (holes vs data), never from reading data."""
    return True


def can_multi_conn(h: Any) -> bool:
    """Multi-conn is safe: every connection to a volume in this nbdkit process shares
    one open mapper Volume (refcounted) on one mapper, so a write completed on one
    connection is visible to all, and flush is global (it persists the volume's data
    and map, whoever wrote them). Scratch exports are private per connection, so
    there two connections would see two different clones: no multi-conn."""
    return not h.scratch


def can_cache(h: Any) -> int:
    """nbdkit emulates cache by reading, which warms the blocker's page cache."""
    return nbdkit.CACHE_EMULATE


def is_rotational(h: Any) -> bool:
    """Not a spinning disk."""
    return False


def pread(h: Any, buf: memoryview, offset: int, flags: int) -> None:
    """Read into nbdkit's buffer."""
    _count("read")
    try:
        _table.backend.pread(h.vol, buf, offset)
    except Exception as e:
        _fail(e)


def pwrite(h: Any, buf: memoryview, offset: int, flags: int) -> None:
    """Write, honouring FUA."""
    _count("write")
    try:
        _table.backend.pwrite(h.vol, buf, offset, bool(flags & nbdkit.FLAG_FUA))
    except Exception as e:
        _fail(e)


def flush(h: Any, flags: int) -> None:
    """Persist everything acknowledged so far."""
    _count("flush")
    try:
        _table.backend.flush(h.vol)
    except Exception as e:
        _fail(e)


def trim(h: Any, count: int, offset: int, flags: int) -> None:
    """Discard a range (reads back as zeros)."""
    _count("trim")
    try:
        _table.backend.trim(h.vol, offset, count, bool(flags & nbdkit.FLAG_FUA))
    except Exception as e:
        _fail(e)


def zero(h: Any, count: int, offset: int, flags: int) -> None:
    """Zero a range; under FAST_ZERO, fail at once (ENOTSUP) unless it is whole blocks."""
    if flags & nbdkit.FLAG_FAST_ZERO and not _whole_blocks(h, offset, count):
        nbdkit.set_error(errno.ENOTSUP)
        raise OSError(errno.ENOTSUP, "fast zero only for whole blocks")
    _count("zero")
    try:
        _table.backend.zero(h.vol, offset, count, bool(flags & nbdkit.FLAG_FUA))
    except Exception as e:
        _fail(e)


_COUNTERS: dict[str, Any] = {}


def _count(op: str) -> None:
    """One NBD request that reached the plugin (archipelago.metrics)."""
    c = _COUNTERS.get(op)
    if c is None:
        from archipelago.metrics import NBD_REQUESTS

        c = _COUNTERS[op] = NBD_REQUESTS.labels(op)
    c.inc()


def _whole_blocks(h: Any, offset: int, count: int) -> bool:
    bs = h.block_size
    end = offset + count
    return offset % bs == 0 and (end % bs == 0 or end == h.size)


def extents(h: Any, count: int, offset: int, flags: int) -> list[tuple[int, int, int]]:
    """Map entries as extents: zero entries are hole+zero, stored blocks data."""
    # Answering less than asked is allowed (the client asks again from where we stop):
    # bound the work per request for clients that ask about whole multi-TiB disks.
    count = min(count, h.block_size * EXTENT_BLOCKS)
    try:
        spans = _table.backend.extents(h.vol, offset, count)
    except Exception as e:
        _fail(e)
    hole = nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO
    out: list[tuple[int, int, int]] = []
    pos = offset
    for s in spans:
        end = s.offset + s.length
        if end <= pos or s.offset > pos:  # skip what lies before; stop at a gap
            if s.offset > pos:
                break
            continue
        typ = hole if s.zero else 0
        if out and out[-1][2] == typ:
            out[-1] = (out[-1][0], end - out[-1][0], typ)
        else:
            out.append((pos, end - pos, typ))
        pos = end
        if flags & nbdkit.FLAG_REQ_ONE:
            break
    if not out:  # never claim a hole we are not sure of
        out.append((offset, count, 0))
    return out
