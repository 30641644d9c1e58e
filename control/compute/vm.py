"""One VM = one detached qemu-system-x86_64 process with its files in an instance dir.

The process is started with ``-daemonize`` (own session, reparented away from the
API server), so it survives a restart of the daemon and is re-adopted by pid + QMP
(:meth:`VM.adopt`), as libvirt guests are. Disks come from the daemon's nbdkit socket
as ``-blockdev driver=nbd,...,reconnect-delay=N`` under a raw node: qemu reconnects
when nbdkit (or the mapper peer behind it) restarts, and the guest only sees a pause.

Instance dir (0700): ``qmp.sock`` (monitor, 0600 in the private dir), ``console.log``
(serial console, appended, 0600), ``qemu.pid``, ``qemu.log`` (qemu's own errors),
``kernel``/``initrd`` when the image boots with -kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archipelago.blocker.base import pid_alive
from archipelago.errors import ArchipelagoError, BackendUnavailable, Busy, ConfigError, NotRunning
from control.compute.accel import QEMU
from control.compute.qmp import QMP

#: Longest unix socket path the kernel accepts.
MAX_SOCKET_PATH = 107


@dataclass
class DiskSpec:
    """One virtio disk: a volume exported by nbdkit, under block node ``node``."""

    node: str
    export: str
    boot: bool = False


@dataclass
class NicSpec:
    """One virtio NIC: port ``id``, its MAC and the descriptor of its tap (qemu takes it)."""

    id: int
    mac: str
    fd: int

    @property
    def netdev(self) -> str:
        """qemu's netdev id (the device is dev-<netdev>)."""
        return f"net{self.id}"

    def device(self) -> dict[str, Any]:
        """The virtio-net-pci device (QMP device_add arguments)."""
        return {"driver": "virtio-net-pci", "netdev": self.netdev, "mac": self.mac,
                "id": f"dev-{self.netdev}"}

    def close(self) -> None:
        """Drop this process's copy of the tap descriptor (qemu keeps its own)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass
class VMSpec:
    """Everything qemu needs to run one server."""

    id: str
    name: str
    vcpus: int
    ram_mib: int
    nbd_socket: str
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    accel: str = "tcg"
    reconnect_delay: int = 10
    qemu: str = QEMU


def nbd_blockdev(node: str, export: str, socket: str, delay: int) -> dict[str, Any]:
    """The QMP/-blockdev description of a raw disk over NBD that reconnects for ``delay`` s."""
    return {"driver": "raw", "node-name": node,
            "file": {"driver": "nbd", "server": {"type": "unix", "path": socket},
                     "export": export, "reconnect-delay": delay}}


def _opts(d: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _opts(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={v}")
    return out


def device_for(disk: DiskSpec) -> dict[str, Any]:
    """The virtio-blk-pci device (QMP device_add arguments) of a disk."""
    dev: dict[str, Any] = {"driver": "virtio-blk-pci", "drive": disk.node, "id": f"dev-{disk.node}",
                           "serial": disk.export[:20]}
    if disk.boot:
        dev["bootindex"] = 0
    return dev


class VM:
    """The qemu process of one server (started here or adopted after a restart)."""

    def __init__(self, directory: Path, vm_id: str) -> None:
        self.dir = directory
        self.id = vm_id
        self._qmp: QMP | None = None
        self._lock = asyncio.Lock()

    @property
    def qmp_path(self) -> Path:
        """The QMP monitor socket."""
        return self.dir / "qmp.sock"

    @property
    def console_path(self) -> Path:
        """The serial console log (appended across boots)."""
        return self.dir / "console.log"

    @property
    def pid_path(self) -> Path:
        """qemu's pid file."""
        return self.dir / "qemu.pid"

    @property
    def log_path(self) -> Path:
        """qemu's own stderr (start-up errors)."""
        return self.dir / "qemu.log"

    def argv(self, spec: VMSpec) -> list[str]:
        """The qemu command line of ``spec`` (detached, monitor and console in the dir)."""
        # guest= explicit and commas doubled: a server name ("a=b", "x,debug-threads=on")
        # is one value, never more qemu options
        guest = spec.name.replace(",", ",,")
        a = [spec.qemu, "-name", f"guest={guest},process=archip-vm-{spec.id[:8]}",
             "-uuid", spec.id, "-accel", spec.accel, "-m", str(spec.ram_mib),
             "-smp", str(spec.vcpus), "-nodefaults", "-display", "none", "-vga", "none",
             "-chardev", f"file,id=ser0,path={self.console_path},append=on",
             "-serial", "chardev:ser0",
             "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
             "-daemonize", "-pidfile", str(self.pid_path)]
        if spec.accel == "kvm":
            a += ["-cpu", "host"]
        for d in spec.disks:
            a += ["-blockdev", ",".join(_opts(nbd_blockdev(d.node, d.export, spec.nbd_socket,
                                                            spec.reconnect_delay)))]
            # with -kernel the linuxboot option ROM is the boot device (bootindex 0)
            dev = device_for(DiskSpec(d.node, d.export, d.boot and not spec.kernel))
            a += ["-device", ",".join([dev.pop("driver")] + [f"{k}={v}" for k, v in dev.items()])]
        for n in spec.nics:
            nd = n.device()
            a += ["-netdev", f"tap,id={n.netdev},fd={n.fd}",
                  "-device", ",".join([nd.pop("driver")] + [f"{k}={v}" for k, v in nd.items()])]
        if spec.kernel:
            a += ["-kernel", spec.kernel]
            if spec.initrd:
                a += ["-initrd", spec.initrd]
            a += ["-append", spec.append]
        return a

    async def start(self, spec: VMSpec) -> int:
        """Start qemu detached; its pid. qemu's own error line becomes BackendUnavailable."""
        if self.running():
            raise Busy(f"server {self.id} already runs as pid {self.pid()}")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if len(os.fsencode(str(self.qmp_path))) > MAX_SOCKET_PATH:
            raise ConfigError(f"instance dir too deep for a unix socket: {self.qmp_path}")
        for p in (self.qmp_path, self.pid_path):
            p.unlink(missing_ok=True)
        fd = os.open(self.console_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        with open(self.log_path, "wb") as err:
            os.fchmod(err.fileno(), 0o600)
            # -daemonize: the launcher exits once qemu is initialised (disks connected,
            # monitor listening) with 0, or with an error before that.
            proc = await asyncio.create_subprocess_exec(
                *self.argv(spec), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=err, cwd=self.dir,
                pass_fds=[n.fd for n in spec.nics])
            rc = await proc.wait()
        if rc != 0:
            msg = self.log_path.read_text(errors="replace").strip().splitlines()
            raise BackendUnavailable(f"qemu failed to start server {self.id}: "
                                     f"{msg[-1] if msg else f'exit status {rc}'}")
        pid = self.pid()
        if pid is None:
            raise BackendUnavailable(f"qemu started server {self.id} but left no pid")
        return pid

    def pid(self) -> int | None:
        """qemu's pid when it runs and is this server's qemu (not a reused pid)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return pid if self.id.encode() in cmdline else None

    def running(self) -> bool:
        """True while this server's qemu process exists."""
        return self.pid() is not None

    async def qmp(self) -> QMP:
        """The monitor connection (one per VM: a QMP socket takes one client at a time)."""
        if self._qmp is None or self._qmp._task is None or self._qmp._task.done():
            if self._qmp is not None:
                await self._qmp.close()
                self._qmp = None
            if not self.running():
                raise NotRunning(f"server {self.id} is not running")
            self._qmp = await QMP.connect(self.qmp_path)
        return self._qmp

    async def execute(self, command: str, arguments: dict[str, Any] | None = None,
                      timeout: float = 30.0) -> Any:
        """One QMP command on this VM."""
        async with self._lock:
            q = await self.qmp()
            return await q.execute(command, arguments, timeout=timeout)

    async def adopt(self) -> bool:
        """After a restart: True when the qemu of this server runs and answers QMP."""
        if not self.running():
            return False
        try:
            await self.execute("query-status", timeout=10)
        except ArchipelagoError:
            return False
        return True

    async def wait_exit(self, timeout: float | None = None, pid: int | None = None) -> bool:
        """Wait until qemu (or process ``pid`` of it) exits (pidfd: no polling); False on
        timeout."""
        pid = pid or self.pid()
        if pid is None:
            return True
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
        try:
            await asyncio.wait_for(done, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)

    async def powerdown(self, timeout: float) -> bool:
        """ACPI power button, then a hard stop after ``timeout`` s; True if the guest obeyed."""
        if not self.running():
            return True
        with contextlib.suppress(ArchipelagoError):
            await self.execute("system_powerdown", timeout=10)
            if await self.wait_exit(timeout):
                await self.close()
                return True
        await self.kill()
        return False

    async def kill(self) -> None:
        """Hard stop: QMP quit, then SIGKILL if qemu does not go."""
        with contextlib.suppress(ArchipelagoError):
            await self.execute("quit", timeout=5)
        if not await self.wait_exit(10):
            pid = self.pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                await self.wait_exit(10)
        await self.close()

    async def hotplug(self, disk: DiskSpec, socket: str, delay: int) -> None:
        """Attach a volume to the running guest: blockdev-add + device_add virtio-blk-pci."""
        await self.execute("blockdev-add", nbd_blockdev(disk.node, disk.export, socket, delay))
        try:
            await self.execute("device_add", device_for(disk))
        except ArchipelagoError:
            with contextlib.suppress(ArchipelagoError):
                await self.execute("blockdev-del", {"node-name": disk.node})
            raise

    async def unplug(self, node: str, timeout: float = 30.0) -> None:
        """Detach: device_del, wait for the guest to release it (DEVICE_DELETED), blockdev-del."""
        async with self._lock:
            q = await self.qmp()
            await q.execute("device_del", {"id": f"dev-{node}"})
            await q.wait_event("DEVICE_DELETED", timeout, {"device": f"dev-{node}"})
            await q.execute("blockdev-del", {"node-name": node})

    async def close(self) -> None:
        """Drop the monitor connection (qemu keeps running)."""
        if self._qmp is not None:
            await self._qmp.close()
            self._qmp = None
