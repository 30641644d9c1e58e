"""A real OpenStack Swift all-in-one on 127.0.0.1, for side-by-side benchmarks.

SAIO-like: one replica, one device on a tmpfs directory, tempauth (user ``bench:bench``,
key ``bench``), memcached from Debian, and the proxy, account, container and object
servers each as one process (``workers = 0``: no forking). Swift comes from the venv
scripts/swift-functional.sh builds (pip ``swift`` 2.38.1; ``--venv`` points elsewhere).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

DEFAULT_VENV = Path.home() / ".cache" / "archipelago" / "swift-functional" / "venv-2.38.1"
USER, KEY = "bench:bench", "bench"


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_conf(kind: str, port: int, devices: Path, etc: Path) -> str:
    pipeline = {"account": "account-server", "container": "container-server",
                "object": "object-server"}[kind]
    return (f"[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\nworkers = 0\n"
            f"swift_dir = {etc}\n"
            f"devices = {devices}\nmount_check = false\nlog_level = WARNING\n"
            f"[pipeline:main]\npipeline = {pipeline}\n"
            f"[app:{pipeline}]\nuse = egg:swift#{kind}\n"
            f"[{kind}-replicator]\n[{kind}-auditor]\n"
            + ("[container-updater]\n[container-sync]\n" if kind == "container" else "")
            + ("[object-updater]\n" if kind == "object" else ""))


def _proxy_conf(port: int, memcache: int, etc: Path) -> str:
    return (f"[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\nworkers = 0\n"
            f"swift_dir = {etc}\n"
            "log_level = WARNING\n"
            "[pipeline:main]\npipeline = catch_errors proxy-logging cache tempauth "
            "proxy-logging proxy-server\n"
            "[app:proxy-server]\nuse = egg:swift#proxy\nallow_account_management = true\n"
            "account_autocreate = true\n"
            f"[filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{memcache}\n"
            "[filter:catch_errors]\nuse = egg:swift#catch_errors\n"
            "[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n"
            "[filter:tempauth]\nuse = egg:swift#tempauth\n"
            f"user_bench_bench = {KEY} .admin\n")


class SwiftAIO:
    """Start (``with``) and stop a Swift all-in-one; ``url`` is its /auth/v1.0 base."""

    def __init__(self, venv: Path = DEFAULT_VENV, root: str | None = "/dev/shm") -> None:
        self.venv = venv
        if not (venv / "bin" / "swift-proxy-server").exists():
            raise SystemExit(f"no Swift in {venv}: run scripts/swift-functional.sh once "
                             "(it builds that venv) or pass --venv")
        if shutil.which("memcached") is None:
            raise SystemExit("memcached is missing (apt-get install memcached)")
        self.dir = Path(tempfile.mkdtemp(prefix="swift-aio-", dir=root))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""
        self.pids: list[int] = []

    def _ring(self, etc: Path, kind: str, port: int) -> None:
        builder = str(etc / f"{kind}.builder")
        rb = str(self.venv / "bin" / "swift-ring-builder")
        for args in (["create", "6", "1", "1"],
                     ["add", f"r1z1-127.0.0.1:{port}/d1", "1"], ["rebalance"]):
            subprocess.run([rb, builder, *args], check=True, capture_output=True, timeout=60)

    def __enter__(self) -> SwiftAIO:
        etc, devices = self.dir / "etc", self.dir / "srv"
        (devices / "d1").mkdir(parents=True)
        etc.mkdir()
        (etc / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_suffix = bench\nswift_hash_path_prefix = bench\n"
            "[storage-policy:0]\nname = gold\ndefault = yes\n")
        ports = {k: free_port() for k in ("account", "container", "object", "proxy", "mc")}
        for kind in ("account", "container", "object"):
            self._ring(etc, kind, ports[kind])
            (etc / f"{kind}-server.conf").write_text(_server_conf(kind, ports[kind], devices, etc))
        (etc / "proxy-server.conf").write_text(_proxy_conf(ports["proxy"], ports["mc"], etc))
        env = {"SWIFT_DIR": str(etc), "PATH": "/usr/bin:/bin"}
        log = open(self.dir / "swift.log", "ab")  # noqa: SIM115 (closed with the dir)
        self.procs.append(subprocess.Popen(
            ["memcached", "-l", "127.0.0.1", "-p", str(ports["mc"]), "-U", "0", "-u", "root"],
            stdout=log, stderr=log))
        for kind in ("account", "container", "object", "proxy"):
            cmd = [str(self.venv / "bin" / f"swift-{kind}-server"),
                   str(etc / f"{kind}-server.conf")]
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=log, env=env))
        self.url = f"http://127.0.0.1:{ports['proxy']}"
        try:
            self._wait()
        except BaseException:
            self.__exit__(None, None, None)  # no server (nor memcached) left behind
            raise
        self.pids = [p.pid for p in self.procs[1:]]
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise SystemExit(f"a Swift server exited; see {self.dir / 'swift.log'}")
            try:
                req = urllib.request.Request(f"{self.url}/auth/v1.0",
                                             headers={"X-Auth-User": USER, "X-Auth-Key": KEY})
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status in (200, 204):
                        return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("Swift did not answer within 60 s")

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
