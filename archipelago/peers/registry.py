"""The segment owner's registry: binds ports, hands out eventfds, reclaims the dead.

Joining processes connect to a unix SOCK_SEQPACKET socket (0600, in a 0700
directory). ``hello`` returns the segment path and, via SCM_RIGHTS, one eventfd
per port. ``bind``/``unbind`` claim and release ports. When a connection closes
(the process exited or was killed) every port it bound is reclaimed: requests
queued to it fail back with peer-died, and its descriptors and buffers return
to the pools. :class:`PeerLink` is the joining side.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from archipelago.errors import ArchipelagoError, Busy, InvalidArgument, NotRunning, from_code
from archipelago.peers.segment import Segment

log = logging.getLogger(__name__)
_MAX_MSG = 65536
#: Seconds a ring head may stay claimed-but-unpublished before it is declared dead.
STALL_CHECK = 0.25


def _pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj)


class Registry:
    """Serves port binding and eventfds for one owned segment (use in the owner process)."""

    def __init__(self, segment: Segment, socket_path: str) -> None:
        self.segment = segment
        self.socket_path = socket_path
        flags = os.EFD_NONBLOCK | os.EFD_CLOEXEC
        self.efds = [os.eventfd(0, flags) for _ in range(segment.nr_ports)]
        self._efd_arr = segment.ffi.new("int[]", self.efds)
        self._listener: socket.socket | None = None
        self._conns: dict[socket.socket, set[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Listen on the socket and serve from ``loop`` (readers only, never blocks)."""
        self._loop = loop or asyncio.get_running_loop()
        d = os.path.dirname(self.socket_path) or "."
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o177)
        try:
            s.bind(self.socket_path)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        s.listen(64)
        s.setblocking(False)
        self._listener = s
        self._loop.add_reader(s.fileno(), self._accept)

    def start_thread(self) -> None:
        """Serve from a private event loop in a daemon thread (tests, benchmarks, tools)."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.start(loop)
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="peer-registry", daemon=True)
        self._thread.start()
        ready.wait(5)

    def stop(self) -> None:
        """Stop serving, close every connection and the eventfds."""
        loop = self._loop
        if loop is None:
            return
        done = threading.Event()

        def shut() -> None:
            for conn in list(self._conns):
                self._drop(conn)
            if self._listener is not None:
                loop.remove_reader(self._listener.fileno())
                self._listener.close()
            if self._thread is not None:
                loop.stop()
            done.set()

        if self._thread is not None:
            loop.call_soon_threadsafe(shut)
            done.wait(5)
            self._thread.join(5)
        else:
            shut()
        for fd in self.efds:
            os.close(fd)
        self.efds = []
        self._loop = None
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    # -- protocol
    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()  # type: ignore[union-attr]
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._conns[conn] = set()
        self._loop.add_reader(conn.fileno(), self._on_msg, conn)  # type: ignore[union-attr]

    def _on_msg(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(_MAX_MSG)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        try:
            msg = msgpack.unpackb(data)
            reply, fds = self._handle(conn, msg)
        except ArchipelagoError as exc:
            reply, fds = {"error": exc.code, "message": exc.message}, []
        except Exception as exc:  # noqa: BLE001 - a bad message must not kill the registry
            reply, fds = {"error": "invalid-argument", "message": f"bad request: {exc}"}, []
        try:
            if fds:
                socket.send_fds(conn, [_pack(reply)], fds)
            else:
                conn.send(_pack(reply))
        except OSError:
            self._drop(conn)

    def _peer_pid(self, conn: socket.socket) -> int:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[0]

    def _handle(self, conn: socket.socket, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        op = msg.get("op")
        seg, lib = self.segment, self.segment.lib
        if op == "hello":
            return {"segment": seg.path, "nr_ports": seg.nr_ports}, self.efds
        if op == "bind":
            pid = self._peer_pid(conn)
            port = msg.get("port")
            if port is None:
                out = seg.ffi.new("uint32_t *")
                gen = lib.ap_port_bind_dynamic(seg.base, pid, out)
                if gen < 0:
                    raise Busy("no free dynamic port in the segment")
                port = int(out[0])
            else:
                if not 0 <= port < seg.nr_static:
                    raise InvalidArgument(f"static port {port} out of range [0, {seg.nr_static})")
                gen = lib.ap_port_bind(seg.base, port, pid)
                if gen < 0:
                    raise Busy(f"port {port} is bound by pid {lib.ap_port_pid(seg.base, port)}")
            self._conns[conn].add(port)
            return {"port": port, "gen": gen}, []
        if op == "unbind":
            port = int(msg["port"])
            if port not in self._conns[conn]:
                raise InvalidArgument(f"port {port} is not bound by this connection")
            self._conns[conn].discard(port)
            self.reclaim(port)
            return {"ok": True}, []
        raise InvalidArgument(f"unknown registry op {op!r}")

    def reclaim(self, port: int) -> int:
        """Fail requests queued to ``port`` and free what it owns; returns the count."""
        os.eventfd_write(self.efds[port], 1)  # wake any sleeper of the port (a local twin)
        n = int(self.segment.lib.ap_port_reclaim(self.segment.base, port, self._efd_arr,
                                                 len(self.efds)))
        log.info("reclaimed port %d (%d descriptors/buffers)", port, n)
        return n

    def watch_stalls(self, rounds: int = 8) -> None:
        """Repair rings a killed producer left with a claimed, never published slot.

        A slot still unpublished at the ring's head after STALL_CHECK seconds gets a
        tombstone that consumers skip; checked ``rounds`` times (run after each death).
        Call from the registry's loop (``loop.call_soon_threadsafe`` from other threads).
        """
        seg = self.segment
        if self._loop is None or seg.base is None:
            return
        out = seg.ffi.new("uint64_t[]", 2 * seg.nr_ports + 16)
        offs = [out[i] for i in range(seg.lib.ap_ring_offsets(seg.base, out, len(out)))]
        self._stall_round(offs, rounds, {})

    def _stall_round(self, offs: list[int], rounds: int, prev: dict[int, int]) -> None:
        seg = self.segment
        if self._loop is None or seg.base is None:
            return
        lib, base = seg.lib, seg.base
        stalled = {off: pos for off in offs if (pos := lib.ap_ring_stalled(base, off)) >= 0}
        for off, pos in stalled.items():
            if prev.get(off) == pos and lib.ap_ring_tombstone(base, off, pos) == 0:
                log.warning("ring at offset %d: slot %d claimed by a dead producer, skipped",
                            off, pos)
        if rounds > 1:
            self._loop.call_later(STALL_CHECK, self._stall_round, offs, rounds - 1, stalled)

    def _drop(self, conn: socket.socket) -> None:
        ports = self._conns.pop(conn, set())
        if self._loop is not None:
            try:
                self._loop.remove_reader(conn.fileno())
            except (ValueError, OSError):
                pass
        conn.close()
        for port in ports:
            self.reclaim(port)
        self.watch_stalls()  # the process may have died in the middle of a ring push


class PeerLink:
    """A process's connection to the daemon: the segment, the eventfds, port binding."""

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self._lock = threading.Lock()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        s.settimeout(timeout)
        try:
            s.connect(socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            s.close()
            raise NotRunning(f"no peer registry at {socket_path} ({exc.strerror})") from None
        self.sock = s
        s.send(_pack({"op": "hello"}))
        data, fds, _, _ = socket.recv_fds(s, _MAX_MSG, 253)
        hello = msgpack.unpackb(data)
        self.efds: list[int] = list(fds)
        self.segment = Segment.join(hello["segment"])
        self.ports: set[int] = set()
        self._hangup: list[Callable[[], None]] = []
        self._watch: asyncio.AbstractEventLoop | None = None

    def on_hangup(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        """Call ``callback`` from ``loop`` when the registry (the daemon) goes away."""
        self._hangup.append(callback)
        if self._watch is None:
            self._watch = loop
            loop.add_reader(self.sock.fileno(), self._check_hangup)

    def _check_hangup(self) -> None:
        if self.registry_alive():  # an RPC reply another thread is about to read
            return
        if self._watch is not None:
            self._watch.remove_reader(self.sock.fileno())
            self._watch = None
        callbacks, self._hangup = self._hangup, []
        for cb in callbacks:
            cb()

    @property
    def regfd(self) -> int:
        """The registry socket's fd: readable means the registry went away."""
        return self.sock.fileno()

    def _rpc(self, msg: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            try:
                self.sock.send(_pack(msg))
                data = self.sock.recv(_MAX_MSG)
            except OSError as exc:
                raise NotRunning(f"peer registry unreachable: {exc}") from None
        if not data:
            raise NotRunning("peer registry closed the connection")
        reply = msgpack.unpackb(data)
        if "error" in reply:
            raise from_code(reply["error"], reply.get("message"))
        return reply

    def bind(self, port: int | None = None) -> tuple[int, int]:
        """Bind static ``port`` (or a dynamic one when None); returns (port, generation)."""
        r = self._rpc({"op": "bind", "port": port})
        self.ports.add(r["port"])
        return int(r["port"]), int(r["gen"])

    def unbind(self, port: int) -> None:
        """Release a port: the registry fails what is queued to it and reclaims its resources."""
        self._rpc({"op": "unbind", "port": port})
        self.ports.discard(port)

    def registry_alive(self) -> bool:
        """False once the registry's end of the socket is closed."""
        try:
            p = select.poll()
            p.register(self.sock.fileno(), 0)  # hang-up and errors are always reported
            return not p.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        """Close the link (the registry then reclaims every port it bound)."""
        if self._watch is not None and not self._watch.is_closed():
            self._watch.remove_reader(self.sock.fileno())
        self._watch = None
        self.sock.close()
        for fd in self.efds:
            os.close(fd)
        self.efds = []
        self.segment.close()
