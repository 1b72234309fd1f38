"""The course widgets work in a real JupyterLab, driven by headless Chromium (marker `e2e`).

One JupyterLab server (tiny profile, a temporary POET_RUNS_DIR) serves the repository root; for
each widget notebook the test opens it, runs all cells from the Run menu, checks that every
widget rendered, uses the widget as a student would and checks what it changed. Screenshots go
to the pytest tmp dir and to runs/e2e/ (git-ignored). Needs Debian's `chromium` and the
`playwright` pip package (never `playwright install`); see tests/e2e/INSTALL.md. Without
them the tests skip and say why.
"""

import csv
import re
import shutil
import time
from pathlib import Path

import pytest
from e2e import lab

ROOT = Path(__file__).resolve().parent.parent
PLAYGROUND = "notebooks/03_decoding_and_beam_search.ipynb"
RATER = "notebooks/09_human_preference.ipynb"
SHOTS_COPY = ROOT / "runs" / "e2e"
RATER_NAME = "e2e-rater"
A_BUTTON = re.compile(r"^\s*A( is better)?\s*$")  # utils/prefer/rater.py labels it "A is better"
VIEWPORT = {"width": 1400, "height": 1000}

# 480 s: a notebook can take ~3 minutes in JupyterLab on 2 busy cores, plus ~20 s of startup.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory):
    """A JupyterLab server on the repository root plus a headless Chromium; both torn down."""
    reason = lab.missing_requirement()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    work = tmp_path_factory.mktemp("jupyterlab")
    runs = work / "poet-runs"
    shots = tmp_path_factory.mktemp("e2e-screenshots")
    shutil.rmtree(SHOTS_COPY, ignore_errors=True)  # only this run's screenshots stay there
    server = lab.start_lab(ROOT, work, {"POET_PROFILE": "tiny", "POET_RUNS_DIR": str(runs)})
    try:
        with sync_playwright() as playwright:
            browser = lab.launch_browser(playwright)
            try:
                yield {"server": server, "browser": browser, "runs": runs,
                       "shots": [shots, SHOTS_COPY]}
            finally:
                browser.close()
    finally:
        lab.stop_lab(server)
        print(f"screenshots: {shots} and {SHOTS_COPY}")


def _open_and_run(lab_env, relpath, name):
    """Open a notebook in a new page, Run All Cells, check errors and widgets; return the page."""
    if not (ROOT / relpath).exists():
        pytest.skip(f"{relpath} does not exist yet")
    page = lab_env["browser"].new_page(viewport=VIEWPORT)
    start = time.monotonic()
    lab.open_notebook(page, lab_env["server"], relpath)
    lab.hide_left_sidebar(page)
    ran = lab.run_all_cells(page)
    print(f"{relpath}: opened in {time.monotonic() - start - ran:.0f} s, ran in {ran:.0f} s")
    errors = lab.cell_errors(page)
    if errors:
        lab.save_screenshot(page, f"{name}-error", lab_env["shots"])
    assert errors == [], errors[0][-2000:] if errors else ""
    return page


def _widget(page, button_text):
    """(output area, button) of the widget with that button; fails with why it did not render."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    area, button = lab.widget_output_area(page, button_text)
    try:
        button.wait_for(timeout=30_000)
    except PlaywrightTimeout:
        raise AssertionError(f"no {button_text} button; widget problems: "
                             f"{lab.widget_problems(page)}") from None
    assert lab.widget_problems(page) == []
    return area, button


def _screenshot(lab_env, page, area, name):
    """Screenshots of the whole window (widget in view) and of the widget's output area."""
    area.scroll_into_view_if_needed()
    lab.save_screenshot(page, f"{name}-page", lab_env["shots"])
    lab.save_screenshot(area, f"{name}-widget", lab_env["shots"])


def _csv_rows(path):
    """The data rows of a preferences CSV (an absent file has none)."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_playground_generates_in_jupyterlab(lab_env):
    page = _open_and_run(lab_env, PLAYGROUND, "03-playground")
    try:
        area, generate = _widget(page, "Generate")
        output = area.locator(".widget-output").last
        _screenshot(lab_env, page, area, "03-playground-before")

        # Fewer new tokens (two steps left): the output must show the value the slider sent.
        max_new_tokens = lab.nudge_slider(lab.slider(area, "max_new_tokens"), -2)
        time.sleep(0.5)  # the new slider value reaches the kernel before the click
        before = output.inner_text()
        generate.click()
        # The widget clears its output first; wait for the printed run, or an error.
        shown = lab.wait_text_change(
            output, before, timeout_s=90, until=lambda t: "max_new_tokens=" in t or "error:" in t
        )
        _screenshot(lab_env, page, area, "03-playground-after")
        assert f"max_new_tokens={max_new_tokens}" in shown
        assert area.locator("textarea").first.input_value() in shown  # prompt + continuation
        assert "error:" not in shown
    finally:
        lab_env["server"].shutdown_kernels()
        page.close()
    assert lab_env["server"].saved_files() == []  # the committed notebook stays output-free


def test_rater_records_a_click_in_jupyterlab(lab_env):
    page = _open_and_run(lab_env, RATER, "09-rater")
    path = lab_env["runs"] / "preferences.csv"
    try:
        area, button_a = _widget(page, A_BUTTON)
        _screenshot(lab_env, page, area, "09-rater-before")
        rows_before = _csv_rows(path)

        # No name yet: the rater refuses, says why, and writes nothing.
        before = area.inner_text()
        button_a.click()
        refused = lab.wait_text_change(area, before, until=lambda t: "type your name" in t or "rror" in t)
        assert "type your name" in refused
        assert _csv_rows(path) == rows_before

        area.locator(".widget-text input").first.fill(RATER_NAME)
        time.sleep(0.5)  # the typed name reaches the kernel before the click
        button_a.click()
        # The widget prints "Saved" and then draws the next pair: wait for both.
        saved = lab.wait_text_change(area, refused,
                                     until=lambda t: ("Saved" in t and "pair 2 of" in t) or "rror" in t)
        _screenshot(lab_env, page, area, "09-rater-after")
        assert "Saved: pair 1 (a)." in saved
        assert "pair 2 of" in saved
        rows = _csv_rows(path)
        assert len(rows) == len(rows_before) + 1
        assert (rows[-1]["rater"], rows[-1]["choice"]) == (RATER_NAME, "a")
        assert rows[-1]["winner"] == rows[-1]["system_a"]
    finally:
        lab_env["server"].shutdown_kernels()
        page.close()
    assert lab_env["server"].saved_files() == []  # the committed notebook stays output-free
