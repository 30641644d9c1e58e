"""`archip user|project|quota` and the gateway alias, end to end through real processes:
the swift CLI with v1 auth on identity users, and kill -9 of the API server mid-upload
(usage afterwards equals the bytes stored)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import requests

from archipelago.errors import AlreadyExists, ConfigError, InvalidArgument, NotFound

SWIFT = str(Path(sys.executable).parent / "swift")


def archip(d: Path, *args: str, check: bool = True, stdin: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    """Run `archip` as a process on data dir ``d`` (file blocker without fsync)."""
    env = {k: v for k, v in os.environ.items() if k != "ARCHIPELAGO_CONFIG"}
    r = subprocess.run([sys.executable, "-m", "control", "--data-dir", str(d), "-o",
                        "blocker.file.fsync=false", *args], input=stdin, capture_output=True,
                       text=True, timeout=120, env=env)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_user_project_quota_commands(tmp_path: Path) -> None:
    d = tmp_path
    uuid = archip(d, "user", "add", "alice", "--email", "a@example.org").stdout.strip()
    doc = json.loads(archip(d, "--json", "user", "add", "bob", "--password-stdin",
                            stdin="bob-password\n").stdout)
    assert {"uuid", "name", "token"} <= set(doc) and doc["name"] == "bob"
    r = archip(d, "user", "add", "alice", check=False)
    assert r.returncode == AlreadyExists.exit_code and "already exists" in r.stderr
    r = archip(d, "user", "add", "bad/name", check=False)
    assert r.returncode == InvalidArgument.exit_code
    users = json.loads(archip(d, "--json", "user", "list").stdout)
    assert [u["name"] for u in users] == ["admin", "alice", "bob"]
    info = json.loads(archip(d, "--json", "user", "info", "alice").stdout)
    assert info["uuid"] == uuid and info["email"] == "a@example.org" and info["active"]
    assert json.loads(archip(d, "--json", "user", "disable", uuid).stdout)["active"] is False
    assert json.loads(archip(d, "--json", "user", "enable", "alice").stdout)["active"] is True
    tok = archip(d, "user", "renew-token", "bob").stdout.strip()
    assert len(tok) == 43 and tok != doc["token"]
    r = archip(d, "user", "info", "nobody", check=False)
    assert r.returncode == NotFound.exit_code
    admin = json.loads((d / "admin.json").read_text())
    assert admin["name"] == "admin" and len(admin["password"]) >= 20

    pid = archip(d, "project", "create", "lab", "--limit", "pithos.diskspace=10G",
                 "--member-limit", "pithos.diskspace=2G", "--owner", "alice").stdout.strip()
    archip(d, "project", "add-member", "lab", "bob")
    projs = json.loads(archip(d, "--json", "project", "list").stdout)
    assert projs[0]["uuid"] == pid and projs[0]["members"] == ["alice", "bob"]
    assert projs[0]["limits"]["pithos.diskspace"] == {"project_limit": 10 << 30,
                                                      "member_limit": 2 << 30}
    r = archip(d, "project", "create", "neg", "--limit", "pithos.diskspace=-1", check=False)
    assert r.returncode == InvalidArgument.exit_code

    archip(d, "quota", "set", "alice", "pithos.diskspace", "5G")
    q = json.loads(archip(d, "--json", "quota", "show", "alice").stdout)
    assert q[uuid][uuid]["pithos.diskspace"]["limit"] == 5 << 30
    assert q[uuid][pid]["pithos.diskspace"]["limit"] == 2 << 30
    text = archip(d, "quota", "show").stdout
    assert "alice\tsystem\tpithos.diskspace\t5.0 GiB" in text and "bob" in text
    for args, code in ((("alice", "pithos.diskspace", "-5"), InvalidArgument.exit_code),
                       (("alice", "no.such", "5"), NotFound.exit_code),
                       (("nobody", "pithos.diskspace", "5"), NotFound.exit_code),
                       (("alice", "pithos.diskspace", "lots"), InvalidArgument.exit_code)):
        r = archip(d, "quota", "set", *args, check=False)
        assert r.returncode == code, (args, r.stderr)
    q2 = json.loads(archip(d, "--json", "quota", "show", "alice").stdout)
    assert q2 == q  # the refused commands changed nothing
    r = archip(d, "-o", "control.plugins=[]", "user", "list", check=False)
    assert r.returncode == ConfigError.exit_code and "not enabled" in r.stderr


class Gateway:
    """`archip gateway start` on an ephemeral port (stopped, or killed, by the test)."""

    def __init__(self, d: Path) -> None:
        self.d = d
        st = json.loads(archip(d, "--json", "gateway", "start", "--listen",
                               "127.0.0.1:0").stdout)
        self.url, self.pid = st["url"], int(st["pid"])

    def stop(self) -> None:
        r = archip(self.d, "gateway", "stop", check=False)
        if r.returncode != 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextmanager
def _gateway(d: Path) -> Iterator[Gateway]:
    g = Gateway(d)
    try:
        yield g
    finally:
        g.stop()


def test_swift_cli_with_v1_auth_and_the_gateway_alias(tmp_path: Path) -> None:
    d = tmp_path
    key = archip(d, "gateway", "user", "add", "carol").stdout.strip()  # the alias prints a key
    listed = json.loads(archip(d, "--json", "gateway", "user", "list").stdout)
    assert "carol" in [u["name"] for u in listed]
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello from the swift CLI\n" * 100)
    with _gateway(d) as g:
        auth = ["-A", g.url + "/auth/v1.0", "-U", "carol", "-K", key]

        def swift(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([SWIFT, *auth, *args], capture_output=True, text=True,
                                  timeout=120, cwd=tmp_path)

        r = swift("upload", "box", "hello.txt")
        assert r.returncode == 0, r.stderr
        assert swift("list", "box").stdout.split() == ["hello.txt"]
        r = swift("download", "box", "hello.txt", "-o", "-")
        assert r.stdout.encode() == src.read_bytes()
        stat = swift("stat").stdout
        uuid = json.loads(archip(d, "--json", "user", "info", "carol").stdout)["uuid"]
        assert f"Account: {uuid}" in stat and f"Bytes: {src.stat().st_size}" in stat
        bad = subprocess.run([SWIFT, "-A", g.url + "/auth/v1.0", "-U", "carol", "-K", "wrong",
                              "list"], capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "401" in bad.stderr
        # A v1 login with a password returns a token and the uuid account.
        archip(d, "user", "add", "dan", "--password-stdin", stdin="dan-pw\n")
        r = requests.get(g.url + "/auth/v1.0", headers={"X-Auth-User": "dan",
                                                        "X-Auth-Key": "dan-pw"})
        assert r.status_code == 204 and r.headers["X-Auth-Token"] != "dan-pw"
        assert requests.get(r.headers["X-Storage-Url"], headers={
            "X-Auth-Token": r.headers["X-Auth-Token"]}).status_code in (200, 204)


def _quota(url: str, uuid: str, h: dict[str, str]) -> tuple[int, dict[str, Any]]:
    stored = int(requests.head(f"{url}/v1/{uuid}", headers=h, timeout=30)
                 .headers["X-Account-Bytes-Used"])
    q = requests.get(url + "/account/v1.0/quotas", headers=h, timeout=30).json()[uuid]
    return stored, q["pithos.diskspace"]


def _pending(d: Path) -> int:
    """Pending commissions in the control database (read beside the running server)."""
    with closing(sqlite3.connect(d / "control.db", timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM identity_commissions "
                              "WHERE state='pending'").fetchone()[0])


def _crash_round(d: Path, uuid: str, h: dict[str, str], seed: float, min_ok: int) -> int:
    """Writers overwrite and delete, one slow upload is mid-body: kill -9 the server as
    soon as a charge is pending (between issue and accept). Returns the pending left."""
    g = Gateway(d)
    base = f"{g.url}/v1/{uuid}"
    done, started = threading.Event(), threading.Event()
    ok = [0]

    def writer(seed: float) -> None:
        r = random.Random(seed)
        while not done.is_set():
            name = f"o{r.randrange(8)}"
            try:
                if r.random() < 0.2:
                    requests.delete(f"{base}/c/{name}", headers=h, timeout=30)
                else:
                    requests.put(f"{base}/c/{name}", data=b"w" * r.randrange(1 << 16),
                                 headers=h, timeout=30)
                    ok[0] += 1
            except requests.RequestException:
                return  # the server is gone

    def slow_body() -> Iterator[bytes]:
        yield b"s" * (1 << 20)
        started.set()
        done.wait(30)  # the server dies while this body is still being sent
        yield b"s" * (1 << 20)

    def slow() -> None:
        try:
            requests.put(f"{base}/c/big", data=slow_body(), headers=h, timeout=60)
        except requests.RequestException:
            pass

    try:
        requests.put(base + "/c", headers=h, timeout=30)
        rng = random.Random(seed)
        threads = [threading.Thread(target=writer, args=(rng.random(),)) for _ in range(3)]
        threads.append(threading.Thread(target=slow))
        for t in threads:
            t.start()
        assert started.wait(30)
        while ok[0] < min_ok and any(t.is_alive() for t in threads[:3]):
            threading.Event().wait(0.01)  # let some uploads land (not a sync point)
        for _ in range(20000):  # poll for a charge in flight
            if _pending(d):
                break
        os.kill(g.pid, signal.SIGKILL)
        done.set()
        for t in threads:
            t.join(60)
    finally:
        done.set()
        try:
            os.kill(g.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return _pending(d)


def test_kill_9_mid_upload_leaves_usage_equal_to_stored_bytes(tmp_path: Path) -> None:
    d = tmp_path
    doc = json.loads(archip(d, "--json", "user", "add", "erin").stdout)
    uuid, h = doc["uuid"], {"X-Auth-Token": doc["token"]}
    left = []
    for round_ in range(3):
        left.append(_crash_round(d, uuid, h, round_ + 0.5, 10 + 10 * round_))
        with _gateway(d) as g2:  # restart: reconcile, then check
            stored, q = _quota(g2.url, uuid, h)
            assert q["usage"] == stored and q["pending"] == 0, (round_, stored, q)
            assert requests.head(f"{g2.url}/v1/{uuid}/c/big", headers=h).status_code == 404
            assert _pending(d) == 0
    assert any(left), "no kill landed between issue and accept: the test proved nothing"
