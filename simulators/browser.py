"""Headless Chromium for the browser tests and the dashboard benchmark: Debian's `chromium` driven through its
`chromedriver` (packages chromium and chromium-driver, installed by `make test`), never a downloaded browser."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


class BrowserMissing(RuntimeError):
    """Chromium or its driver is not installed."""


def _first(paths: tuple[str, ...], name: str) -> str:
    for path in paths:
        if Path(path).exists():
            return path
    found = shutil.which(name)
    if found:
        return found
    raise BrowserMissing(f"{name} not found: install Debian's chromium and chromium-driver (make test does)")


def chromium(width: int = 1920, height: int = 1080, lang: str = "en-US") -> Any:
    """A new headless Chromium session (selenium WebDriver) with a fresh profile; `quit()` it when done, which
    also removes the profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    class Chromium(webdriver.Chrome):
        profile = ""

        def quit(self) -> None:
            try:
                super().quit()
            finally:
                shutil.rmtree(self.profile, ignore_errors=True)

    profile = tempfile.mkdtemp(prefix="shopfloor-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", f"--lang={lang}"):
        options.add_argument(arg)
    driver = Chromium(service=Service(executable_path=_first(CHROMEDRIVER, "chromedriver")), options=options)
    driver.profile = profile
    driver.set_page_load_timeout(30)
    # the window size includes the browser's frame: pin the page itself to width x height, a TV's 1080p
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return driver
