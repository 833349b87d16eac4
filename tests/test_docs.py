"""The built documentation, opened in headless Chromium: the pages render and log no console error.

Build the site first (``.ci/run`` does)::

    sphinx-build -W -b html docs docs/_build/html

The tests skip, saying why, when the site is not built, or when Chromium, its
driver or selenium is missing; ``KGESTIMATOR_REQUIRE_DOCS=1`` (set by
``.ci/run``) turns those skips into failures so that CI cannot pass without
running them. ``KGESTIMATOR_DOCS_SCREENSHOTS=DIR`` keeps the screenshots.
"""

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("KGESTIMATOR_DOCS_HTML", ROOT / "docs" / "_build" / "html"))
CHROMIUM = os.environ.get("KGESTIMATOR_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("KGESTIMATOR_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
REQUIRED = os.environ.get("KGESTIMATOR_REQUIRE_DOCS") == "1"


def _missing():
    """Why the tests cannot run here, or None."""
    if not (HTML / "index.html").is_file():
        return f"the documentation is not built ({HTML / 'index.html'} is missing): run sphinx-build -b html docs {HTML}"
    if not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()):
        return f"no Chromium at {CHROMIUM} with its driver at {DRIVER} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'kgestimator[docs]')"
    return None


@pytest.fixture(scope="module")
def site():
    """The built pages served over HTTP on localhost (file:// pages may not load their fonts)."""
    reason = _missing()
    if reason:
        if REQUIRED:
            pytest.fail(f"KGESTIMATOR_REQUIRE_DOCS=1 but {reason}")
        pytest.skip(reason)
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(site):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(browser, site, page, tmp_path):
    """Load ``page``, wait for it, screenshot it; returns the console errors it logged."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(f"{site}/{page}")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    folder = Path(os.environ.get("KGESTIMATOR_DOCS_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / (page.replace("/", "_").replace(".html", "") + ".png")
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    # a blank page compresses to a few KB; a page of text and figures to far more
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000, f"{shot}: {len(data)} bytes"
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def _text(browser, selector):
    return "\n".join(e.text for e in browser.find_elements("css selector", selector))


def test_index_renders(browser, site, tmp_path):
    errors = _open(browser, site, "index.html", tmp_path)
    assert errors == []
    assert "kgestimator" in browser.title
    assert "KGEmbedder" in _text(browser, "article")
    links = {e.get_attribute("href").rsplit("/", 1)[-1] for e in browser.find_elements("css selector", "a")
             if e.get_attribute("href")}
    assert {"api.html", "user_guide.html", "algorithms.html", "benchmarks.html"} <= links


def test_kgembedder_api_page_renders(browser, site, tmp_path):
    errors = _open(browser, site, "generated/kgestimator.KGEmbedder.html", tmp_path)
    assert errors == []
    signature = _text(browser, "dt#kgestimator\\.KGEmbedder")
    assert "KGEmbedder" in signature and "mutation_ratio" in signature
    body = _text(browser, "article")
    assert "Parameters" in body and "Attributes" in body
    # the methods are documented on the page, each with its anchor
    for method in ("fit", "score", "predict_topk", "save", "load"):
        assert browser.find_elements("css selector", f"dt#kgestimator\\.KGEmbedder\\.{method}"), method


def test_gallery_example_renders_with_its_figure(browser, site, tmp_path):
    errors = _open(browser, site, "auto_examples/plot_compare_models.html", tmp_path)
    assert errors == []
    assert "Comparing scoring models" in _text(browser, "h1")
    assert "MRR" in _text(browser, "div.highlight, pre")  # the printed output of the run
    images = browser.find_elements("css selector", "img.sphx-glr-single-img, img.sphx-glr-multi-img")
    assert images, "no figure in the example's page"
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100
               for img in images)


def test_algorithms_page_renders_its_equations(browser, site, tmp_path):
    errors = _open(browser, site, "algorithms.html", tmp_path)
    assert errors == []
    # MathJax replaces the TeX of each equation with its own elements once it has typeset
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(
        lambda d: d.find_elements("css selector", ".MathJax, .MathJax_Display, mjx-container"))
    assert "TransE" in _text(browser, "article")
