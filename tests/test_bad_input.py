"""What otrain does with bad input: one clear line and exit 2, or a reported skip.

Decided behaviour, one row per case (see docs/formats.md):

| input | convert | infer / loader |
| --- | --- | --- |
| truncated FITS, non-FITS named .fits | skipped, named, counted | infer: skipped, named,
|   counted; CutoutLoader: CutoutError |
| empty or missing true/ or false/ | error, exit 2 | - |
| mixed sizes without --cutout-size | error naming the file, exit 2 | - |
| size differs from the model's input | - | larger: centre-cropped; smaller: skipped, named |
| all-NaN, partly NaN, inf pixels | kept as they are | finite probabilities |
| missing keywords, keyword of the wrong type | NaN or '' | NaN or empty cells |
| corrupt or foreign .npz | train: error, exit 2 | - |
| non-model .h5/.keras, missing model | - | error, exit 2 |
| output folder that cannot be created | error, exit 2 | error, exit 2 |
"""

import importlib

import numpy as np
import pytest
from astropy.table import Table
from conftest import point_source, tiny_network, write_stamp

from otrain.cli import convert, infer, train

SIZE = 24


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from otrain import CutoutClassifier, save_model

    rng = np.random.default_rng(0)
    X = np.array([point_source(SIZE, flux=f, rng=rng) for f in rng.uniform(0, 200, 60)])
    y = np.array([1, 0] * 30)
    clf = CutoutClassifier(network=tiny_network, epochs=1, random_state=0)
    clf.fit(X[..., None].astype(np.float32), y)
    return save_model(clf, tmp_path_factory.mktemp("model") / "m.h5")


def _candidates(folder):
    folder.mkdir()
    good = write_stamp(folder / "good.fits", point_source(SIZE), CANDID="good", MAG=18.0)
    write_stamp(folder / "bigger.fits", point_source(SIZE + 8), CANDID="bigger")
    write_stamp(folder / "smaller.fits", point_source(SIZE - 8), CANDID="smaller")
    write_stamp(folder / "allnan.fits", np.full((SIZE, SIZE), np.nan), CANDID="allnan")
    partly = point_source(SIZE)
    partly[:, :5] = np.nan
    partly[3, 3] = np.inf
    write_stamp(folder / "partly.fits", partly, CANDID="partly")
    write_stamp(folder / "nokeys.fits", point_source(SIZE))
    write_stamp(folder / "wrongtype.fits", point_source(SIZE), MAG="bright", FWHM="n/a")
    write_stamp(folder / "edge.fits", point_source(SIZE), EDGE="True")
    (folder / "notfits.fits").write_text("this is not a FITS file")
    (folder / "truncated.fits").write_bytes(good.read_bytes()[:3000])
    return folder


def test_infer_scores_what_it_can_and_reports_the_rest(model_file, tmp_path, capsys):
    folder = _candidates(tmp_path / "cands")
    assert infer.main(["--cutouts", str(folder), "--model", str(model_file)]) == 0
    out = capsys.readouterr().out
    scored = ["good", "bigger", "allnan", "partly", "nokeys", "wrongtype"]
    dat = Table.read(folder / "infer_results.dat", format="ascii.commented_header")
    assert sorted(dat["cand_ID"]) == sorted(scored)
    # The ECSV accounts for every file, in the order scanned.
    table = Table.read(folder / "infer_results.ecsv")
    assert len(table) == 10
    assert list(table["filename"]) == sorted(str(p) for p in folder.glob("*.fits"))
    status = dict(zip(table["cand_ID"], table["status"], strict=True))
    assert status == {
        **dict.fromkeys(scored, "scored"),
        "edge": "edge",
        "smaller": "wrong_size",
        "notfits": "unreadable",
        "truncated": "unreadable",
    }
    done = table[table["status"] == "scored"]
    assert np.isfinite(done["label1"]).all() and np.isfinite(done["label0"]).all()
    assert table["label1"].mask[table["status"] != "scored"].all()
    row = table[table["cand_ID"] == "wrongtype"][0]
    assert np.isnan(row["mag"]) and np.isnan(row["FWHM"])
    row = table[table["cand_ID"] == "nokeys"][0]
    assert np.isnan(row["RA"]) and not row["originalFile"]  # empty (masked in ECSV)
    assert "6 candidates scored, 1 EDGE cutouts not scored" in out
    assert "2 unreadable files, 1 files of another stamp size" in out
    for name in ("smaller.fits", "notfits.fits", "truncated.fits", "edge.fits"):
        assert name in out
    # Scoring has no --cutout-size: the reason speaks of the model's stamps.
    reason = table[table["cand_ID"] == "smaller"][0]["reason"]
    assert "cutout size" not in reason and "24x24 stamps the model takes" in reason


def test_loader_refuses_unreadable_files(tmp_path):
    from otrain import CutoutError, CutoutLoader

    folder = _candidates(tmp_path / "cands")
    with pytest.raises(CutoutError, match="notfits.fits.*not a readable FITS file"):
        CutoutLoader().transform([folder / "good.fits", folder / "notfits.fits"])


def _training_set(root, n=4, **sizes):
    for label in ("true", "false"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            write_stamp(root / label / f"{i}.fits", point_source(sizes.get(label, SIZE)))
    return root


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda r: (r / "true").mkdir() or (r / "false").mkdir(), "true: holds no cutout"),
        (lambda r: None, "true: no such folder"),
        (
            lambda r: _training_set(r, false=SIZE + 2),
            "is 26x26 pixels but the other cutouts are 24x24",
        ),
    ],
)
def test_convert_errors(tmp_path, setup, message, capsys):
    root = tmp_path / "set"
    root.mkdir()
    setup(root)
    out = tmp_path / "out"
    assert convert.main(["--path", str(out), "--cube", "c", "--cutouts", str(root)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "c.npz").exists()


def test_convert_skips_corrupt_files_and_counts_them(tmp_path, capsys):
    root = _training_set(tmp_path / "set")
    (root / "false" / "bad.fits").write_bytes(b"\x00" * 100)
    assert convert.main(["--path", str(tmp_path), "--cube", "c", "--cutouts", str(root)]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable files" in out and "bad.fits" in out


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 broken zip"), "not a readable datacube"),
        (lambda p: np.savez(p, weights=np.zeros(3)), "not a datacube"),
    ],
)
def test_train_rejects_corrupt_or_foreign_cubes(tmp_path, write, message, capsys):
    cube = tmp_path / "cube.npz"
    write(cube)
    argv = ["--cube", str(cube), "--model-path", str(tmp_path / "m"), "--model-name", "x"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "m" / "CNN_training" / "x.h5").exists()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("m.h5", b"not a model", "not a Keras model file"),
        ("m.keras", b"not a model", "not a Keras model file"),
        ("missing.h5", None, "no such model file"),
    ],
)
def test_infer_rejects_bad_model_files(tmp_path, name, content, message, capsys):
    folder = tmp_path / "c"
    folder.mkdir()
    write_stamp(folder / "a.fits", point_source(SIZE))
    if content is not None:
        (tmp_path / name).write_bytes(content)
    assert infer.main(["--cutouts", str(folder), "--model", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (folder / "infer_results.dat").exists()


def test_unwritable_output_folders(model_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    root = _training_set(tmp_path / "set")
    assert (
        convert.main(["--path", str(blocker / "sub"), "--cube", "c", "--cutouts", str(root)]) == 2
    )
    assert "cannot create the output folder" in capsys.readouterr().err
    folder = _candidates(tmp_path / "cands")
    argv = ["--cutouts", str(folder), "--model", str(model_file), "--outdir", str(blocker / "x")]
    assert infer.main(argv) == 2
    assert "cannot create the output folder" in capsys.readouterr().err


def test_failed_result_write_keeps_the_old_table(model_file, tmp_path, monkeypatch):
    folder = _candidates(tmp_path / "cands")
    assert infer.main(["--cutouts", str(folder), "--model", str(model_file)]) == 0
    before = (folder / "infer_results.dat").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Table, "write", broken)
    assert infer.main(["--cutouts", str(folder), "--model", str(model_file)]) == 2
    assert (folder / "infer_results.dat").read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".infer_results")]


def test_otrain_prob_ratio_flag_is_accepted(model_file, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    write_stamp(folder / "a.fits", point_source(SIZE))
    argv = ["--cutouts", str(folder), "--model", str(model_file), "--prob-ratio", "0.01"]
    assert infer.main(argv) == 0
    assert (folder / "infer_results.dat").is_file()


@pytest.mark.parametrize(
    "command, argv, flag, fix",
    [
        (
            "train",
            "--cube c.npz --model-path m --model-name n --channels SCI,REF,DIFF",
            "--channels",
            "otrain-convert --channels SCI,REF,DIFF",
        ),
        # Missing required flags are reported first; the hint still comes.
        ("train", "--cube c.npz --cutout_size=32", "--cutout_size", "otrain-convert --cutout-size"),
        ("infer", "--cutouts c --model m.h5 --network vgg6", "--network", "otrain-train --network"),
        (
            "convert",
            "--path p --cube c --cutouts c --epochs 3",
            "--epochs",
            "otrain-train --epochs",
        ),
    ],
)
def test_misplaced_flag_names_the_command_it_belongs_to(command, argv, flag, fix, capsys):
    module = importlib.import_module(f"otrain.cli.{command}")
    with pytest.raises(SystemExit) as info:
        module.main(argv.split())
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-2].startswith(f"otrain-{command}: error: ")
    assert lines[-1].startswith(f"otrain-{command}: hint: {flag}: ")
    assert fix in lines[-1]


def test_unknown_flag_without_a_known_place_gets_no_hint(capsys):
    from otrain.cli import train

    with pytest.raises(SystemExit):
        train.main("--cube c.npz --model-path m --model-name n --no-such-flag".split())
    err = capsys.readouterr().err
    assert "unrecognized arguments: --no-such-flag" in err
    assert "hint" not in err
