"""Issue 15: how fast ``otrain-label`` starts and answers, and how fast a crossmatch is.

Three parts, each printing a Markdown table:

* ``startup``: ``otrain-label --cutouts C --out T`` on 10,000 candidates without a
  model, from the process start to the printed URL (target: under 3 s; no TensorFlow
  import). The candidates are hard links to the real ZTF stamps of
  ``../shared/data/ztf-sample`` (the scan reads names only, so links cost nothing).
* ``keys``: the page in headless Chromium (Debian's, driven by Playwright): the time
  from a key press to the next candidate on screen (target: under 100 ms), for a
  labeller at one key a second and for one pressing as fast as the keyboard repeats
  (one key every 50 ms); and the server's own time for one candidate's stamps and for
  one decision (fsync included).
* ``crossmatch``: 100,000 candidate positions against a 1,000,000-row catalogue
  (FITS and CSV), reading the catalogue and matching ("in seconds"); and reading the
  positions of 10,000 candidate files (the cost that grows with the candidates).

Usage::

    python benchmarks/labelling.py                    # all three, ~2 min
    python benchmarks/labelling.py --part keys
"""

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ZTF = HERE.parents[1] / "shared" / "data" / "ztf-sample" / "cutouts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def say(text):
    print(text, flush=True)


def linked_candidates(folder, n):
    """``n`` hard links (copies across file systems) to the real ZTF stamps."""
    sources = sorted(ZTF.glob("*.fits"))
    if not sources:
        sys.exit(f"no ZTF stamps at {ZTF}: this benchmark needs ../shared/data")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        target = folder / f"cand{i:06d}_{sources[i % len(sources)].name}"
        try:
            os.link(sources[i % len(sources)], target)
        except OSError:
            shutil.copyfile(sources[i % len(sources)], target)
    return folder


def start_server(cutouts, out, *extra):
    command = [
        str(Path(sys.executable).with_name("otrain-label")),
        "--cutouts",
        str(cutouts),
        "--out",
        str(out),
        *extra,
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("open http"):
            return process, line.split()[1], time.perf_counter() - start
    raise RuntimeError("otrain-label printed no URL")


def stop(process):
    process.terminate()
    process.wait(timeout=10)
    process.stdout.close()


def part_startup(work, n):
    cutouts = linked_candidates(work / "startup", n)
    rows = []
    for label in ("first start (new labels.csv)", "restart, 2,000 decisions in labels.csv"):
        times = []
        for repeat in range(3):
            out = work / ("out-startup" if "restart" in label else f"out-startup-{repeat}")
            if "restart" in label and repeat == 0:
                from otrain.labelling import LabelStore

                store = LabelStore(out, link=True)
                for i, path in enumerate(sorted(cutouts.glob("*.fits"))[:2000]):
                    store.record(str(path), "real" if i % 3 else "bogus")
            process, _, seconds = start_server(cutouts, out)
            stop(process)
            times.append(seconds)
        rows.append((label, statistics.median(times), min(times), max(times)))
    say(f"\n### start-up, {n} candidates, no model\n")
    say("| run | median (s) | min | max | target |")
    say("| --- | --- | --- | --- | --- |")
    for label, med, low, high in rows:
        verdict = "PASS" if med < 3 else "FAIL"
        say(f"| {label} | {med:.2f} | {low:.2f} | {high:.2f} | < 3 s: {verdict} |")


def _request(port, method, path, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    start = time.perf_counter()
    connection.request(
        method, path, body=None if body is None else json.dumps(body), headers=headers
    )
    data = connection.getresponse().read()
    elapsed = time.perf_counter() - start
    connection.close()
    return json.loads(data), elapsed


def part_keys(work, n_keys):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("no chromium: apt-get install chromium")
    cutouts = linked_candidates(work / "keys", 2000)
    out = work / "out-keys"
    process, url, _ = start_server(cutouts, out)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    rows = []
    try:
        # The server alone: one candidate never read before, one decision.
        queue, _ = _request(port, "GET", "/api/queue?n=400")
        ids = queue["queue"][-100:]
        read = [_request(port, "GET", f"/api/candidate/{i}")[1] * 1000 for i in ids[:50]]
        decide = [
            _request(port, "POST", "/api/label", {"decisions": [{"id": i, "label": "skip"}]})[1]
            * 1000
            for i in ids[50:]
        ]
        _request(port, "POST", "/api/undo", {"count": 50})
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            for label, pause in (("one key a second", 1.0), ("one key every 50 ms", 0.05)):
                page = browser.new_page(viewport={"width": 1100, "height": 700})
                page.goto(url)
                page.wait_for_selector("#card .stamps img")
                page.wait_for_timeout(500)
                for k in range(n_keys):
                    page.keyboard.press("rb"[k % 2])
                    time.sleep(pause)
                page.wait_for_timeout(1000)
                timings = page.evaluate("window.otrainTimings")
                rows.append((label, timings))
                page.keyboard.press("u")
                page.close()
            browser.close()
    finally:
        stop(process)
    say(f"\n### key press to next candidate on screen ({n_keys} presses each)\n")
    say("| labeller | median (ms) | 95th percentile | max | target |")
    say("| --- | --- | --- | --- | --- |")
    for label, timings in rows:
        p95 = float(np.percentile(timings, 95))
        say(
            f"| {label} | {statistics.median(timings):.1f} | {p95:.1f} | {max(timings):.1f} | "
            f"< 100 ms: {'PASS' if p95 < 100 else 'FAIL'} |"
        )
    say("\n| server alone | median (ms) | max |")
    say("| --- | --- | --- |")
    say(
        f"| one candidate never read before (SCI/REF/DIFF 63x63, 3 PNGs) | "
        f"{statistics.median(read):.1f} | {max(read):.1f} |"
    )
    say(
        f"| one decision (row appended + fsync, copy) | {statistics.median(decide):.1f} | "
        f"{max(decide):.1f} |"
    )


def part_crossmatch(work, n_candidates, n_catalogue, n_files):
    import astropy.units as u
    from astropy.table import Table

    from otrain.crossmatch import candidate_positions, match_positions, read_catalogue

    rng = np.random.default_rng(0)
    # Uniform on the sphere.
    cat_ra = rng.uniform(0, 360, n_catalogue)
    cat_dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n_catalogue)))
    table = Table({"RA": cat_ra * u.deg, "DEC": cat_dec * u.deg})
    fits_path, csv_path = work / "catalogue.fits", work / "catalogue.csv"
    table.write(fits_path, overwrite=True)
    Table({"ra": cat_ra, "dec": cat_dec}).write(csv_path, overwrite=True)
    # Half the candidates within 1 arcsec of a catalogue source, half anywhere.
    half = n_candidates // 2
    pick = rng.integers(0, n_catalogue, half)
    ra = np.concatenate(
        [
            cat_ra[pick]
            + rng.uniform(-1, 1, half) / 3600 / np.cos(np.radians(cat_dec[pick])).clip(0.05),
            rng.uniform(0, 360, n_candidates - half),
        ]
    )
    dec = np.concatenate(
        [
            cat_dec[pick] + rng.uniform(-0.7, 0.7, half) / 3600,
            np.degrees(np.arcsin(rng.uniform(-1, 1, n_candidates - half))),
        ]
    )
    rows = []
    for name, path in (("FITS", fits_path), ("CSV", csv_path)):
        start = time.perf_counter()
        sky = read_catalogue(path)
        rows.append(
            (f"read the {n_catalogue:,}-row catalogue ({name})", time.perf_counter() - start)
        )
    start = time.perf_counter()
    matched, _ = match_positions(ra, dec, sky, radius=2.0)
    rows.append((f"match {n_candidates:,} positions (2 arcsec)", time.perf_counter() - start))
    files = linked_candidates(work / "positions", n_files)
    references = sorted(str(p) for p in files.glob("*.fits"))
    start = time.perf_counter()
    file_ra, _ = candidate_positions(references)
    read_files = time.perf_counter() - start
    rows.append((f"read the positions of {n_files:,} candidate files", read_files))
    say(f"\n### crossmatch: {n_candidates:,} candidates against {n_catalogue:,} sources\n")
    say("| step | seconds |")
    say("| --- | --- |")
    for label, seconds in rows:
        say(f"| {label} | {seconds:.2f} |")
    say(
        f"\nmatched {int(matched.sum()):,} of {n_candidates:,} (expected at least {half:,}); "
        f"{np.isfinite(file_ra).sum():,} of {n_files:,} files had a position; positions "
        f"are read at {n_files / read_files:,.0f} files/s, so {n_candidates:,} files take "
        f"about {n_candidates / (n_files / read_files):.0f} s more."
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("startup", "keys", "crossmatch", "all"), default="all")
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    say(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        if args.part in ("startup", "all"):
            part_startup(work, args.candidates)
        if args.part in ("keys", "all"):
            part_keys(work, args.keys)
        if args.part in ("crossmatch", "all"):
            part_crossmatch(work, 100_000, 1_000_000, args.candidates)


if __name__ == "__main__":
    main()
