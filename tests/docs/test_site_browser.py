"""The built documentation site, opened in headless Chromium: the pages render what they promise.

Reads the site that ``sphinx-build -W -b html docs docs/_build/html`` wrote (or the folder named
by ``LINALG_PC_DOCS_HTML``) and checks, as a reader's browser shows them, the home page (title,
a highlighted code block, the table of contents), one API page (the summary table and a
function's rendered docstring) and the executed notebook page (code cells, figures that loaded
with a real size, no error output). Skipped, with the reason, where the site is not built or
selenium, Chromium or ChromeDriver is missing (Debian: ``apt-get install chromium
chromium-driver``; ``pip install -e ".[docs]"`` brings selenium). With
``LINALG_PC_DOCS_SCREENSHOTS=DIR`` the test saves screenshots of the pages it opened there.
"""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SITE = pathlib.Path(os.environ.get("LINALG_PC_DOCS_HTML", ROOT / "docs" / "_build" / "html"))
# The flags Chromium needs on a machine without a display or network, as root.
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--window-size=1400,1000")


def _find(*names: str) -> str | None:
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (SITE / "index.html").exists():
        pytest.skip(f"the documentation site is not built ({SITE}/index.html missing): run "
                    "sphinx-build -W -b html docs docs/_build/html")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -e '.[docs]')")
    chrome = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if chrome is None or driver_path is None:
        pytest.skip("no Chromium/ChromeDriver (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _open(browser, rel: str, shot: str | None = None):
    browser.get((SITE / rel).as_uri())
    browser.execute_script("return document.readyState")
    out = os.environ.get("LINALG_PC_DOCS_SCREENSHOTS")
    if out and shot:
        pathlib.Path(out).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(pathlib.Path(out) / shot))
    return browser


def _css(browser, selector):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, selector)


def test_home_page_renders(browser):
    _open(browser, "index.html", "home.png")
    assert "linalg_pc" in browser.title
    main = _css(browser, "main, article, div.bd-article")[0].text
    assert "low-precision QR" in main
    code = _css(browser, "div.highlight pre")
    assert code and "lpc.qr" in " ".join(c.text for c in code)
    toc = " ".join(a.text for a in _css(browser, "div.toctree-wrapper a"))
    for entry in ("Getting started", "User guide", "API reference", "Changelog"):
        assert entry in toc
    assert "Traceback" not in main


def test_api_page_renders_docstrings(browser):
    _open(browser, "api/qr_methods.html", "api.png")
    summary = _css(browser, "table.autosummary")
    assert summary and "cholqr2" in summary[0].text
    entry = _css(browser, 'dt[id="linalg_pc.qr_methods.qr"]')
    assert entry, "lpc.qr has no rendered entry"
    body = entry[0].find_element("xpath", "following-sibling::dd[1]").text
    assert "Parameters" in body and "Returns" in body
    assert _css(browser, "dd div.highlight pre"), "no rendered docstring example"


def test_notebook_page_renders_outputs(browser):
    _open(browser, "examples/bf16_orthogonality.html")
    cells = _css(browser, "div.cell")
    assert len(cells) >= 5
    assert _css(browser, "div.cell_input pre"), "no code cell"
    images = _css(browser, "div.cell_output img")
    assert len(images) >= 3, "the notebook's figures are missing"
    for img in images:
        w = browser.execute_script("return arguments[0].naturalWidth", img)
        assert w and w > 100, "a figure did not load"
    outputs = " ".join(o.text for o in _css(browser, "div.cell_output"))
    assert "Error" not in outputs and "Traceback" not in outputs
    assert not _css(browser, "div.cell_output .traceback, div.output.error")
    out = os.environ.get("LINALG_PC_DOCS_SCREENSHOTS")
    if out:  # the QR figure, scrolled into view
        qr = images[1]  # the cells draw rounding_floor, qr_orthogonality, drift in this order
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", qr)
        browser.save_screenshot(str(pathlib.Path(out) / "qr.png"))
