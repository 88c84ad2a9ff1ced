"""Open rendered report pages in real headless Chromium (Debian's chromium + chromium-driver,
driven by selenium) and report what a reader would see broken: images that do not load,
notebook errors, formulas that are not drawn, and every request the page made that did not
go to a ``file://`` URL (from Chromium's DevTools network log)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1024")

_PAGE_STATE = r"""
const imgs = Array.from(document.images);
return {
  ready: document.readyState,
  title: document.title,
  images: imgs.length,
  broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 60)),
  error_outputs: document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]').length,
  text: document.body ? document.body.innerText : "",
  links: Array.from(document.querySelectorAll('a[href$=".html"]')).map(a => a.getAttribute('href')),
  math: Array.from(document.querySelectorAll('math')).length,
  math_undrawn: Array.from(document.querySelectorAll('math')).filter(m => {
    const r = m.getBoundingClientRect();
    return !(m instanceof MathMLElement) || !(r.width > 0 && r.height > 0);
  }).map(m => m.textContent.slice(0, 60)),
  tex_unrendered: Array.from(document.querySelectorAll('.tex-unrendered')).map(e => e.textContent.slice(0, 60)),
  raw_tex: (() => {
    const out = [];
    const walk = document.createTreeWalker(document.body || document, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.parentElement && n.parentElement.closest('math, code, pre, script, style') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      const m = n.textContent.match(/\\[A-Za-z]{2,}|\$\$|\$[^$\n]*[\\^_{][^$\n]*\$/);
      if (m) out.push(m[0].slice(0, 60));
    }
    return out;
  })(),
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
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # DevTools events: every request a page makes
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_bin))


def _requests(driver) -> list[str]:
    """URLs of the requests since the last call (Network.requestWillBeSent in the performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def inspect_pages(files: list[Path]) -> dict[str, dict]:
    """Load every page and return, per file name, its state after load (images, broken
    images, notebook error/stderr outputs, visible text, links to other pages, ``<math>``
    elements and those not drawn as MathML, formulas left as TeX, and ``network``: every
    requested URL that is not ``file://`` or ``data:``)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver()
    try:
        out = {}
        _requests(driver)
        for f in files:
            driver.get(f.resolve().as_uri())
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
            out[f.name] = driver.execute_script(_PAGE_STATE)
            out[f.name]["network"] = [u for u in _requests(driver) if not u.startswith(("file://", "data:"))]
        return out
    finally:
        driver.quit()
