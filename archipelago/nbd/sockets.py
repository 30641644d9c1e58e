"""Unix/TCP socket checks for whoever starts nbdkit (archip nbd serve, the daemon).

nbdkit 1.32 does not remove its unix socket when it exits (not even on SIGTERM), and
refuses to start on an existing path ("Address already in use"): a supervisor must
clear a stale socket before every (re)start.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from archipelago.errors import Busy


def listening(sock: Path | None, tcp: tuple[str, int] | None = None) -> bool:
    """True if something accepts connections on the unix socket / TCP address."""
    try:
        if tcp is not None:
            with socket.create_connection(tcp, timeout=1):
                return True
        if sock is None:
            return False
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
        return True
    except OSError:
        return False


def clear_stale_socket(sock: Path | None) -> None:
    """Remove a socket file nobody listens on (left by an exited nbdkit); Busy if in use."""
    if sock is None or not os.path.lexists(sock):
        return
    if listening(sock):
        raise Busy(f"an NBD server already listens on {sock}")
    sock.unlink()
