"""Area helpers for the compute tests: a daemon with nbdkit, volumes with markers, pids."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

from daemon_helpers import Daemon, wait_gateway
from guest_helpers import guest_files

MiB = 1 << 20


def wait_nbd(sock: Path, timeout: float = 60.0) -> None:
    """Wait until nbdkit accepts connections on ``sock``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nbdkit never listened on {sock}") from None
            time.sleep(0.05)


def start_nbd_daemon(data_dir: Path, *extra: str) -> Daemon:
    """A daemon on the file blocker with nbdkit on DATA_DIR/nbd.sock, ready for clients."""
    d = Daemon(data_dir)
    d.archip("daemon", "start", "--json", *extra, check=True)
    wait_nbd(data_dir / "nbd.sock")
    return d


def make_volume(d: Daemon, name: str, size: int, marker: bytes = b"") -> None:
    """Create a volume; ``marker`` at offset 0 (what the guest prints as GUEST-READ)."""
    from archipelago.client import Client

    with Client.connect(d.data_dir) as c:
        c.create(name, size)
        if marker:
            with c.open(name) as v:
                v.write(0, marker, fua=True)


def read_volume(d: Daemon, name: str, offset: int, size: int) -> bytes:
    """Bytes of a volume through the daemon."""
    from archipelago.client import Client

    with Client.connect(d.data_dir) as c, c.open(name) as v:
        return bytes(v.read(offset, size))


def kill9_child(d: Daemon, name: str) -> int:
    """SIGKILL one supervised child (nbdkit, mapper) and wait until the supervisor replaced it."""
    old = d.child_pid(name)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        try:
            new = d.child_pid(name)
            if new != old:
                return new
        except AssertionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} was not restarted after kill -9")
        time.sleep(0.1)


def v1_account(url: str, user: str, key: str) -> str:
    """The account (the identity user's uuid) that a v1 login of ``user`` gives."""
    import requests

    r = requests.get(f"{url}/auth/v1.0", headers={"X-Auth-User": user, "X-Auth-Key": key},
                     timeout=30)
    r.raise_for_status()
    return r.headers["X-Storage-Url"].rstrip("/").rsplit("/", 1)[1]


def upload_image(url: str, account: str, key: str, name: str, data: bytes,
                 props: dict[str, str] | None = None, container_format: str = "bare") -> str:
    """PUT the bytes into container `images` and register them in Plankton; the image id."""
    import requests

    h = {"X-Auth-Token": key}
    requests.put(f"{url}/v1/{account}/images", headers=h, timeout=30).raise_for_status()
    requests.put(f"{url}/v1/{account}/images/{name}", data=data, headers=h,
                 timeout=120).raise_for_status()
    reg = {**h, "X-Image-Meta-Name": name, "X-Image-Meta-Container-Format": container_format,
           "X-Image-Meta-Location": f"pithos://{account}/images/{name}"}
    for k, v in (props or {}).items():
        reg[f"X-Image-Meta-Property-{k}"] = v
    r = requests.post(f"{url}/image/v1.0/images", headers=reg, timeout=30)
    assert r.status_code in (200, 201), r.text
    return str(r.json()["image"]["id"])


def cloud_toml(*plugins: str) -> str:
    """The config of a test cloud running ``plugins`` (TCG guests, no fsync, port 0)."""
    return f"""\
[control]
plugins = {json.dumps(list(plugins))}

[gateway]
listen = "127.0.0.1:0"

[metrics]
listen = "127.0.0.1:0"

[blocker.file]
fsync = false

[compute]
accel = "tcg"
stop_timeout = 5.0
"""


CLOUD_TOML = cloud_toml("identity", "compute", "billing")


def start_cloud(data_dir: Path) -> tuple[Daemon, str]:
    """A daemon with nbdkit and the API server (identity, compute, billing); (daemon, URL)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "archipelago.toml").write_text(CLOUD_TOML)
    d = Daemon(data_dir)
    d.archip("daemon", "start", "--gateway", "--json", check=True)
    url = wait_gateway(d)
    wait_nbd(data_dir / "nbd.sock")
    return d, url


def register_guest(d: Daemon, disk: Path) -> tuple[str, str, str]:
    """Upload the test guest's kernel and initrd and ``disk`` as an image booting them,
    and create the flavor "tiny"; (image, kernel, ramdisk) ids."""
    guest = guest_files()
    kernel = d.archip("--json", "image", "upload", str(guest.kernel), "--name", "vmlinuz",
                      "--disk-format", "aki", check=True).json()["id"]
    ramdisk = d.archip("--json", "image", "upload", str(guest.initrd), "--name", "initrd",
                       "--disk-format", "ari", check=True).json()["id"]
    image = d.archip("--json", "image", "upload", str(disk), "--name", "guest-disk",
                     "--disk-format", "raw", "--property", f"kernel_id={kernel}",
                     "--property", f"ramdisk_id={ramdisk}", check=True).json()["id"]
    d.archip("flavor", "create", "tiny", "--vcpus", "1", "--ram", "256", "--disk", "1",
             check=True)
    return image, kernel, ramdisk


def owned_blocks(data_dir: Path, volume: str) -> list[str]:
    """Blocks a volume owns (written or copied up): objects named ``<volume>+<uid>_...``."""
    return sorted(p.name for p in (data_dir / "blocks" / "objects").rglob(f"{volume}+*")
                  if p.is_file())


def qemu_pids(data_dir: Path) -> list[int]:
    """Pids of qemu processes of this instance (their -pidfile is under DATA_DIR/vm)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"qemu-system-x86_64") and any(
                str(data_dir / "vm").encode() in c for c in cmd):
            out.append(int(p.name))
    return out


def kill_qemus(data_dir: Path) -> None:
    """SIGKILL what qemu processes of this instance are left (test teardown)."""
    for pid in qemu_pids(data_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
