"""Real ZTF alerts end to end, and ZTF's braai model through otrain-infer."""

import csv

import numpy as np
import pytest
from astropy.table import Table

from otrain.cli import checkinfer, convert, infer, train


@pytest.fixture(scope="module")
def ztf_set(ztf_folder, tmp_path_factory):
    """true/ and false/ folders of real ZTF alerts, split by ZTF's drb score."""
    root = tmp_path_factory.mktemp("ztf")
    with open(ztf_folder / "index.csv") as handle:
        rows = list(csv.DictReader(handle))
    for label in ("true", "false"):
        (root / "training" / label).mkdir(parents=True)
    (root / "candidates").mkdir()
    for row in rows:
        source = ztf_folder / row["file"]
        label = "true" if float(row["drb"]) >= 0.5 else "false"
        (root / "training" / label / source.name).symlink_to(source)
        (root / "candidates" / source.name).symlink_to(source)
    # Known transients stand in for the simulated sources of a crossmatch file.
    known = [r for r in rows if r["tnsclass"]] or rows[:20]
    Table(
        {"closest_candID": [r["candid"] for r in known], "mag": [float(r["mag"]) for r in known]}
    ).write(root / "crossmatch.dat", format="ascii.commented_header")
    return root, rows


@pytest.mark.parametrize("channels", ["DIFF", "SCI,REF,DIFF"])
def test_convert_train_infer_checkinfer_on_real_alerts(ztf_set, tmp_path, channels, capfd):
    root, rows = ztf_set
    n_edge = sum(r["edge"] == "True" for r in rows)
    assert (
        convert.main(
            [
                "--path",
                str(tmp_path),
                "--cube",
                "ztf",
                "--cutouts",
                str(root / "training"),
                "--channels",
                channels,
            ]
        )
        == 0
    )
    with np.load(tmp_path / "ztf.npz") as npz:
        assert npz["cube"].shape == (len(rows) - n_edge, 63, 63, len(channels.split(",")))
    assert (
        train.main(
            [
                "--cube",
                str(tmp_path / "ztf.npz"),
                "--model-path",
                str(tmp_path / "model"),
                "--model-name",
                "ztf",
                "--epochs",
                "1",
                "--network",
                "vgg6",
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    outdir = tmp_path / "scores"
    assert (
        infer.main(
            [
                "--cutouts",
                str(root / "candidates"),
                "--model",
                str(tmp_path / "model" / "CNN_training" / "ztf.h5"),
                "--outdir",
                str(outdir),
            ]
        )
        == 0
    )
    table = Table.read(outdir / "infer_results.ecsv")
    # Every input is listed; the EDGE stamps with status edge and no probability.
    assert len(table) == len(rows)
    scored = table["status"] == "scored"
    assert scored.sum() == len(rows) - n_edge
    assert set(table["status"][~scored]) == {"edge"}
    assert np.isfinite(np.asarray(table["label1"][scored], dtype=float)).all()
    assert len(Table.read(outdir / "infer_results.dat", format="ascii")) == len(rows) - n_edge
    assert (
        checkinfer.main(
            ["--plots", str(tmp_path / "plots"), "--crossmatch", str(root), "--infer", str(outdir)]
        )
        == 0
    )
    assert list((tmp_path / "plots" / "CheckInfer").glob("*.png"))
    err = capfd.readouterr().err
    # No warning a user cannot act on: stderr stays empty on a successful run.
    assert "Warning" not in err and "WARNING" not in err, err


def test_braai_through_otrain_infer_matches_the_python_api(ztf_set, braai_path, tmp_path):
    from otrain import load_cutouts, load_model

    root, rows = ztf_set
    assert (
        infer.main(
            [
                "--cutouts",
                str(root / "candidates"),
                "--model",
                str(braai_path),
                "--channels",
                "SCI,REF,DIFF",
                "--normalisation",
                "l2",
                "--outdir",
                str(tmp_path),
            ]
        )
        == 0
    )
    table = Table.read(tmp_path / "infer_results.ecsv")
    table = table[table["status"] == "scored"]
    table["label1"] = np.asarray(table["label1"], dtype=float)
    model = load_model(braai_path, channels=("SCI", "REF", "DIFF"), normalisation="l2")
    X, keywords, _ = load_cutouts(list(table["filename"]), channels=("SCI", "REF", "DIFF"))
    np.testing.assert_allclose(table["label1"], model.predict_proba(X)[:, 1], atol=1e-6)
    drb = {r["candid"]: float(r["drb"]) for r in rows}
    expected = np.array([drb[c] for c in table["cand_ID"]])
    # What the docs promise (formats.md, cli.md): median |difference| 0.005, 96% of
    # the candidates called alike at 0.5.
    assert np.median(np.abs(table["label1"] - expected)) < 0.01
    assert np.mean((table["label1"] >= 0.5) == (expected >= 0.5)) >= 0.95


def test_legacy_model_without_its_channels_is_a_clear_error(ztf_set, braai_path, capsys):
    root, _ = ztf_set
    assert infer.main(["--cutouts", str(root / "candidates"), "--model", str(braai_path)]) == 2
    err = capsys.readouterr().err
    assert "--channels SCI,REF,DIFF --normalisation l2" in err and err.count("\n") == 1
