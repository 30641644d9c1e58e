"""The README's two commands, .ci/run and the scripts stay consistent."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


def readme_commands() -> dict[str, str]:
    """The command in the code block after each "(1)" / "(2)" paragraph of the README."""
    text = (REPO / "README.md").read_text()
    found = re.findall(r"^\((\d)\)[^\n]*\n+```\n([^\n]+)\n```", text, flags=re.M)
    return dict(found)


def test_readme_has_exactly_two_commands() -> None:
    cmds = readme_commands()
    assert cmds == {"1": "bash scripts/demo.sh", "2": "bash scripts/test.sh"}


def test_ci_runs_command_two() -> None:
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -euo pipefail" in lines
    assert lines[-1] == readme_commands()["2"]


@pytest.mark.parametrize("script", ["scripts/install.sh", "scripts/test.sh", "scripts/demo.sh",
                                    "scripts/swift-functional.sh", "scripts/ui_screenshots.sh",
                                    ".ci/run"])
def test_scripts_parse(script: str) -> None:
    r = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr


def test_install_lists_the_required_packages() -> None:
    text = (REPO / "scripts" / "install.sh").read_text()
    for pkg in ("python3-venv", "python3-dev", "build-essential", "nbdkit", "nbdkit-plugin-python",
                "libnbd-bin", "python3-libnbd", "qemu-utils", "ceph-mon", "ceph-osd",
                "ceph-common", "python3-rados", "fio", "chromium", "chromium-driver",
                "python3-selenium"):
        assert re.search(rf"(^|\s){re.escape(pkg)}(\s|$)", text, flags=re.M), pkg
    assert "--system-site-packages" in text and "-e '.[test]'" in text


def test_swift_functional_deselect_list_is_short_and_explained() -> None:
    """Every deselected upstream test names a file the runner runs and says why."""
    runner = (REPO / "scripts" / "swift-functional.sh").read_text()
    entries = [ln for ln in (REPO / "tests" / "swift_functional_deselect.txt").read_text()
               .splitlines() if ln.strip() and not ln.startswith("#")]
    assert 0 < len(entries) <= 12
    for ln in entries:
        node, sep, reason = ln.partition("#")
        path = node.strip().split("::")[0]
        assert sep and reason.strip(), ln
        assert path.startswith("test/functional/") and path.rsplit("/", 1)[1] in runner, ln
    assert "bash scripts/swift-functional.sh" in (REPO / "scripts" / "test.sh").read_text()
