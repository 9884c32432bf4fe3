"""The HTML report in a real headless Chromium: no console errors, the plots decode, and
picking another unit recolours the text; and pages made from hostile texts (markup, a
commented-out script, line separators, NUL, surrogates) show the text literally, run the
page's own script and nothing else.

Without Chromium, chromedriver or selenium these tests skip here and fail under CI=true."""

import re
import shutil

import pytest

from rnnkit import diagnostics as dg

from . import needs
from .diag_standin import SAMPLE_TEXT, TinyCharLM

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")

# a character outside the Basic Multilingual Plane: one code point, two UTF-16 units in JS
TEXT = SAMPLE_TEXT + "# done \U0001F600\n"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = needs.module("selenium.webdriver", "pip install selenium; the dev extra has it")
    if CHROMIUM is None or DRIVER is None:
        needs.missing(f"chromium ({CHROMIUM or 'not found'}) and chromedriver ({DRIVER or 'not found'}) are needed "
                      f"(apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def _open(driver, path):
    """Load ``path``; returns the console messages of warning level and above."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.as_uri())
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    model = TinyCharLM(TEXT, hidden=8)
    metrics = [{"step": s, "train_bpc": 4 - s / 40, "val_bpc": 4.2 - s / 45} for s in range(0, 100, 10)]
    path = dg.write_report(tmp / "report.html", model, metrics, TEXT,
                           config=dg.ReportConfig(grad_window=40, grad_batch=3))
    browser.console_errors = _open(browser, path)
    return browser


def _colours(driver):
    return driver.execute_script("return Array.from(document.querySelectorAll('#text span'))"
                                 ".map(s => s.style.backgroundColor);")


def _pick_unit(driver, unit: int) -> None:
    driver.execute_script("const n = document.getElementById('unit-num'); n.value = arguments[0];"
                          "n.dispatchEvent(new Event('change'));", unit)


def test_report_loads_without_console_errors(page):
    assert page.console_errors == []
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
    _pick_unit(page, (current + 1) % 8)
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


def test_a_report_without_text_loads_and_its_gradient_flow_numbers_parse(browser, tmp_path):
    """The page of a model without text (a fit, task or seq2seq run): no page script, the
    plots decode, and the embedded gradient-flow numbers are the JSON the report computed."""
    import json

    import torch

    import rnnkit

    torch.manual_seed(0)
    layer = rnnkit.LSTM(3, 5)
    x = torch.randn(7, 4, 3)
    probe = dg.Probe(layer, loss=lambda m: m(x)[0][-1].pow(2).sum(), what="a random batch </script><b>")
    path = dg.write_report(tmp_path / "report.html", None, [{"step": s, "train_loss": 1 / s} for s in range(1, 9)],
                           probe=probe)
    assert _open(browser, path) == []
    sizes = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
    assert len(sizes) == 3 and all(c and w > 100 for c, w in sizes)  # curves, gradient flow, gate saturation
    numbers = browser.execute_script("return JSON.parse(document.getElementById('gradflow-data').textContent)")
    page = path.read_text(encoding="utf-8")
    want = json.loads(re.search(r'id="gradflow-data">(.*?)</script>', page, re.S).group(1))
    assert numbers == want and len(numbers["grad_norms"]["lstm.l0"]) == 7
    assert numbers["measured_on"] == "a random batch </script><b>"
    assert browser.execute_script("return document.scripts.length") == 1


# -- hostile texts ---------------------------------------------------------------------------
#: each sets window.__injected if the page ever runs it as script
HOSTILE = {
    # "<!--" then "<script>" inside a script element: the HTML parser's double-escaped state,
    # which swallowed the page's own script (the report was blank) while only "</" was escaped
    "comment_then_script": "html = '<!--<script>'  # a commented-out script\nx = 1\n",
    "comment_script_payload": "<!--<script>window.__injected = 'comment'</script>-->\n",
    "closing_script_tag": "s = '</script><script>window.__injected = \"close\"</script>'\n",
    "img_onerror": "<img src=x onerror=\"window.__injected = 'img'\">&lt;&amp;\n",
    "line_and_paragraph_separators": "a = 1\u2028b = 2\u2029window.__injected = 'js'\n",
    "nul": "before\x00after = '\x00'\n",
    # no UTF-8 file holds these (the report command's reader refuses such bytes, see
    # test_diagnostics); a Python string can: each becomes U+FFFD, one character for one
    "surrogates": "lone \ud800 and the halves \ud83d\ude00 of a pair; low \udc80\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_text_is_shown_literally_and_only_the_page_script_runs(browser, tmp_path, name):
    text = SAMPLE_TEXT + HOSTILE[name] + "# end\n"
    model = TinyCharLM(text, hidden=6, layers=1)
    path = dg.write_report(tmp_path / "report.html", model, [], text,
                           config=dg.ReportConfig(grad_window=30, grad_batch=2))
    assert _open(browser, path) == []
    assert browser.execute_script("return typeof window.__injected") == "undefined"
    # nothing of the text became markup: the page's two plots and three scripts (the activations'
    # and the gradient flow's JSON, the page's own), and no more
    assert browser.execute_script("return [document.images.length, document.scripts.length]") == [2, 3]
    shown = re.sub("[\ud800-\udfff]", "\ufffd", text)
    assert browser.execute_script("return document.getElementById('text').textContent") == shown
    assert browser.execute_script("return document.querySelectorAll('#text span').length") == len(text)
    # the page's own script ran and still works: choosing another unit recolours the text
    before = _colours(browser)
    assert len(set(before)) > 3
    _pick_unit(browser, (int(browser.find_element("id", "unit-num").get_attribute("value")) + 1) % 6)
    assert sum(a != b for a, b in zip(before, _colours(browser))) > len(text) // 4
