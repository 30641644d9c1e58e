"""The `archip` console script as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import archipelago
import archipelago.errors

ARCHIP = str(Path(sys.executable).with_name("archip"))
pytestmark = pytest.mark.timeout(120)


def archip(*args: str, env: dict[str, str] | None = None,
           data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run archip with a clean instance environment."""
    full = {k: v for k, v in os.environ.items()
            if k not in ("ARCHIPELAGO_CONFIG", "ARCHIPELAGO_DATA_DIR", "ARCHIPELAGO_DEBUG")}
    if data_dir is not None:
        full["ARCHIPELAGO_DATA_DIR"] = str(data_dir)
    full.update(env or {})
    return subprocess.run([ARCHIP, *args], capture_output=True, text=True, env=full, timeout=60)


def test_version() -> None:
    r = archip("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"archip {archipelago.__version__}"


def test_help_lists_commands() -> None:
    r = archip("--help")
    assert r.returncode == 0
    for word in ("--data-dir", "--config", "--json", "config", "selftest"):
        assert word in r.stdout
    assert r.stderr == ""  # every cmd_* module loaded


def test_no_command_is_a_usage_error() -> None:
    r = archip()
    assert r.returncode == 2
    assert "usage:" in r.stderr


def test_config_show_json(tmp_path: Path) -> None:
    (tmp_path / "archipelago.toml").write_text("[peers]\nblockers = 3\n")
    r = archip("--data-dir", str(tmp_path), "config", "show", "--json")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["peers"]["blockers"] == 3
    assert cfg["blocker"]["file"]["path"] == str(tmp_path.resolve() / "blocks")
    # -o beats the instance file; global options work after the subcommand too.
    r = archip("config", "show", "--json", "-o", "peers.blockers=4", data_dir=tmp_path)
    assert json.loads(r.stdout)["peers"]["blockers"] == 4


def test_unknown_key_is_one_line_with_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\nlisten = '127.0.0.1:1'\nlistne = 'x'\n")
    r = archip("config", "show", env={"ARCHIPELAGO_CONFIG": str(bad)}, data_dir=tmp_path)
    assert r.returncode == 15
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith("archip: error: unknown config key 'gateway.listne'")
    r = archip("--config", str(tmp_path / "absent.toml"), "config", "show", data_dir=tmp_path)
    assert r.returncode == 15 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_selftest_in_a_fresh_instance(tmp_path: Path) -> None:
    inst = tmp_path / "inst"
    r = archip("--data-dir", str(inst), "selftest")
    assert r.returncode == 0, r.stderr
    assert "all ok" in r.stdout
    assert (inst / "blocks" / "objects").is_dir()
    assert (inst.stat().st_mode & 0o777) == 0o700
    r = archip("selftest", "--json", "--data-dir", str(inst))
    report = json.loads(r.stdout)
    assert report["ok"] is True and report["backend"] == "file"
    assert {s["step"] for s in report["steps"]} >= {"write", "read", "hash", "lock", "unlock"}
    # Selftest cleans up after itself: no objects and no locks remain.
    leftovers = [p for p in (inst / "blocks").rglob("*") if p.is_file()]
    assert leftovers == []


def test_selftest_memory_backend(tmp_path: Path) -> None:
    r = archip("selftest", "-o", "blocker.backend=memory", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "backend=memory" in r.stdout


def test_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker_file = tmp_path / "file"
    blocker_file.write_text("not a directory")
    r = archip("selftest", data_dir=blocker_file / "sub")
    assert r.returncode != 0
    assert r.stderr.startswith("archip: error:") and r.stderr.count("\n") == 1
    r = archip("daemon", "start", data_dir=blocker_file)
    assert r.returncode == 15 and "exists and is not a directory" in r.stderr, r.stderr


def test_python_dash_m_control() -> None:
    r = subprocess.run([sys.executable, "-m", "control", "--version"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and archipelago.__version__ in r.stdout


@pytest.mark.parametrize(("exc", "code", "text"), [
    (KeyboardInterrupt(), 130, "interrupted"),
    (RuntimeError("boom"), 1, "internal error: RuntimeError: boom"),
    (archipelago.errors.Locked("vol is locked by h:1"), 5, "vol is locked by h:1"),
])
def test_main_maps_exceptions_to_one_line(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str],
                                          exc: BaseException, code: int, text: str) -> None:
    from control import cli

    def fail(argv: object) -> int:
        raise exc

    monkeypatch.delenv("ARCHIPELAGO_DEBUG", raising=False)
    monkeypatch.setattr(cli, "run", fail)
    assert cli.main([]) == code
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1 and "Traceback" not in err


def test_blocker_lock_commands(tmp_path: Path) -> None:
    import asyncio
    import socket

    from archipelago.blocker.file import FileBlocker

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=30)
    stale_owner = f"{socket.gethostname()}:{int(dead.stdout)}"
    live_owner = f"{socket.gethostname()}:{os.getpid()}"

    async def setup() -> None:
        b = FileBlocker(str(tmp_path / "blocks"))
        await b.lock("vol-stale", stale_owner)
        await b.lock("vol-live", live_owner)
        await b.put("vol-obj", b"12345")
        await b.close()

    asyncio.run(setup())
    r = archip("blocker", "ls", "--json", data_dir=tmp_path)
    assert json.loads(r.stdout) == [{"name": "vol-obj", "size": 5}]
    r = archip("blocker", "lock-info", "vol-stale", data_dir=tmp_path)
    assert r.returncode == 0 and "STALE" in r.stdout and stale_owner in r.stdout
    r = archip("blocker", "lock-info", "vol-live", "--json", data_dir=tmp_path)
    assert json.loads(r.stdout)["stale"] is False
    r = archip("blocker", "break-lock", "vol-live", data_dir=tmp_path)
    assert r.returncode == 6 and "--force" in r.stderr  # Busy: live owner
    assert archip("blocker", "break-lock", "vol-stale", data_dir=tmp_path).returncode == 0
    r = archip("blocker", "lock-info", "vol-stale", data_dir=tmp_path)
    assert r.returncode == 3  # NotFound: no longer held
    assert archip("blocker", "break-lock", "--force", "vol-live", data_dir=tmp_path).returncode == 0
