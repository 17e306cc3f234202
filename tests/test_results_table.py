"""otrain-infer's results: every input accounted for, self-describing, never lost work."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from astropy.table import Table
from conftest import point_source, tiny_network, write_stamp, write_triplet

from otrain.cli import _common, infer
from otrain.inference import COLUMN_DESCRIPTIONS, score_files

SIZE = 24


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from otrain import CutoutClassifier, save_model

    rng = np.random.default_rng(1)
    X = np.array([point_source(SIZE, flux=f, rng=rng) for f in rng.uniform(0, 200, 40)])
    y = np.array([1, 0] * 20)
    clf = CutoutClassifier(network=tiny_network, epochs=1, random_state=0)
    clf.fit(X[..., None].astype(np.float32), y)
    return save_model(clf, tmp_path_factory.mktemp("model") / "m.keras")


@pytest.fixture(scope="module")
def model(model_file):
    from otrain import load_model

    return load_model(model_file)


def _folder(path, n=3, edge=True):
    path.mkdir()
    rng = np.random.default_rng(2)
    for i in range(n):
        write_stamp(path / f"c{i}.fits", point_source(SIZE, rng=rng), CANDID=f"c{i}", RA=10.0 + i)
    if edge:
        write_stamp(path / "edge.fits", point_source(SIZE, rng=rng), CANDID="edge", EDGE="True")
    return path


def _infer(*argv):
    return infer.main([str(a) for a in argv])


def test_edge_stamps_are_listed_or_scored_on_request(model_file, tmp_path, capsys):
    folder = _folder(tmp_path / "c")
    assert _infer("--cutouts", folder, "--model", model_file) == 0
    out = capsys.readouterr().out
    table = Table.read(folder / "infer_results.ecsv")
    edge = table[table["cand_ID"] == "edge"][0]
    assert edge["status"] == "edge" and edge["edge"] and np.ma.is_masked(edge["label1"])
    assert "not scored (edge):" in out and "edge.fits" in out
    dat = Table.read(folder / "infer_results.dat", format="ascii.commented_header")
    assert "edge" not in list(dat["cand_ID"]) and len(dat) == 3

    assert _infer("--cutouts", folder, "--model", model_file, "--score-edge") == 0
    assert "replacing results of an earlier run" in capsys.readouterr().out
    table = Table.read(folder / "infer_results.ecsv")
    edge = table[table["cand_ID"] == "edge"][0]
    assert edge["status"] == "scored" and 0 <= edge["label1"] <= 1
    assert len(Table.read(folder / "infer_results.dat", format="ascii.commented_header")) == 4


def test_results_table_describes_itself(model_file, tmp_path):
    folder = _folder(tmp_path / "c", edge=False)
    assert _infer("--cutouts", folder, "--model", model_file, "--threshold", "0.3") == 0
    table = Table.read(folder / "infer_results.ecsv")
    for name in table.colnames:
        assert table[name].description == COLUMN_DESCRIPTIONS[name]
    assert "P(real)" in table["label1"].description
    assert str(table["RA"].unit) == "deg" and str(table["mag"].unit) == "mag"
    meta = table.meta
    assert meta["model_file"] == str(model_file.resolve()) and meta["channels"] == ["DIFF"]
    assert meta["normalisation"] == "robust" and meta["threshold"] == 0.3
    assert meta["threshold_source"] == "given" and meta["precision"] in ("float32", "bfloat16")
    assert meta["counts"] == {"scored": 3}


def test_files_holding_unused_channels_get_a_note(model_file, tmp_path, capsys):
    folder = tmp_path / "triplets"
    folder.mkdir()
    stamp = point_source(SIZE)
    write_triplet(folder / "t.fits", stamp, stamp, stamp, CANDID="t")
    assert _infer("--cutouts", folder, "--model", model_file) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert "also hold SCI, REF, which this model does not use (it takes DIFF)" in notes[0]
    assert "--channels SCI,REF,DIFF" in notes[0]


def test_outputs_are_checked_before_the_model_is_loaded(model_file, tmp_path, capsys, monkeypatch):
    import tempfile

    folder = _folder(tmp_path / "c", edge=False)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Root writes anywhere: a read-only archive is played by refusing the test file.
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert _infer("--cutouts", folder, "--model", model_file) == 2
    captured = capsys.readouterr()
    assert "loading model" not in captured.out
    err = captured.err.strip()
    assert err.count("\n") == 0 and "Permission denied" in err and "give --outdir" in err
    assert not (folder / "infer_results.ecsv").exists()


def test_stale_temporaries_of_killed_runs_are_removed(model_file, tmp_path):
    from otrain._atomic import _owner

    folder = _folder(tmp_path / "c", edge=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = _owner().rsplit("-", 1)[0]
    stale = folder / f".infer_results.{host}-{dead.pid}.ab12cd.tmp.ecsv"
    live = folder / f".infer_results.{host}-{os.getppid()}.ef34gh.tmp.ecsv"
    foreign = folder / f".infer_results.otherhost-{dead.pid}.ij56kl.tmp.ecsv"
    for path in (stale, live, foreign):
        path.write_bytes(b"x" * 1000)
    assert _infer("--cutouts", folder, "--model", model_file) == 0
    assert not stale.exists()
    assert live.exists() and foreign.exists()


def test_file_names_that_are_not_utf8_are_scored_and_written(model_file, tmp_path, capsys):
    folder = _folder(tmp_path / "c", edge=False)
    odd = os.path.join(os.fsencode(folder), b"cand_\xff\xfe.fits")
    with open(odd, "wb") as handle:
        handle.write((folder / "c0.fits").read_bytes())
    assert _infer("--cutouts", folder, "--model", model_file) == 0
    table = Table.read(folder / "infer_results.ecsv")
    row = table[[name.endswith("cand_\\xff\\xfe.fits") for name in table["filename"]]]
    assert len(row) == 1 and row["status"][0] == "scored"
    assert "cand_\\xff\\xfe.fits" in (folder / "infer_results.dat").read_text()


def test_warnings_reach_the_terminal_as_one_line(capsys):
    def body(args):
        warnings.warn("something odd\n   about this file", UserWarning, stacklevel=1)
        return 0

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert _common.run("otrain-test", body, None) == 0
    err = capsys.readouterr().err
    assert err == "otrain-test: warning: something odd about this file\n"


def _messy_folder(folder, n_good, stamp=SIZE):
    """``n_good`` stamps and one corrupt, one truncated and one foreign file."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    first = None
    for i in range(n_good):
        path = write_stamp(folder / f"s{i:05d}.fits", rng.normal(size=(stamp, stamp)))
        first = first or path
    (folder / "s00010x.fits").write_bytes(b"SIMPLE  =" + b"\0" * 100)
    (folder / "s00020x.fits").write_bytes(first.read_bytes()[:4000])
    (folder / "s00030x.fits").write_text("a text file that lost its way")
    return folder


def test_many_files_with_corrupt_ones_run_to_the_end(model_file, tmp_path, capsys):
    folder = _messy_folder(tmp_path / "many", 297)
    argv = ["--cutouts", folder, "--model", model_file, "--chunk-size", "64", "--n-jobs", "1"]
    assert _infer(*argv) == 0
    out = capsys.readouterr().out
    assert "297 candidates scored, 3 unreadable files" in out
    for name in ("s00010x.fits", "s00020x.fits", "s00030x.fits"):
        assert name in out
    table = Table.read(folder / "infer_results.ecsv")
    assert len(table) == 300 and (table["status"] == "scored").sum() == 297


def test_scoring_is_streamed_in_chunks(model, tmp_path, monkeypatch):
    # Files are taken from the iterable a chunk at a time, and no read holds more
    # than a chunk of stamps: memory stays flat however many files there are.
    import otrain.inference as inference

    many = sorted(str(p) for p in _messy_folder(tmp_path / "m", 597).glob("*.fits"))
    taken, reads, seen = [0], [], []

    def lazily():
        for path in many:
            taken[0] += 1
            yield path

    real_load = inference.load_cutouts

    def load(paths, **kwargs):
        reads.append(len(paths))
        return real_load(paths, **kwargs)

    monkeypatch.setattr(inference, "load_cutouts", load)
    table, summary = score_files(
        model, lazily(), chunk_size=64, every_input=True, progress=lambda n: seen.append(taken[0])
    )
    assert summary["n_files"] == 600 and summary["n_scored"] == 597
    assert len(summary["skipped"]) == 3 and len(table) == 600
    assert max(reads) == 64
    # When the first chunk is scored, at most the next one has been taken as well.
    assert seen[0] <= 2 * 64


def test_first_chunks_are_shorter_and_change_no_score(model, tmp_path, monkeypatch):
    # 128 files first, then twice as many each time up to chunk_size: the network
    # starts sooner, and the table is that of equal chunks. Monte-Carlo scoring keeps
    # equal chunks (its draws are seeded chunk by chunk).
    import otrain.inference as inference

    paths = sorted(str(p) for p in _messy_folder(tmp_path / "r", 597).glob("*.fits"))
    reads = []
    real_load = inference.load_cutouts

    def load(chunk, **kwargs):
        reads.append(len(chunk))
        return real_load(chunk, **kwargs)

    monkeypatch.setattr(inference, "load_cutouts", load)
    ramped, _ = inference.score_files(model, paths, every_input=True)
    assert reads == [128, 256, 216]
    reads.clear()
    equal, _ = inference.score_files(model, paths, every_input=True, chunk_size=128)
    assert reads == [128, 128, 128, 128, 88]
    assert list(ramped["filename"]) == list(equal["filename"]) == paths
    np.testing.assert_array_equal(ramped["label1"].mask, equal["label1"].mask)
    # Batches of other sizes may round the last bit otherwise (oneDNN on AMD EPYC).
    np.testing.assert_allclose(ramped["label1"].filled(-1), equal["label1"].filled(-1), atol=1e-6)
    reads.clear()
    inference.score_files(model, paths[:300], chunk_size=256, mc_samples=2, random_state=1)
    assert reads == [256, 44]


def test_files_astropy_warns_about_are_scored_and_counted(model_file, tmp_path, capsys):
    folder = _folder(tmp_path / "c", edge=False)
    padded = folder / "padded.fits"
    padded.write_bytes((folder / "c0.fits").read_bytes() + b"\0" * 2880)
    assert _infer("--cutouts", folder, "--model", model_file) == 0
    captured = capsys.readouterr()
    assert "1 files read with a warning from astropy" in captured.out
    assert "padded.fits" in captured.out and "padding" in captured.out
    assert "Warning" not in captured.err
    table = Table.read(folder / "infer_results.ecsv")
    row = table[table["cand_ID"] == "c0"]
    assert (row["status"] == "scored").all() and row["label1"][0] == row["label1"][1]
