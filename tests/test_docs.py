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


def _documented():
    """The names listed in docs/api.rst, as written there (``KGEmbedder``, ``models.TransE``)."""
    lines = (ROOT / "docs" / "api.rst").read_text().splitlines()
    names, listing = set(), False
    for line in lines:
        if line.startswith(".. autosummary::"):
            listing = True
        elif listing and line.startswith("   ") and not line.strip().startswith(":"):
            names.add(line.strip())
        elif listing and line.strip() and not line.startswith("   "):
            listing = False
    return names


def _defined_in(module):
    """The public functions and classes a module defines itself (not the ones it imports)."""
    import inspect

    return {name for name, obj in vars(module).items() if not name.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__}


def test_api_reference_lists_every_public_name():
    import kgestimator
    from kgestimator import (calibration, callbacks, data, dataset_registry, features, losses, metrics,
                             model_selection, models, mutation, plotting, samplers, trackers)

    documented = _documented()
    top = set(kgestimator.__all__) - {"__version__"}
    expected = set(top)
    for module in (data, models, samplers, model_selection, dataset_registry, callbacks, trackers, features,
                   calibration):
        expected |= {f"{module.__name__.split('.')[-1]}.{name}" for name in module.__all__ if name not in top}
    for module in (plotting, metrics, mutation, losses):
        expected |= {f"{module.__name__.split('.')[-1]}.{name}" for name in _defined_in(module) if name not in top}
    expected.add("cli.main")
    # names a module re-exports under the package itself are documented once, at the top
    expected = {name for name in expected if name.split(".")[-1] not in top or "." not in name}
    assert sorted(expected - documented) == []
    # and nothing listed there is gone from the package
    for name in documented:
        obj = kgestimator
        for part in name.split("."):
            obj = getattr(obj, part) if hasattr(obj, part) else __import__(f"{obj.__name__}.{part}", fromlist=["_"])
        assert obj is not None


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
        lambda d: d.find_elements("css selector", ".MathJax, .MathJax_Display, .MathJax_CHTML, mjx-container"))
    # fonts load while MathJax typesets, after the page itself is complete: its errors come later
    browser.set_script_timeout(30)
    browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "if (window.MathJax && MathJax.Hub) { MathJax.Hub.Queue(function () { done(true); }); }"
        "else if (window.MathJax && MathJax.startup) { MathJax.startup.promise.then(function () { done(true); }); }"
        "else { done(false); }")
    assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []
    assert "TransE" in _text(browser, "article")
