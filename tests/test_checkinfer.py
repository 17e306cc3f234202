"""Tests of otrain-checkinfer: the plots, the summary, the errors, the imports."""

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from otrain import plots
from otrain.checkinfer import (
    PLOT_NAMES,
    CheckInferError,
    check_inference,
    read_crossmatch,
    read_infer_results,
)
from otrain.cli.checkinfer import build_parser, main
from otrain.datasets import make_candidates

PROG = "otrain-checkinfer"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FWHM_PLOTS = ("distrib_FWHM_simulation.png", "distrib_FWHM_not_simulated.png")

# Runs the installed entry point script in this interpreter, then reports the exit
# code and every module imported, so that a test can see what the command loaded.
DRIVER = """
import json, runpy, sys
report, script, *args = sys.argv[1:]
sys.argv = [script, *args]
try:
    runpy.run_path(script, run_name="__main__")
    code = 0
except SystemExit as stop:
    code = stop.code
with open(report, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def fake_scores(truth, seed=0):
    """An infer_results.dat table for ``truth``: P(real) rises with S/N for real sources."""
    rng = np.random.default_rng(seed)
    snr = np.clip(np.asarray(truth["snr"], dtype=float), 0.1, None)
    real = np.asarray(truth["label"]) == 1
    logit = np.where(real, 6.0 * np.log10(snr / 6.0), -3.0) + rng.normal(0, 1.2, len(snr))
    p_real = 1 / (1 + np.exp(-logit))
    table = Table(
        {
            "filename": [Path(p).name for p in truth["path"]],
            "RA": truth["ra"],
            "Dec": truth["dec"],
            "originalFile": truth["file"],
            "Xpos": truth["xpos"],
            "Ypos": truth["ypos"],
            "mag": truth["mag"],
            "magerr": truth["magerr"],
            "FWHM": truth["fwhm"],
            "FWHMPSF": truth["fwhmpsf"],
            "cand_ID": truth["candid"],
            "label0": 1 - p_real,
            "label1": p_real,
            "label": (p_real >= 0.5).astype(int),
            "label1_std": np.full(len(truth), 0.01),
        }
    )
    # What otrain-infer writes for a cutout it could not score: nan and "".
    table["label0"][-1] = table["label1"][-1] = np.nan
    table["filename"][-1] = ""
    return table


def write_table(table, path):
    table.write(path, format="ascii.commented_header", overwrite=True)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """crossmatch.dat and candidates/infer_results.dat for 120 synthetic candidates."""
    folder = tmp_path_factory.mktemp("checkinfer")
    truth = make_candidates(folder, n=120, random_state=7)
    scores = fake_scores(truth)
    write_table(scores, folder / "candidates" / "infer_results.dat")
    return {"folder": folder, "truth": truth, "scores": scores}


@pytest.fixture
def no_render(monkeypatch):
    """Build the figures (which checks their inputs) but skip the slow PNG rendering."""
    monkeypatch.setattr(plots._common, "_save", lambda fig, path: Path(path))


@pytest.fixture
def work(source, tmp_path):
    """A fresh folder holding crossmatch.dat and candidates/infer_results.dat."""
    (tmp_path / "candidates").mkdir()
    shutil.copy(source["folder"] / "crossmatch.dat", tmp_path / "crossmatch.dat")
    shutil.copy(
        source["folder"] / "candidates" / "infer_results.dat",
        tmp_path / "candidates" / "infer_results.dat",
    )
    return tmp_path


def expected_recovery(source, maglim=(12, 18, 21), problim=(0.1, 0.5, 0.7)):
    """The recovery table computed independently, from the truth of the generator."""
    crossmatch = Table.read(source["folder"] / "crossmatch.dat", format="ascii.commented_header")
    injected = dict(zip(crossmatch["closest_candID"], crossmatch["mag"], strict=True))
    scores = source["scores"]
    keep = [
        i
        for i, c in enumerate(scores["cand_ID"])
        if c in injected and np.isfinite(scores["label1"][i])
    ]
    p = np.asarray(scores["label1"])[keep]
    mag = np.array([injected[scores["cand_ID"][i]] for i in keep])
    edges = [-math.inf, *maglim, math.inf]
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        mask = (mag >= low) & (mag < high)
        rows.append(
            (int(mask.sum()), [np.mean(p[mask] >= lim) if mask.any() else None for lim in problim])
        )
    rows.append((len(p), [np.mean(p >= lim) for lim in problim]))
    return rows


# ------------------------------------------------------------------------ command


def test_issue_example_writes_every_plot_and_the_summary(work, source, monkeypatch, capsys):
    monkeypatch.chdir(work)
    code = main(["--plots", "otrain_plots", "--crossmatch", ".", "--infer", "candidates"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    folder = work / "otrain_plots" / "CheckInfer"
    assert sorted(p.name for p in folder.iterdir()) == sorted(PLOT_NAMES)
    for name in PLOT_NAMES:
        assert (folder / name).read_bytes()[:8] == PNG_SIGNATURE
    assert "skipped" not in out

    truth = source["truth"]
    n_sim_injected = int(np.sum(truth["simulated"]))
    # The last candidate has no score; it is not a simulated source in this seed.
    assert not truth["simulated"][-1]
    assert "candidates scored: 119 (1 without a score, left out)" in out
    assert (
        f"simulated sources: {n_sim_injected} injected, {n_sim_injected} matched to a scored "
        f"candidate; {n_sim_injected} scored candidates are simulated sources"
    ) in out
    lines = out.splitlines()
    start = lines.index("fraction of the simulated sources recovered, P(real) >= limit:")
    assert lines[start + 1].split() == ["magnitude", "n", "P>=0.1", "P>=0.5", "P>=0.7"]
    labels = ["mag < 12", "12 <= mag < 18", "18 <= mag < 21", "mag >= 21", "all"]
    for line, label, (n, fractions) in zip(
        lines[start + 2 : start + 7], labels, expected_recovery(source), strict=True
    ):
        cells = [f"{f:.2f}" if f is not None else "-" for f in fractions]
        assert line.split() == [*label.split(), str(n), *cells]
    assert f"plots in {Path('otrain_plots') / 'CheckInfer'}: 5 written" in out


def test_fwhmpsf_all_nan_skips_the_fwhm_plots_and_removes_old_ones(
    work, monkeypatch, capsys, no_render
):
    path = work / "candidates" / "infer_results.dat"
    scores = Table.read(path, format="ascii.commented_header")
    scores["FWHMPSF"] = np.nan
    write_table(scores, path)
    folder = work / "plots" / "CheckInfer"
    folder.mkdir(parents=True)
    (folder / FWHM_PLOTS[0]).write_bytes(b"an earlier run's plot")

    monkeypatch.chdir(work)
    code = main(["--plots", "plots", "--crossmatch", ".", "--infer", "candidates"])
    out, err = capsys.readouterr()
    assert code == 0, err
    n_sim = len(read_crossmatch(work))
    skipped = [line for line in out.splitlines() if line.startswith("skipped")]
    assert skipped == [
        f"skipped {FWHM_PLOTS[0]}: FWHMPSF is unknown (NaN or not positive) for all {n_sim} "
        f"simulated sources (the {FWHM_PLOTS[0]} of an earlier run was removed)",
        f"skipped {FWHM_PLOTS[1]}: FWHMPSF is unknown (NaN or not positive) for all "
        f"{119 - n_sim} other candidates",
    ]
    # The earlier run's plot is gone (the PNGs of this run are not rendered here).
    assert list(folder.iterdir()) == []
    assert "plots in plots/CheckInfer: 3 written, 2 skipped" in out


def write_ragged(work):
    (work / "crossmatch.dat").write_text("# closest_candID mag\ncand000001 18.5 extra\n")


def drop_column(work, name, which="infer"):
    path = work / ("candidates/infer_results.dat" if which == "infer" else "crossmatch.dat")
    table = Table.read(path, format="ascii.commented_header")
    table.remove_column(name)
    write_table(table, path)


def set_label1(work, value):
    path = work / "candidates" / "infer_results.dat"
    table = Table.read(path, format="ascii.commented_header")
    table["label1"][3] = value
    write_table(table, path)


DEFAULT_ARGS = ["--plots", "out", "--crossmatch", ".", "--infer", "candidates"]


@pytest.mark.parametrize(
    ("prepare", "args", "expected"),
    [
        pytest.param(
            lambda w: (w / "crossmatch.dat").unlink(),
            DEFAULT_ARGS,
            ["crossmatch.dat: no such file; give the folder holding crossmatch.dat"],
            id="no-crossmatch",
        ),
        pytest.param(
            lambda w: (w / "candidates" / "infer_results.dat").unlink(),
            DEFAULT_ARGS,
            ["infer_results.dat: no such file; run otrain-infer to write it"],
            id="no-infer-results",
        ),
        pytest.param(
            lambda w: drop_column(w, "label1"),
            DEFAULT_ARGS,
            ["infer_results.dat: no column label1 (columns: filename, RA,", "header line"],
            id="no-label1",
        ),
        pytest.param(
            lambda w: drop_column(w, "closest_candID", "crossmatch"),
            DEFAULT_ARGS,
            ["crossmatch.dat: no column closest_candID (columns: idx, filename,"],
            id="no-closest-candID",
        ),
        pytest.param(
            write_ragged,
            DEFAULT_ARGS,
            ["crossmatch.dat: cannot be read as an ASCII table (Number of header columns"],
            id="ragged-table",
        ),
        pytest.param(
            lambda w: (w / "crossmatch.dat").write_bytes(bytes(range(256))),
            DEFAULT_ARGS,
            ["crossmatch.dat: not a text file"],
            id="binary-file",
        ),
        pytest.param(
            lambda w: (w / "candidates" / "infer_results.dat").write_text(""),
            DEFAULT_ARGS,
            ["infer_results.dat: the file is empty; write it as an ASCII table with a '# cand_ID"],
            id="empty-file",
        ),
        pytest.param(
            lambda w: set_label1(w, 1.7),
            DEFAULT_ARGS,
            ["label1 must be P(real), between 0 and 1;", "(first: 1.7 in data row 4)"],
            id="label1-out-of-range",
        ),
        pytest.param(
            lambda w: (w / "out").write_text("a file, not a folder"),
            DEFAULT_ARGS,
            ["cannot create the output folder", "choose a folder you can write to"],
            id="unwritable-output",
        ),
        pytest.param(
            lambda w: None,
            [*DEFAULT_ARGS, "--cnn-problim", "0.5", "0.1"],
            ["problim (--cnn-problim) must be increasing finite numbers strictly between 0 and 1"],
            id="bad-problim",
        ),
        pytest.param(
            lambda w: None,
            [*DEFAULT_ARGS, "--fwhm-ratio-lower", "5"],
            ["fwhm_ratio (--fwhm-ratio-lower, --fwhm-ratio-upper) must be two numbers"],
            id="bad-fwhm-ratio",
        ),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(
    work, monkeypatch, capsys, prepare, args, expected
):
    prepare(work)
    monkeypatch.chdir(work)
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{PROG}: error: ")
    for text in expected:
        assert text in lines[0]
    # Nothing was written: every input is checked before the output folder is made.
    assert not (work / "out" / "CheckInfer").exists()


# ------------------------------------------------------------------------ library


def test_no_simulated_match_skips_the_simulated_plots(source, tmp_path, no_render):
    crossmatch = Table({"closest_candID": ["nobody", "none"], "mag": [18.0, 19.0]})
    result = check_inference(source["scores"], crossmatch, tmp_path / "plots")
    reason = "no scored candidate is a simulated source: none of the closest_candID"
    assert set(result["skipped"]) == {
        "distrib_CNN_prob_sim.png",
        "fraction_per_probability_bin.png",
        "distrib_FWHM_simulation.png",
    }
    assert all(text.startswith(reason) for text in result["skipped"].values())
    assert [p.name for p in result["written"]] == [
        "distrib_CNNprob_all_and_sim.png",
        "distrib_FWHM_not_simulated.png",
    ]
    summary = result["summary"]
    assert (summary["n_injected"], summary["n_injected_matched"], summary["n_simulated"]) == (
        2,
        0,
        0,
    )
    assert summary["recovery"]["n"].tolist() == [0, 0, 0, 0, 0]


def test_readers_accept_the_file_a_folder_and_a_plain_header(source, tmp_path):
    folder = source["folder"]
    by_folder = read_infer_results(folder / "candidates")
    by_file = read_infer_results(folder / "candidates" / "infer_results.dat")
    assert by_folder.meta["path"] == by_file.meta["path"]
    assert len(by_file) == 120 and np.isnan(by_file["label1"][-1])
    # A header line without '#' (astropy's basic layout) is read as well.
    plain = tmp_path / "crossmatch.dat"
    plain.write_text("closest_candID mag\ncand000001 18.5\n7 19.25\n")
    table = read_crossmatch(tmp_path)
    assert table["mag"].tolist() == [18.5, 19.25]
    with pytest.raises(CheckInferError, match="no such file or folder") as info:
        read_crossmatch(tmp_path / "elsewhere")
    assert info.value.path == str(tmp_path / "elsewhere")


def test_recovery_counts_on_a_hand_made_table(tmp_path, no_render):
    scores = Table(
        {
            "cand_ID": [1, 2, 3, 4, 5, 6],
            "label1": [0.95, 0.6, 0.05, 0.8, 0.3, np.nan],
        }
    )
    crossmatch = Table(
        {
            "closest_candID": ["1", "2", "3", "4", "6", "99"],
            "mag": [15.0, 19.0, 19.5, np.nan, 17, 18],
        }
    )
    result = check_inference(scores, crossmatch, tmp_path, problim=(0.5,), maglim=(18,))
    recovery = result["summary"]["recovery"]
    assert recovery["mag_bin"].tolist() == ["mag < 18", "mag >= 18", "unknown mag", "all"]
    assert recovery["n"].tolist() == [1, 2, 1, 4]
    assert recovery["p_real>=0.5"].tolist() == [1.0, 0.5, 1.0, 0.75]
    summary = result["summary"]
    assert summary["n_unscored"] == 1
    assert summary["n_injected_matched"] == 4  # 6 has no score, 99 is no candidate
    assert summary["n_simulated_unknown_mag"] == 1
    # No FWHM column: the FWHM plots are skipped, the others drawn.
    assert result["skipped"] == {
        name: "the inference table has no FWHM or FWHMPSF column" for name in FWHM_PLOTS
    }
    assert len(result["written"]) == 3


# --------------------------------------------------------------- flags and imports


def test_flags_and_defaults_match_otrain():
    args = build_parser().parse_args(
        ["--plots", "p", "--crossmatch", "c", "--infer", "i", "--mag-lim", "15", "19"]
    )
    assert args.maglim == [15.0, 19.0]
    assert args.problim == [0.1, 0.5, 0.7]
    assert (args.fwhm_ratio_lower, args.fwhm_ratio_upper) == (0.5, 4.2)
    assert build_parser().parse_args(
        ["--plots", "p", "--crossmatch", "c", "--infer", "i"]
    ).maglim == [
        12.0,
        18.0,
        21.0,
    ]


def entry_point():
    script = Path(sys.executable).parent / PROG
    if not script.is_file():
        pytest.fail(f"{script} is missing; install the package: pip install -e .")
    return script


def run_driver(tmp_path, *args):
    report = tmp_path / "report.json"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(report), str(entry_point()), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    seconds = time.perf_counter() - start
    return done, json.loads(report.read_text()), seconds


def test_help_is_fast_and_imports_nothing_heavy(tmp_path):
    done, report, seconds = run_driver(tmp_path, "-h")
    assert report["code"] == 0
    assert "--cnn-problim" in done.stdout and "--mag-lim" in done.stdout
    heavy = {"tensorflow", "keras", "matplotlib", "astropy", "sklearn", "numpy"}
    assert heavy.isdisjoint(report["modules"])
    assert seconds < 1.0


def test_installed_entry_point_runs_without_tensorflow(work):
    done, report, _ = run_driver(
        work,
        "--plots",
        "plots",
        "--crossmatch",
        str(work / "crossmatch.dat"),
        "--infer",
        str(work / "candidates" / "infer_results.dat"),
        "--maglim",
        "17",
        "20",
    )
    assert report["code"] == 0, done.stderr
    assert "tensorflow" not in report["modules"]
    assert sorted(p.name for p in (work / "plots" / "CheckInfer").iterdir()) == sorted(PLOT_NAMES)
    assert "17 <= mag < 20" in done.stdout
    assert "plots in plots/CheckInfer: 5 written" in done.stdout


def test_the_ecsv_of_every_input_gives_its_scored_rows(tmp_path):
    ecsv = tmp_path / "infer_results.ecsv"
    Table(
        {
            "cand_ID": ["a", "b", "c"],
            "label1": np.ma.masked_array([0.9, 0.0, 0.2], mask=[False, True, False]),
            "status": ["scored", "unreadable", "scored"],
        }
    ).write(ecsv, format="ascii.ecsv")
    table = read_infer_results(ecsv)
    assert table["cand_ID"].tolist() == ["a", "c"]
    assert table["label1"].tolist() == [0.9, 0.2]
