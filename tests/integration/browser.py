"""Headless Chromium, driven through Debian's chromium-driver with Selenium, for the status page tests.

Nothing leaves 127.0.0.1: every host name but 127.0.0.1 resolves to nothing (--host-resolver-rules) and
the browser's own background traffic (updates, sync, safe browsing) is off. With CI=true a missing
chromium, chromium-driver or selenium fails the test instead of skipping it (.ci/run installs them).
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

from ..unavailable import unavailable

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "status-page"
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
DESKTOP = (1280, 900)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking", "--disable-sync",
         "--disable-component-update", "--disable-default-apps", "--disable-domain-reliability",
         "--disable-client-side-phishing-detection", "--disable-features=Translate,OptimizationHints,MediaRouter",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--lang=en-US", "--hide-scrollbars",
         "--force-color-profile=srgb", "--font-render-hinting=none")


def _missing(why: str):
    unavailable(f"no browser for the status page tests: {why}")


def chromium(user: str, password: str):
    """A headless Chromium that sends these basic-auth credentials with every request."""
    binary = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _missing("install chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {credentials}"}})
    return driver


def as_phone(driver) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)


def as_desktop(driver) -> None:
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def screenshot(driver, name: str, *, whole: bool = True) -> Path:
    """The page as test-output/status-page/<name>.png: all of it, or (`whole=False`) the screen's worth a
    person sees first."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": whole})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def fits_the_width(driver) -> bool:
    """No sideways scrolling: the page is no wider than the screen."""
    return driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
