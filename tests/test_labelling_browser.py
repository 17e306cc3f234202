"""otrain-label in a real browser: Debian's Chromium driven by Playwright.

Playwright's own browser download cannot work everywhere (no network in CI), so the
tests point it at the system's Chromium (``apt-get install chromium``). Where no
Chromium is found the tests skip, saying so; ``.ci/run`` installs it and sets
``OTRAIN_REQUIRE_BROWSER=1``, which turns the skip into a failure.

``OTRAIN_SCREENSHOTS=folder`` saves the screenshots of the page (the ones in
``docs/labelling.md`` were made so: ``OTRAIN_SCREENSHOTS=docs python -m pytest
tests/test_labelling_browser.py``).
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ZTF, point_source, write_triplet

from otrain.labelling import make_server, open_session, serve_in_thread

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium():
    for candidate in (os.environ.get("OTRAIN_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _skip_or_fail(reason):
    if os.environ.get("OTRAIN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and OTRAIN_REQUIRE_BROWSER=1 (CI) needs the browser tests")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail('Playwright is not installed (pip install "otrain[test]")')
    executable = _chromium()
    if executable is None:
        _skip_or_fail(
            "no Chromium found (apt-get install chromium, or set OTRAIN_CHROMIUM to its path)"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _leave(page):
    """Leave the labelling page before its server stops: a fetch still under way (the
    next stamps after an undo) would otherwise fail as the server goes."""
    page.goto("about:blank")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def candidates(tmp_path):
    """Eight triplet candidates; the corrupt one sorts first by name."""
    folder = tmp_path / "candidates"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(7):
        write_triplet(
            folder / f"cand{i}.fits",
            point_source(32, flux=300.0, rng=rng),
            rng.normal(0, 1, (32, 32)),
            point_source(32, flux=150.0 * (i % 2), rng=rng),
            MAG=18.5,
            FWHM=2.4,
            RA=10.0,
            DEC=-5.0,
        )
    (folder / "aa_corrupt.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 100)
    return folder


def _serve(cutouts, out, **kwargs):
    host = kwargs.pop("host", "127.0.0.1")
    session = open_session(cutouts, out, say=lambda m: None, **kwargs)
    server, url = make_server(session, host=host)
    serve_in_thread(server)
    return server, url


def _labels(out):
    lines = (Path(out) / "labels.csv").read_text().splitlines()[1:]
    return [line.split(",")[:2] for line in lines]


def _wait_progress(page, text):
    page.wait_for_function(
        "text => document.getElementById('progress').textContent.startsWith(text)", arg=text
    )


def _wait_shown(page, name):
    """Wait until the card shows candidate ``name`` (the page draws asynchronously)."""
    page.wait_for_function(
        "name => document.querySelector('#card .name')?.textContent === name", arg=name
    )


def _save_screenshot(page, name):
    folder = os.environ.get("OTRAIN_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name))


def test_keys_label_undo_and_a_reload_resumes(page, candidates, tmp_path):
    out = tmp_path / "training"
    server, url = _serve(candidates, out, order="name")
    try:
        page.goto(url)
        # The corrupt file comes first: an error card, skipped by any key.
        page.wait_for_selector("#card.error")
        assert "cannot be read" in page.inner_text("#card")
        page.keyboard.press("r")
        _wait_shown(page, "cand0.fits")
        page.keyboard.press("r")
        _wait_shown(page, "cand1.fits")
        page.keyboard.press("b")
        _wait_shown(page, "cand2.fits")
        page.keyboard.press("s")
        _wait_shown(page, "cand3.fits")
        _wait_progress(page, "4 / 8 labelled · 1 real · 1 bogus · 2 skipped")
        assert _labels(out) == [
            ["aa_corrupt.fits", "skip"],
            ["cand0.fits", "real"],
            ["cand1.fits", "bogus"],
            ["cand2.fits", "skip"],
        ]
        assert sorted(p.name for p in (out / "true").iterdir()) == ["cand0.fits"]
        assert sorted(p.name for p in (out / "false").iterdir()) == ["cand1.fits"]
        # Undo brings the last candidate back; the mouse works as the keys do.
        page.keyboard.press("u")
        _wait_shown(page, "cand2.fits")
        _wait_progress(page, "3 / 8")
        page.click("#btn-bogus")
        _wait_progress(page, "4 / 8")
        page.keyboard.press("r")
        _wait_progress(page, "5 / 8")
        assert _labels(out)[-3:] == [
            ["cand2.fits", "undo"],
            ["cand2.fits", "bogus"],
            ["cand3.fits", "real"],
        ]
        # A reload starts where the user stopped.
        page.reload()
        _wait_progress(page, "5 / 8 labelled · 2 real · 2 bogus · 1 skipped")
        _wait_shown(page, "cand4.fits")
        timings = page.evaluate("window.otrainTimings")
        assert timings == [] or all(t >= 0 for t in timings)
        page.keyboard.press("?")
        page.wait_for_selector("dialog#help[open]")
        page.keyboard.press("Escape")
        page.wait_for_selector("dialog#help", state="hidden")
    finally:
        _leave(page)
        server.shutdown()
        server.server_close()


def test_grid_view_files_the_marked_ones_as_the_minority(page, candidates, tmp_path):
    out = tmp_path / "training"
    server, url = _serve(candidates, out, order="name", grid_size=5)
    try:
        page.goto(url)
        page.wait_for_selector("#card")
        page.keyboard.press("g")
        page.wait_for_selector("#cells .cell")
        cells = page.locator("#cells .cell")
        assert cells.count() == 5
        assert "unreadable" in cells.nth(0).inner_text()
        cells.nth(1).click()
        cells.nth(3).click()
        cells.nth(3).click()  # a second click takes the mark back
        cells.nth(4).click()
        assert page.locator("#cells .cell.marked").count() == 2
        page.keyboard.press("Enter")
        _wait_progress(page, "5 / 8 labelled · 2 real · 2 bogus · 1 skipped")
        assert dict(_labels(out)) == {
            "aa_corrupt.fits": "skip",
            "cand0.fits": "real",
            "cand1.fits": "bogus",
            "cand2.fits": "bogus",
            "cand3.fits": "real",
        }
        # The next page: switch the classes, so that the marked one is bogus.
        page.wait_for_function("document.querySelectorAll('#cells .cell').length === 3")
        page.keyboard.press("m")
        assert page.inner_text("#minority") == "bogus"
        page.locator("#cells .cell").nth(0).click()
        page.keyboard.press("Enter")
        _wait_progress(page, "8 / 8 labelled · 4 real · 3 bogus")
        assert dict(_labels(out))["cand4.fits"] == "bogus"
        assert len(list((out / "true").iterdir())) == 4
        # Undo takes back the whole page at once.
        page.keyboard.press("u")
        _wait_progress(page, "5 / 8")
        assert len(list((out / "true").iterdir())) == 2
    finally:
        _leave(page)
        server.shutdown()
        server.server_close()


def test_a_killed_server_loses_nothing(page, candidates, tmp_path):
    out = tmp_path / "training"
    command = [
        sys.executable,
        "-m",
        "otrain.cli.label",
        "--cutouts",
        str(candidates),
        "--out",
        str(out),
        "--order",
        "name",
    ]

    def start():
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        for line in process.stdout:
            if line.startswith("open http"):
                return process, line.split()[1]
        raise AssertionError("otrain-label printed no URL")

    process, url = start()
    try:
        page.goto(url)
        page.wait_for_selector("#card.error")
        for key in "srbr":
            page.keyboard.press(key)
        _wait_progress(page, "4 / 8")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process.stdout.close()
    assert [label for _, label in _labels(out)] == ["skip", "real", "bogus", "real"]
    process, url = start()
    try:
        page.goto(url)
        _wait_progress(page, "4 / 8 labelled · 2 real · 1 bogus · 1 skipped")
        _wait_shown(page, "cand3.fits")
        assert sorted(p.name for p in (out / "true").iterdir()) == ["cand0.fits", "cand2.fits"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_a_non_loopback_host_needs_the_token(page, candidates, tmp_path):
    server, url = _serve(candidates, tmp_path / "training", host="0.0.0.0")
    try:
        port = server.server_address[1]
        response = page.goto(f"http://127.0.0.1:{port}/")
        assert response.status == 403
        token = url.split("token=")[1]
        response = page.goto(f"http://127.0.0.1:{port}/?token={token}")
        assert response.status == 200
        # The page's own requests then pass with the cookie the first answer set.
        page.wait_for_selector("#card")
        _wait_progress(page, "0 / 8")
        assert page.request.get(f"http://127.0.0.1:{port}/api/state").status == 200
    finally:
        _leave(page)
        server.shutdown()
        server.server_close()


def test_no_request_reads_outside_the_candidates(page, candidates, tmp_path):
    server, url = _serve(candidates, tmp_path / "training")
    try:
        for path in (
            "static/%2e%2e/%2e%2e/etc/passwd",
            "api/candidate/..%2f..%2fetc%2fpasswd",
            "static/..%5c..%5cpyproject.toml",
        ):
            response = page.request.get(url + path)
            assert response.status in (400, 404)
            assert b"root:" not in response.body()
    finally:
        _leave(page)
        server.shutdown()
        server.server_close()


def test_screenshot_of_real_ztf_candidates(page, tmp_path):
    if not (ZTF / "cutouts").is_dir():
        pytest.skip(f"real ZTF sample not found at {ZTF} (../shared/data is absent)")
    folder = tmp_path / "ztf"
    folder.mkdir()
    for path in sorted((ZTF / "cutouts").glob("*.fits"))[:40]:
        shutil.copy(path, folder)
    server, url = _serve(folder, tmp_path / "training", order="name", grid_size=20)
    try:
        page.set_viewport_size({"width": 900, "height": 470})
        page.goto(url)
        _wait_shown(page, "ZTF_1786104122615015005.fits")
        assert page.locator("#card img").count() == 3
        width = page.evaluate("document.querySelector('#card img').getBoundingClientRect().width")
        assert width >= 200
        assert "mag 18.03" in page.inner_text("#card")
        _save_screenshot(page, "labelling-page.png")
        page.set_viewport_size({"width": 1100, "height": 560})
        page.keyboard.press("g")
        page.wait_for_function("document.querySelectorAll('#cells .cell img').length === 60")
        page.locator("#cells .cell").nth(6).click()
        page.locator("#cells .cell").nth(13).click()
        _save_screenshot(page, "labelling-grid.png")
    finally:
        _leave(page)
        server.shutdown()
        server.server_close()
