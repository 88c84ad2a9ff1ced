"""Open rendered report pages in real headless Chromium (Debian's chromium + chromium-driver,
driven by selenium) and report what a reader would see broken."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1024")

_PAGE_STATE = """
const imgs = Array.from(document.images);
return {
  ready: document.readyState,
  title: document.title,
  images: imgs.length,
  broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 60)),
  error_outputs: document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]').length,
  text: document.body ? document.body.innerText : "",
  links: Array.from(document.querySelectorAll('a[href$=".html"]')).map(a => a.getAttribute('href')),
};
"""


def chromium_driver():
    """A headless Chromium webdriver, or ``pytest.skip`` naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = shutil.which("chromium")
    driver_bin = shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        pytest.skip("Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_bin))


def inspect_pages(files: list[Path]) -> dict[str, dict]:
    """Load every page and return, per file name, its state after load (images, broken
    images, notebook error/stderr outputs, visible text, links to other pages)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver()
    try:
        out = {}
        for f in files:
            driver.get(f.resolve().as_uri())
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
            out[f.name] = driver.execute_script(_PAGE_STATE)
        return out
    finally:
        driver.quit()
