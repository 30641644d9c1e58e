"""The web UI in headless Chromium (selenium) against a started daemon: whole flows as a
user does them. One test boots a real guest (TCG); the others need none."""

from __future__ import annotations

import os

import requests
from ui_helpers import Browser, UiCloud, browser, ui_cloud  # noqa: F401 -- fixtures

MiB = 1 << 20
XSS = "<img src=x onerror=alert(1)>"


def test_files_share_public_and_pages(ui_cloud: UiCloud, browser: Browser, tmp_path) -> None:  # noqa: ANN001, F811
    b = browser
    b.get("/ui/login")
    b.shot("login")
    b.login("alice", ui_cloud.passwords["alice"])
    for label in ("Servers", "Volumes", "Images", "Files", "Billing"):
        assert b.driver.find_element("link text", label)
    assert "credits added: 100" in b.text() and "100.000000 credits" in b.text()
    b.shot("dashboard")
    # a container, then a 20 MiB upload with its progress bar
    b.nav("Files")
    b.fill("#container-name", "holidays")
    b.submit_form_of("#container-name")
    b.find("#upload-file")
    data = os.urandom(20 * MiB)
    src = tmp_path / "photos.bin"
    src.write_bytes(data)
    b.find("#upload-file").send_keys(str(src))
    b.find("#upload-button").click()
    b.until(lambda d: d.find_element("id", "drop").get_attribute("data-state") == "done")
    drop = b.find("#drop")
    assert b.find("#upload-progress").get_attribute("value") == "100"
    assert "100%" in b.find("#upload-status").text
    # large files take the hashmap path: the block list, then only the missing blocks
    assert drop.get_attribute("data-path") == "hashmap"
    assert drop.get_attribute("data-sent") == str(len(data))
    b.shot("files-upload")
    # the same bytes again under another name: already stored, no block is sent
    b.until(lambda d: "photos.bin" in d.find_element("id", "objects").text)   # reloaded
    b.fill("#upload-name", "photos-again.bin")
    b.find("#upload-file").send_keys(str(src))
    b.find("#upload-button").click()
    b.until(lambda d: d.find_element("id", "drop").get_attribute("data-state") == "done")
    assert b.find("#drop").get_attribute("data-sent") == "0"
    assert "already stored" in b.find("#upload-status").text
    b.until(lambda d: "photos-again.bin" in d.find_element("id", "objects").text)
    b.until(lambda d: d.find_element("link text", "photos.bin")).click()
    b.find("#download").click()
    assert b.wait_download("photos.bin", len(data)).read_bytes() == data
    # share with bob, make public; the public link works without a session
    b.fill("#share-user", "bob")
    b.submit_form_of("#share-user")
    b.until(lambda d: "Readable by: bob" in d.find_element("tag name", "main").text)
    b.find("#public-toggle").click()
    href = b.find("#public-link").get_attribute("href")
    r = requests.get(href, timeout=60)
    assert r.status_code == 200 and r.content == data
    b.shot("file-detail")
    # a folder, a file in it
    b.get("/ui/files/c/holidays")
    small = tmp_path / "note.txt"
    small.write_bytes(b"hello")
    b.fill("#folder-name", "2026")
    b.submit_form_of("#folder-name")
    b.until(lambda d: d.find_element("tag name", "h1").text == "holidays / 2026/")
    b.find("#upload-file").send_keys(str(small))
    b.find("#upload-button").click()
    b.until(lambda d: "note.txt" in d.find_element("id", "objects").text)
    b.get("/ui/files/c/holidays")
    assert "2026/" in b.find("#objects").text and "note.txt" not in b.find("#objects").text
    # a file named like HTML shows as text (and nothing runs)
    b.fill("#upload-name", XSS)
    b.find("#upload-file").send_keys(str(small))
    b.find("#upload-button").click()
    b.until(lambda d: XSS in d.find_element("id", "objects").text)
    b.no_alert()
    b.driver.find_element("link text", XSS).click()
    b.until(lambda d: d.find_element("id", "object-name").text == XSS)
    b.no_alert()
    b.find("#object-delete").click()
    b.until(lambda d: "photos.bin" in d.find_element("id", "objects").text)
    assert XSS not in b.find("#objects").text
    # images: register the uploaded file
    b.nav("Images")
    b.fill("#image-name", "holiday-disk")
    b.fill("#image-container", "holidays")
    b.fill("#image-object", "photos.bin")
    b.submit_form_of("#image-name")
    b.until(lambda d: "holiday-disk" in d.find_element("id", "own-images").text)
    b.shot("images")
    b.nav("Billing")
    b.find("#balance")
    b.shot("billing")
    b.driver.set_window_size(390, 844)       # a phone
    b.nav("Files")
    b.shot("phone-files")
    b.driver.set_window_size(1280, 900)
    b.logout()
    # bob sees what alice shared with him, and can download it
    b.login("bob", ui_cloud.passwords["bob"])
    b.nav("Files")
    b.find("a[href='/ui/files/shared']").click()
    b.until(lambda d: "From alice" in d.find_element("tag name", "main").text)
    b.driver.find_element("link text", "holidays").click()
    b.until(lambda d: "photos.bin" in d.find_element("id", "objects").text)
    assert b.find("#owner").text == "alice"
    b.shot("files-shared")
    b.logout()


def _row(b: Browser, name: str, text: str = ""):  # noqa: ANN202
    """The table row of a volume once it shows ``text`` (the page after the last action)."""
    return b.until(lambda d: (r := d.find_element("css selector", f"tr[data-volume='{name}']"))
                   and text in r.text and r)


def _volume_action(b: Browser, name: str, field: str, value: str) -> None:
    row = _row(b, name)
    el = row.find_element("css selector", f"input[{field}]")
    el.send_keys(value)
    el.find_element("xpath", "./ancestor::form").find_element("css selector", "button").click()


def test_volumes_create_snapshot_clone_tree(ui_cloud: UiCloud, browser: Browser) -> None:  # noqa: F811
    b = browser
    b.login("alice", ui_cloud.passwords["alice"])
    b.nav("Volumes")
    b.fill("#volume-name", "data1")
    b.fill("#volume-size", "2")
    b.find("#create-volume").click()
    _row(b, "data1", "2.0 GiB")
    assert "0 blocks" in _row(b, "data1").text
    from archipelago.client import Client

    with Client.connect(ui_cloud.d.data_dir) as c, c.open("data1") as v:   # 8 MiB of data
        v.write(0, os.urandom(8 * MiB), fua=True)
    b.get("/ui/volumes")
    assert "2 blocks: 2 own, 0 shared" in _row(b, "data1", "8.0 MiB").text   # the mapper's usage
    _volume_action(b, "data1", "placeholder='snapshot name'", "data1-monday")
    snap = _row(b, "data1-monday", "from data1")
    assert "snapshot" in snap.text and "Resize" not in snap.text
    assert "2 blocks: 0 own, 2 shared" in _row(b, "data1").text   # the snapshot took them
    _volume_action(b, "data1-monday", "placeholder='clone name'", "data1-copy")
    clone = _row(b, "data1-copy", "from data1-monday")
    assert "└─ └─" in clone.text     # two levels down the tree
    assert "2 blocks: 0 own, 2 shared" in clone.text
    _volume_action(b, "data1-copy", "placeholder='GiB'", "3")
    _row(b, "data1-copy", "3.0 GiB")
    b.shot("volumes")
    # a name the mapper refuses: the error page shows it as text
    b.fill("#volume-name", XSS)
    b.find("#create-volume").click()
    assert XSS in b.find("#error-message").text
    b.no_alert()
    b.get("/ui/volumes")
    _row(b, "data1-copy").find_element("css selector", "button.danger").click()
    b.until(lambda d: "data1-copy" not in d.find_element("id", "volumes").text)
    b.logout()


def test_server_from_guest_image_live_console(ui_cloud: UiCloud, browser: Browser) -> None:  # noqa: F811
    """The one test with a real guest: wizard -> BUILD/ACTIVE -> GUEST-DONE live -> delete."""
    from guest_helpers import guest_files

    g = guest_files()
    d = ui_cloud.d
    up = lambda *a: d.archip("--json", "image", "upload", *a, "--user", "alice",  # noqa: E731
                             check=True, timeout=300).json()["id"]
    kernel = up(str(g.kernel), "--name", "guest-kernel", "--disk-format", "aki")
    ramdisk = up(str(g.initrd), "--name", "guest-initrd", "--disk-format", "ari")
    up(str(g.initrd), "--name", "guest-disk", "--disk-format", "raw",
       "--property", f"kernel_id={kernel}", "--property", f"ramdisk_id={ramdisk}")
    b = browser
    b.login("alice", ui_cloud.passwords["alice"])
    b.nav("Volumes")
    b.fill("#volume-name", "spare")
    b.fill("#volume-size", "1")
    b.find("#create-volume").click()
    _row(b, "spare", "1.0 GiB")
    b.nav("Servers")
    b.find("#new-server").click()
    b.driver.find_element("xpath", "//label[contains(., 'guest-disk')]/input").click()
    b.driver.find_element("xpath", "//fieldset[legend[contains(., 'flavor')]]"
                                   "//label[contains(., 'tiny')]/input").click()
    b.fill("#server-name", XSS)
    b.shot("server-create")
    b.find("#create-server").click()
    b.until(lambda dr: dr.find_element("id", "server-title").text == XSS)
    b.until(lambda dr: "GUEST-DONE" in dr.find_element("id", "console").text, timeout=300)
    b.no_alert()
    # the guest powered off: the page's state follows (htmx) and offers Start, not Stop
    b.until(lambda dr: dr.find_element("id", "server-status").text == "STOPPED", timeout=120)
    assert b.find("#server-start") and not b.driver.find_elements("id", "server-stop")
    b.shot("server-console")
    # a volume attached to the stopped server, then detached (no guest needed)
    from selenium.webdriver.support.ui import Select

    Select(b.find("#attach-volume")).select_by_visible_text("spare")
    b.submit_form_of("#attach-volume")
    b.until(lambda dr: "spare" in dr.find_element("id", "attachments").text)
    b.find("#attachments button").click()
    b.until(lambda dr: "spare" not in dr.find_element("id", "attachments").text)
    b.nav("Servers")
    b.until(lambda dr: XSS in dr.find_element("id", "servers").text)
    b.shot("servers")
    b.find("#servers a").click()
    b.find("#server-delete").click()
    b.until(lambda dr: "No servers yet." in dr.find_element("id", "servers").text)
    b.logout()
