"""`archip gateway ...` end to end: start on an ephemeral loopback port, use it, stop it."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from control.cli import main


@dataclass
class Result:
    """What one CLI invocation printed and returned."""

    returncode: int
    stdout: str
    stderr: str


_CAPSYS: list[pytest.CaptureFixture[str]] = []


def archip(data_dir: Path, *args: str, check: bool = True) -> Result:
    """Run `archip` in-process against a private data dir (file blocker, no fsync)."""
    capsys = _CAPSYS[-1]
    capsys.readouterr()
    argv = ["--data-dir", str(data_dir), "-o", "blocker.file.fsync=false", *args]
    rc = main(argv)
    out, err = capsys.readouterr()
    if check:
        assert rc == 0, (argv, out, err)
    return Result(rc, out, err)


@pytest.fixture(autouse=True)
def _capture(capsys: pytest.CaptureFixture[str]) -> None:
    _CAPSYS.append(capsys)


def stop(data_dir: Path) -> None:
    """Stop the gateway; kill it by pid if the CLI could not (never leave one running)."""
    state = data_dir / "run" / "gateway.json"
    pid = json.loads(state.read_text())["pid"] if state.exists() else None
    r = archip(data_dir, "gateway", "stop", check=False)
    if r.returncode != 0 and pid:
        os.kill(pid, signal.SIGKILL)
    assert r.returncode == 0, r.stderr


def test_gateway_cli_lifecycle(tmp_path: Path) -> None:
    d = tmp_path / "inst"
    key = archip(d, "gateway", "user", "add", "alice").stdout.strip()
    assert len(key) >= 20
    dup = archip(d, "gateway", "user", "add", "alice", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    users = json.loads(archip(d, "--json", "gateway", "user", "list").stdout)
    # Users are identity users (the instance's admin too); accounts are their uuids.
    assert "alice" in [u["name"] for u in users]
    bad = archip(d, "gateway", "start", "--listen", "0.0.0.0:8080", check=False)
    assert bad.returncode != 0 and "loopback" in bad.stderr
    st = archip(d, "--json", "gateway", "status", check=False)
    assert st.returncode != 0 and json.loads(st.stdout)["running"] is False
    archip(d, "gateway", "start", "--listen", "127.0.0.1:0")
    try:
        st = json.loads(archip(d, "--json", "gateway", "status").stdout)
        assert st["running"] and st["url"].startswith("http://127.0.0.1:")
        url = st["url"]
        again = archip(d, "gateway", "start", "--listen", "127.0.0.1:0", check=False)
        assert again.returncode != 0 and "already running" in again.stderr
        auth = requests.get(url + "/auth/v1.0",
                            headers={"X-Auth-User": "alice", "X-Auth-Key": key})
        tok = {"X-Auth-Token": auth.headers["X-Auth-Token"]}
        storage = auth.headers["X-Storage-Url"]
        assert requests.put(storage + "/c", headers=tok).status_code == 201
        assert requests.put(storage + "/c/o", data=b"data", headers=tok).status_code == 201
        assert requests.get(storage + "/c/o", headers=tok).content == b"data"
    finally:
        stop(d)
    assert json.loads(archip(d, "--json", "gateway", "status", check=False).stdout)[
        "running"] is False
    # Data survives a restart (SQLite metadata + file blocker).
    archip(d, "gateway", "start", "--listen", "127.0.0.1:0")
    try:
        url = json.loads(archip(d, "--json", "gateway", "status").stdout)["url"]
        assert requests.get(storage.replace(storage.split("/v1/")[0], url) + "/c/o",
                            headers=tok).content == b"data"
    finally:
        stop(d)


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    """A taken port: the user gets one line naming the address, no traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        for _ in range(2):  # the second start shows its own error, not the first one's log
            r = archip(tmp_path, "gateway", "start", "--listen", f"127.0.0.1:{port}",
                       check=False)
            assert r.returncode != 0
            assert r.stderr.count(f"cannot listen on 127.0.0.1:{port}") == 1, r.stderr
            assert "in use" in r.stderr and "Traceback" not in r.stderr, r.stderr
            assert "^^^" not in r.stderr and "uvloop" not in r.stderr, r.stderr
    assert archip(tmp_path, "gateway", "status", check=False).returncode != 0
