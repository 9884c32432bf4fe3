"""The HTML report in a real headless Chromium: no console errors, the plots decode, and
picking another unit recolours the text."""

import shutil

import pytest

from rnnkit import diagnostics as dg

from .diag_standin import SAMPLE_TEXT, TinyCharLM

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="chromium/chromedriver not found (apt-get install chromium chromium-driver)")

# a character outside the Basic Multilingual Plane: one code point, two UTF-16 units in JS
TEXT = SAMPLE_TEXT + "# done \U0001F600\n"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("browser")
    model = TinyCharLM(TEXT, hidden=8)
    metrics = [{"step": s, "train_bpc": 4 - s / 40, "val_bpc": 4.2 - s / 45} for s in range(0, 100, 10)]
    path = dg.write_report(tmp / "report.html", model, metrics, TEXT,
                           config=dg.ReportConfig(grad_window=40, grad_batch=3))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp / 'profile'}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        driver.get(path.as_uri())
        yield driver
    finally:
        driver.quit()


def _colours(driver):
    return driver.execute_script("return Array.from(document.querySelectorAll('#text span'))"
                                 ".map(s => s.style.backgroundColor);")


def test_report_loads_without_console_errors(page):
    errors = [e for e in page.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    assert page.execute_script("return document.querySelectorAll('#text span').length") == len(TEXT)
    assert page.execute_script("return document.getElementById('text').textContent") == TEXT


def test_report_images_decode(page):
    sizes = page.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth,"
                                " i.naturalHeight]);")
    assert len(sizes) == 3  # curves, gradient flow, gate saturation
    for complete, w, h in sizes:
        assert complete and w > 100 and h > 100


def test_picking_another_unit_recolours_the_text(page):
    from selenium.webdriver.support.ui import Select

    before = _colours(page)
    assert len(set(before)) > 5  # the text is coloured, not uniform
    layer = Select(page.find_element("id", "layer"))
    layer.select_by_index((int(layer.first_selected_option.get_attribute("value")) + 1) % 4)
    after_layer = _colours(page)
    assert sum(a != b for a, b in zip(before, after_layer)) > len(TEXT) // 4
    unit = page.find_element("id", "unit-num")
    current = int(unit.get_attribute("value"))
    page.execute_script("const n = document.getElementById('unit-num'); n.value = arguments[0];"
                        "n.dispatchEvent(new Event('change'));", (current + 1) % 8)
    after_unit = _colours(page)
    assert sum(a != b for a, b in zip(after_layer, after_unit)) > len(TEXT) // 4
    label = page.find_element("id", "unit-label").text
    assert f"unit {(current + 1) % 8}" in label


def test_clicking_a_correlated_unit_row_selects_it(page):
    rows = page.find_elements("css selector", "tr.pick")
    assert rows
    row = rows[-1]
    block, unit = row.get_attribute("data-block"), row.get_attribute("data-unit")
    page.execute_script("arguments[0].scrollIntoView();", row)
    row.click()
    assert page.find_element("id", "layer").get_attribute("value") == block
    assert page.find_element("id", "unit").get_attribute("value") == unit
