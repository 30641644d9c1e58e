"""Web UI test helpers: a cloud (daemon + API server with identity, compute, billing, ui),
users made through the CLI, and headless Chromium driven by selenium (Debian's chromium and
chromium-driver, installed by scripts/install.sh).

Screenshots go to $ARCHIPELAGO_UI_SCREENSHOTS when set (scripts/ui_screenshots.sh sets it
to docs/ui), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from compute_helpers import cloud_toml, wait_gateway, wait_nbd
from daemon_helpers import ARCHIP, Daemon

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
UI_TOML = cloud_toml("identity", "compute", "billing", "ui")
#: Seconds a page element may take to appear (pages answer in milliseconds; a loaded
#: 2-core machine and a TCG guest need more).
WAIT = 60.0


def need_browser() -> None:
    """Skip without Debian's chromium + chromium-driver (scripts/install.sh installs them)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium/chromium-driver are not installed (bash scripts/install.sh)")


@dataclass
class UiCloud:
    """The daemon, the API server's URL, users' passwords."""

    d: Daemon
    url: str
    passwords: dict[str, str]

    def add_user(self, name: str) -> str:
        """`archip user add NAME --password-stdin`; the password."""
        pw = f"{name}-pass-{os.getpid()}"
        p = subprocess.run([*ARCHIP, "--data-dir", str(self.d.data_dir), "user", "add", name,
                            "--password-stdin"], input=pw + "\n", capture_output=True, text=True,
                           timeout=90)
        assert p.returncode == 0, p.stderr
        self.passwords[name] = pw
        return pw


@pytest.fixture(scope="module")
def ui_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiCloud]:
    """A started daemon with nbdkit and the API server; users alice and bob."""
    from compute_helpers import kill_qemus

    need_browser()
    data = tmp_path_factory.mktemp("ui") / "data"
    data.mkdir()
    (data / "archipelago.toml").write_text(UI_TOML)
    d = Daemon(data)
    d.archip("daemon", "start", "--gateway", "--json", check=True)
    try:
        url = wait_gateway(d)
        wait_nbd(data / "nbd.sock")
        cloud = UiCloud(d, url, {})
        cloud.add_user("alice")
        cloud.add_user("bob")
        d.archip("flavor", "create", "tiny", "--vcpus", "1", "--ram", "256", "--disk", "1",
                 check=True)
        d.archip("billing", "credit", "alice", "100", check=True)
        yield cloud
    finally:
        try:
            d.stop()
        finally:
            kill_qemus(data)


class Browser:
    """A headless Chromium session with helpers for the UI's conventions."""

    def __init__(self, base: str, downloads: Path, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
            opts.add_argument(a)
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.base, self.downloads, self.shots = base, downloads, shots

    def get(self, path: str) -> None:
        """Open a page of the UI."""
        self.driver.get(self.base + path)

    def find(self, css: str) -> Any:
        """The element matching ``css`` once it is there."""
        from selenium.webdriver.common.by import By

        return self.until(lambda d: d.find_element(By.CSS_SELECTOR, css))

    def until(self, cond: Callable[[Any], Any], timeout: float = WAIT) -> Any:
        """WebDriverWait on a condition (polls the page; no fixed sleeps)."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, ignored_exceptions=(Exception,)).until(cond)

    def nav(self, text: str) -> None:
        """Click the navigation link whose text is ``text``."""
        from selenium.webdriver.common.by import By

        self.until(lambda d: d.find_element(By.CSS_SELECTOR, "nav[aria-label=Main]")
                   .find_element(By.LINK_TEXT, text)).click()

    def fill(self, css: str, value: str) -> None:
        """Type into a field."""
        el = self.find(css)
        el.clear()
        el.send_keys(value)

    def submit_form_of(self, css: str) -> None:
        """Press the submit button of the form holding ``css``."""
        from selenium.webdriver.common.by import By

        self.find(css).find_element(By.XPATH, "./ancestor::form").find_element(
            By.CSS_SELECTOR, "button[type=submit]").click()

    def login(self, user: str, password: str) -> None:
        """The login form: inputs username, password and its one submit button."""
        from selenium.webdriver.common.by import By

        self.get("/ui/login")
        self.fill("input[name=username]", user)
        self.fill("input[name=password]", password)
        buttons = self.driver.find_elements(By.CSS_SELECTOR, "main form button, main form input[type=submit]")
        assert len(buttons) == 1
        buttons[0].click()
        self.find("nav[aria-label=Main]")

    def logout(self) -> None:
        """The Log out button; back at the login page."""
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
        self.find("input[name=username]")

    def text(self) -> str:
        """The visible text of the page."""
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def no_alert(self) -> None:
        """No JavaScript alert is open (an injected script did not run)."""
        from selenium.common.exceptions import NoAlertPresentException

        try:
            self.driver.switch_to.alert.accept()
        except NoAlertPresentException:
            return
        raise AssertionError("a JavaScript alert opened: a name was run as HTML")

    def unlabeled(self) -> list[str]:
        """Form controls of the page without a label (for=, wrapping label or aria-label)."""
        return list(self.driver.execute_script("""
            return Array.from(document.querySelectorAll('input, select, textarea'))
              .filter(e => e.type !== 'hidden' && !e.closest('label') && !e.getAttribute('aria-label')
                      && !(e.id && document.querySelector('label[for="' + e.id + '"]')))
              .map(e => e.outerHTML);"""))

    def shot(self, name: str) -> Path:
        """A PNG of the whole page (width of the window, height of the content); every page
        shot is also checked for unlabeled form controls (accessibility)."""
        assert self.unlabeled() == [], (name, self.unlabeled())
        # nothing the page needs is refused (CSP) or missing (404s of its own resources)
        problems = [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"
                    and not ("/hashmap?" in e["message"] and "(Conflict)" in e["message"])]
        # (a 409 to a hashmap PUT is the protocol: it lists the blocks to send)
        assert problems == [], (name, problems)
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        w = self.driver.get_window_size()["width"]
        self.driver.set_window_size(w, max(600, min(int(height) + 140, 3000)))
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(w, 900)
        return path

    def wait_download(self, name: str, size: int, timeout: float = WAIT) -> Path:
        """The downloaded file once complete (no .crdownload left, all bytes there)."""
        path = self.downloads / name
        deadline = time.monotonic() + timeout
        while not (path.is_file() and path.stat().st_size == size
                   and not list(self.downloads.glob("*.crdownload"))):
            if time.monotonic() > deadline:
                raise AssertionError(f"download of {name} did not finish: "
                                     f"{sorted(p.name for p in self.downloads.iterdir())}")
            time.sleep(0.1)
        return path

    def close(self) -> None:
        """Quit the browser."""
        self.driver.quit()


@pytest.fixture
def browser(ui_cloud: UiCloud, tmp_path: Path) -> Iterator[Browser]:
    """A fresh headless Chromium (own cookies and downloads) per test."""
    shots = Path(os.environ.get("ARCHIPELAGO_UI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    b = Browser(ui_cloud.url, downloads, shots)
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(downloads, ignore_errors=True)
