"""Plankton image registry over real HTTP, and image -> volume thin clones (no block copied)."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

import pytest
import requests

from archipelago.errors import InvalidArgument
from archipelago.mapper import Mapper
from pithos_gw.common import META
from pithos_gw.plankton import image_hashmap, image_to_volume
from tests.gw_helpers import GatewayThread, gw, gw_mem  # noqa: F401

MiB = 1024 * 1024
_BLOCK_NAME = re.compile(r"^[0-9a-f]{64}$")


def register(g: GatewayThread, tok: dict[str, str], name: str, loc: str,
             **extra: str) -> requests.Response:
    headers = {**tok, "X-Image-Meta-Name": name, "X-Image-Meta-Location": loc}
    headers.update({f"X-Image-Meta-{k}": v for k, v in extra.items()})
    return requests.post(f"{g.url}/image/v1.0/images", headers=headers)


def test_register_list_update_delete(gw_mem: GatewayThread) -> None:  # noqa: F811
    g = gw_mem
    a = {"X-Auth-Token": g.add_user("alice")}
    b = {"X-Auth-Token": g.add_user("bob")}
    requests.put(f"{g.url}/v1/alice/images", headers=a)
    data = b"disk" * 300000
    put = requests.put(f"{g.url}/v1/alice/images/debian.img", data=data, headers=a)
    root = put.headers["X-Object-Hash"]
    uuid = requests.head(f"{g.url}/v1/alice/images/debian.img", headers=a).headers[
        "X-Object-UUID"]
    loc = "pithos://alice/images/debian.img"
    assert register(g, a, "x", loc, Checksum=hashlib.md5(data).hexdigest()).status_code == 400
    assert register(g, a, "x", loc, Size=str(len(data) + 1)).status_code == 400
    assert register(g, a, "x", "pithos://alice/images/nothing").status_code == 400
    assert register(g, a, "x", "http://elsewhere/x").status_code == 400
    assert register(g, a, "x", loc, Id="chosen").status_code == 400
    assert register(g, b, "x", loc).status_code == 400  # bob cannot read alice's object
    blocks_before = g.count_blocks()
    r = register(g, a, "Debian", loc, Size=str(len(data)), Checksum=root,
                 **{"Disk-Format": "diskdump", "Property-OSFamily": "linux"})
    assert r.status_code == 200, r.text
    img = r.json()["image"]
    assert img["id"] == uuid and img["checksum"] == root and img["size"] == len(data)
    assert img["status"] == "available" and img["location"] == loc
    assert img["properties"] == {"osfamily": "linux"}
    assert g.count_blocks() == blocks_before  # registration moves no data
    listed = requests.get(f"{g.url}/image/v1.0/images", headers=a).json()["images"]
    assert [i["id"] for i in listed] == [uuid]
    detail = requests.get(f"{g.url}/images/detail?disk_format=diskdump", headers=a).json()
    assert detail["images"][0]["properties"] == {"osfamily": "linux"}
    assert requests.get(f"{g.url}/images/detail?disk_format=vmdk",
                        headers=a).json()["images"] == []
    h = requests.head(f"{g.url}/image/v1.0/images/{uuid}", headers=a).headers
    assert h["X-Image-Meta-Name"] == "Debian" and h["X-Image-Meta-Checksum"] == root
    assert h["X-Image-Meta-Property-osfamily"] == "linux"
    # Private to alice until made public.
    assert requests.get(f"{g.url}/images", headers=b).json()["images"] == []
    assert requests.head(f"{g.url}/images/{uuid}", headers=b).status_code == 404
    assert requests.put(f"{g.url}/images/{uuid}", headers={
        **a, "X-Image-Meta-Is-Public": "true", "X-Image-Meta-Name": "Debian 12"}).ok
    assert [i["name"] for i in requests.get(f"{g.url}/images",
                                            headers=b).json()["images"]] == ["Debian 12"]
    assert requests.delete(f"{g.url}/images/{uuid}", headers=b).status_code == 403
    assert requests.delete(f"{g.url}/images/{uuid}", headers=a).status_code == 204
    assert requests.get(f"{g.url}/images", headers=a).json()["images"] == []
    # Unregistering keeps the object.
    assert requests.get(f"{g.url}/v1/alice/images/debian.img", headers=a).content == data
    assert requests.get(f"{g.url}/images").status_code == 401


def test_image_to_volume_thin_clone(gw: GatewayThread) -> None:  # noqa: F811
    g = gw
    a = {"X-Auth-Token": g.add_user("alice")}
    requests.put(f"{g.url}/v1/alice/images", headers=a)
    data = b"".join(bytes([i + 1]) * (4 * MiB) for i in range(2)) + b"tail" * 1000
    data = data[: 4 * MiB] + bytes(4 * MiB) + data[4 * MiB :]  # a zero block in the middle
    requests.put(f"{g.url}/v1/alice/images/disk.raw", data=data, headers=a)
    img = register(g, a, "disk", "pithos://alice/images/disk.raw").json()["image"]
    hashes, nbytes = g.call(image_hashmap(g.app[META], img["id"]))
    assert nbytes == len(data) and len(hashes) == 4

    async def clone_and_read() -> tuple[set[str], set[str], bytes, bytes]:
        before = set(await g.blocker.list())
        mapper = Mapper(g.blocker, "gw-test")
        with pytest.raises(InvalidArgument):
            await image_to_volume(g.app[META], mapper, img["id"], "too-small", 4 * MiB)
        await image_to_volume(g.app[META], mapper, img["id"], "vm-disk", 16 * MiB)
        after = set(await g.blocker.list())
        vol = await mapper.open("vm-disk")
        content = await vol.read(0, len(data))
        beyond = await vol.read(len(data), 16 * MiB - len(data))
        await vol.write(0, b"changed")  # copy-on-write: the image stays intact
        await vol.close()
        await mapper.close()
        return before, after, content, beyond

    before, after, content, beyond = g.call(clone_and_read())
    assert content == data and beyond == bytes(len(beyond))
    new = after - before
    assert not any(_BLOCK_NAME.match(n) for n in new), new  # no block was copied
    assert {n for n in before if _BLOCK_NAME.match(n)} == {
        n for n in after if _BLOCK_NAME.match(n)}
    got = requests.get(f"{g.url}/v1/alice/images/disk.raw", headers=a)
    assert got.content == data


def test_image_hashmap_unknown() -> None:
    from archipelago.errors import NotFound

    class _Meta:
        async def image_get(self, image_id: str) -> None:
            return None

    import asyncio

    with pytest.raises(NotFound):
        asyncio.run(image_hashmap(_Meta(), "nope"))  # type: ignore[arg-type]


def test_image_members(gw_mem: GatewayThread) -> None:  # noqa: F811
    g = gw_mem
    a = {"X-Auth-Token": g.add_user("alice")}
    b = {"X-Auth-Token": g.add_user("bob")}
    requests.put(f"{g.url}/v1/alice/i", headers=a)
    requests.put(f"{g.url}/v1/alice/i/img", data=b"image", headers=a)
    iid = register(g, a, "img", "pithos://alice/i/img").json()["image"]["id"]
    base = f"{g.url}/image/v1.0/images/{iid}/members"
    assert requests.get(base, headers=a).json() == {"members": []}
    assert requests.head(f"{g.url}/images/{iid}", headers=b).status_code == 404
    assert requests.put(base + "/bob", headers=a).status_code == 204
    assert requests.get(base, headers=a).json()["members"][0]["member_id"] == "bob"
    # A member sees the image and can read its object (members = read sharing).
    assert requests.head(f"{g.url}/images/{iid}", headers=b).status_code == 200
    assert requests.get(f"{g.url}/v1/alice/i/img", headers=b).content == b"image"
    shared = requests.get(f"{g.url}/image/v1.0/shared-images/bob", headers=a).json()
    assert shared == {"shared_images": [{"image_id": iid, "can_share": False}]}
    assert requests.put(base + "/carol", headers=b).status_code == 403
    assert requests.delete(base + "/bob", headers=a).status_code == 204
    assert requests.head(f"{g.url}/images/{iid}", headers=b).status_code == 404
    r = requests.put(base, headers=a, json={"memberships": [{"member_id": "bob"}]})
    assert r.status_code == 204
    assert requests.put(base, headers=a, data=b"{bad").status_code == 400


@pytest.mark.parametrize("name", ["Two Words", "Ubuntu 24.04 — ελληνικά", "100% done/v2"])
def test_quoted_names_round_trip(gw_mem: GatewayThread, name: str) -> None:  # noqa: F811
    """kamaki and `archip image upload` URL-quote X-Image-Meta-* values and the location
    (an object named as the image); list, show and update give the names back exactly."""
    g = gw_mem
    a = {"X-Auth-Token": g.add_user("alice")}
    requests.put(f"{g.url}/v1/alice/images", headers=a)
    obj = quote(name, safe="")
    assert requests.put(f"{g.url}/v1/alice/images/{obj}", data=b"img", headers=a).ok
    prop = "Grüße, 50% ελληνικά"
    r = register(g, a, quote(name), f"pithos://alice/images/{obj}",
                 **{"Property-Note": quote(prop)})
    assert r.status_code == 200, r.text
    img = r.json()["image"]
    assert img["name"] == name and img["properties"] == {"note": prop}
    assert img["location"] == f"pithos://alice/images/{name}"
    listed = requests.get(f"{g.url}/image/v1.0/images", headers=a).json()["images"]
    assert [i["name"] for i in listed] == [name]
    detail = requests.get(f"{g.url}/image/v1.0/images/detail", headers=a,
                          params={"name": name}).json()["images"]
    assert [(i["name"], i["properties"]) for i in detail] == [(name, {"note": prop})]
    shown = requests.get(f"{g.url}/image/v1.0/images/{img['id']}", headers=a).json()["image"]
    assert shown["name"] == name and shown["properties"] == {"note": prop}
    renamed = requests.put(f"{g.url}/image/v1.0/images/{img['id']}", headers={
        **a, "X-Image-Meta-Name": quote(name + " (2)")}).json()["image"]
    assert renamed["name"] == name + " (2)"
    bad = register(g, a, "%ff", f"pithos://alice/images/{obj}")
    assert bad.status_code == 400
