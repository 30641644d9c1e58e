"""Scrub (archipelago/upkeep/scrub.py) through the real CLI on a file store: a content
block with one bit flipped and a deleted one are found and named with the volumes they
affect (exit 9); --repair restores both from duplicates (the writable blocks the
content map was hashed from); without a duplicate the bad block is quarantined."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archipelago.blocker.file import FileBlocker
from archipelago.errors import MissingBlock
from archipelago.mapper import Mapper

pytestmark = pytest.mark.timeout(120)
MiB = 1024 * 1024
BS = 4 * MiB


def archip(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI on instance ``data``."""
    env = dict(os.environ, ARCHIPELAGO_DATA_DIR=str(data))
    return subprocess.run([sys.executable, "-m", "control", "--json", *args], env=env,
                          capture_output=True, text=True)


def test_scrub_finds_names_and_repairs(tmp_path: Path) -> None:
    """Corrupt + missing content blocks of a hashed map and its clone."""
    data = tmp_path / "inst"
    data.mkdir(mode=0o700)
    store = data / "blocks"
    blocks = [os.urandom(BS), os.urandom(BS), os.urandom(BS // 2)]

    async def setup() -> tuple[str, list[str]]:
        b = FileBlocker(str(store))
        m = Mapper(b, "scrub:1")
        await m.create("src", 3 * BS)
        v = await m.open("src")
        await v.write(0, b"".join(blocks))
        await v.close()
        await m.snapshot("src", "snap")
        root = (await m.hash("snap")).name  # content blocks: copies of src's blocks
        await m.clone(root, "vm")
        hashes, _ = await m.hashmap(root)
        await m.close()
        await b.close()
        return root, hashes

    root, hashes = asyncio.run(setup())
    fb = FileBlocker(str(store))
    corrupt, gone = hashes[0], hashes[1]
    path = fb.path_of(corrupt)
    with open(path, "r+b") as f:  # flip one bit
        f.seek(12345)
        byte = f.read(1)[0]
        f.seek(12345)
        f.write(bytes([byte ^ 0x10]))
    os.unlink(fb.path_of(gone))
    asyncio.run(fb.close())

    r = archip(data, "scrub", "--all")
    assert r.returncode == 9, r.stderr
    rep = json.loads(r.stdout)
    assert not rep["clean"]
    assert rep["corrupt"] == [{"object": corrupt, "volumes": sorted([root, "vm"])}]
    assert rep["missing"] == [{"object": gone, "volumes": sorted([root, "vm"])}]
    one = json.loads(archip(data, "scrub", "--volume", "vm").stdout)  # one volume only
    assert [x["object"] for x in one["corrupt"]] == [corrupt]

    r = archip(data, "scrub", "--all", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(json.loads(r.stdout)["repaired"]) == sorted([corrupt, gone])
    r = archip(data, "scrub", "--all")
    assert r.returncode == 0 and json.loads(r.stdout)["clean"]

    async def read_vm() -> bytes:
        b = FileBlocker(str(store))
        m = Mapper(b, "scrub:2")
        v = await m.open("vm")
        out = await v.read(0, 3 * BS)
        await m.close()
        await b.close()
        return out

    assert asyncio.run(read_vm()) == b"".join(blocks) + bytes(BS // 2)

    # No duplicate left (the source volume and its snapshot removed, garbage collected):
    # the corrupt block is quarantined and readers get an error, not wrong data.
    async def drop_sources() -> None:
        b = FileBlocker(str(store))
        m = Mapper(b, "scrub:3")
        await m.remove("snap")
        await m.remove("src")
        await m.close()
        await b.close()

    asyncio.run(drop_sources())
    assert archip(data, "gc", "--grace", "0").returncode == 0  # their blocks leaked: collect
    fb = FileBlocker(str(store))
    with open(fb.path_of(hashes[2]), "r+b") as f:  # flip a bit (writing a fixed byte left
        byte = f.read(1)[0]  # the random block intact 1 time in 256: a CI failure)
        f.seek(0)
        f.write(bytes([byte ^ 0x01]))
    asyncio.run(fb.close())
    r = archip(data, "scrub", "--volume", "vm", "--repair")
    assert r.returncode == 9, r.stdout
    assert json.loads(r.stdout)["quarantined"] == [hashes[2]]
    with pytest.raises(MissingBlock):
        asyncio.run(read_vm())
    r = archip(data, "scrub", "--volume", "nope")
    assert r.returncode == 3 and "archip: error:" in r.stderr
