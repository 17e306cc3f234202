"""The O'TRAIN command-line workflow: the documented commands, exactly as written."""

import re
import subprocess
import sys

import numpy as np
import pytest
from astropy.table import Table

from otrain.cli import convert, diagnostics, infer, plot_results, train
from otrain.datasets import make_demo_data


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder laid out as the documentation's examples expect, after convert + train."""
    root = tmp_path_factory.mktemp("cli")
    made = make_demo_data(root / "demo", n_train=80, n_candidates=40, size=24, random_state=0)
    (root / "candidates_training").symlink_to(made["training"])
    (root / "candidates").symlink_to(made["candidates"])
    (root / "crossmatch.dat").symlink_to(made["crossmatch"])
    return root


@pytest.fixture(scope="module")
def trained(workspace):
    import os

    here = os.getcwd()
    os.chdir(workspace)
    try:
        assert (
            convert.main(
                "--path datacube_test --cube cube --cutouts candidates_training "
                "--frac_true 0.5 --cutout-size -1".split()
            )
            == 0
        )
        assert (
            train.main(
                "--cube datacube_test/cube.npz --model-path model --model-name test --epochs 30 "
                "--verbose 0".split()
            )
            == 0
        )
    finally:
        os.chdir(here)
    return workspace


def test_convert_writes_the_cube(trained):
    with np.load(trained / "datacube_test" / "cube.npz") as npz:
        assert npz["cube"].shape[1:] == (24, 24, 1)
        n_true, n_false = int(npz["labels"].sum()), int((npz["labels"] == 0).sum())
    assert n_true == n_false  # --frac_true 0.5


def test_convert_accepts_both_spellings_and_channels(workspace, tmp_path, capsys):
    assert (
        convert.main(
            [
                "--path",
                str(tmp_path),
                "--cube",
                "c",
                "--cutouts",
                str(workspace / "candidates_training"),
                "--frac-true",
                "0.25",
                "--cutout-size",
                "16",
            ]
        )
        == 0
    )
    with np.load(tmp_path / "c.npz") as npz:
        assert npz["cube"].shape[1:] == (16, 16, 1)
        assert npz["labels"].mean() == pytest.approx(0.25, abs=0.03)
        n_true = int(npz["labels"].sum())
    out = capsys.readouterr().out
    assert "datacube written to" in out and "true" in out
    # What the fraction threw away is said, in the command's words (of the usable
    # stamps: EDGE ones are left out before).
    said = re.search(
        r"^--frac_true 0.25: kept (\d+) of (\d+) real stamps, dropped (\d+) ", out, re.M
    )
    assert said, out
    kept, usable, dropped = map(int, said.groups())
    assert kept == n_true and kept + dropped == usable > n_true
    assert "to reach 25% real (leave --frac_true out to keep every stamp)" in out


def test_train_writes_model_and_report(trained):
    folder = trained / "model" / "CNN_training"
    assert (folder / "test.h5").is_file()
    report = folder / "test"
    for name in (
        "loss_vs_epochs.png",
        "accuracy_vs_epochs.png",
        "roc.png",
        "roc_by_mag.png",
        "roc_by_magerr.png",
        "precision_recall.png",
        "f1_mcc_vs_threshold.png",
        "probability_distribution.png",
        "diagnostics.txt",
        "scores.ecsv",
    ):
        assert (report / name).is_file(), name
    assert (report / "validation_set" / "datacube" / "cube_validation.npz").is_file()
    assert len(list(report.glob("*classified_*.png"))) >= 2
    text = (report / "diagnostics.txt").read_text()
    assert "MCC" in text and "confusion matrix" in text


def test_existing_model_is_not_replaced_without_overwrite(trained, capsys):
    model = trained / "model" / "CNN_training" / "test.h5"
    before = model.read_bytes()
    code = train.main(
        [
            "--cube",
            str(trained / "datacube_test" / "cube.npz"),
            "--model-path",
            str(trained / "model"),
            "--model-name",
            "test",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "a model of this name exists" in err and "--overwrite" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert model.read_bytes() == before


def test_infer_writes_otrain_columns_and_ecsv(trained, monkeypatch):
    monkeypatch.chdir(trained)
    assert infer.main("--cutouts candidates --model model/CNN_training/test.h5".split()) == 0
    table = Table.read(
        trained / "candidates" / "infer_results.dat", format="ascii.commented_header"
    )
    assert table.colnames == [
        "filename",
        "RA",
        "Dec",
        "originalFile",
        "Xpos",
        "Ypos",
        "mag",
        "magerr",
        "FWHM",
        "FWHMPSF",
        "cand_ID",
        "label0",
        "label1",
        "label",
    ]
    n_edge = sum(1 for _ in (trained / "candidates").glob("*.fits")) - len(table)
    assert 0 <= n_edge < 5
    np.testing.assert_allclose(table["label0"] + table["label1"], 1, rtol=1e-5)
    ecsv = Table.read(trained / "candidates" / "infer_results.ecsv")
    assert ecsv.meta["model"] == "test.h5" and ecsv.meta["otrain_version"]
    assert ecsv["mag"].unit == "mag"


def test_diagnostics_and_plot_results(trained, monkeypatch):
    monkeypatch.chdir(trained)
    cube = "model/CNN_training/test/validation_set/datacube/cube_validation.npz"
    assert (
        diagnostics.main(
            ["--path-cube-validation", cube, "--model-path", "model/CNN_training/test.h5"]
        )
        == 0
    )
    assert (trained / "cnn_results" / "diagnostics.txt").is_file()
    assert (
        plot_results.main(
            [
                "--path-cube-validation",
                cube,
                "--model-path",
                "model/CNN_training/test.h5",
                "--path-plots",
                "plots",
            ]
        )
        == 0
    )
    assert len(list((trained / "plots").glob("*.png"))) >= 7


@pytest.mark.parametrize(
    "command, argv, message",
    [
        (
            convert,
            ["--path", "x", "--cube", "c", "--cutouts", "nowhere"],
            "nowhere/true: no such folder",
        ),
        (
            train,
            ["--cube", "nope.npz", "--model-path", "m", "--model-name", "n"],
            "no such datacube",
        ),
        (infer, ["--cutouts", ".", "--model", "none.h5"], "holds no cutout"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(command, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert command.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_installed_entry_point_runs(trained, tmp_path):
    result = subprocess.run(
        [
            sys.executable.replace("python", "otrain-convert").rsplit("/", 1)[0]
            + "/otrain-convert",
            "--path",
            str(tmp_path),
            "--cube",
            "cube",
            "--cutouts",
            str(trained / "candidates_training"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cube.npz").is_file()
    version = subprocess.run(
        [sys.executable.rsplit("/", 1)[0] + "/otrain-train", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0 and "otrain" in version.stdout


def test_demo_runs_every_step_and_says_where_results_are(tmp_path, capsys):
    from otrain.cli import demo

    out = tmp_path / "demo"
    argv = [
        "--outdir",
        str(out),
        "--n-train",
        "100",
        "--n-candidates",
        "40",
        "--stamp-size",
        "24",
        "--epochs",
        "2",
        "--n-sections",
        "2",
    ]
    assert demo.main(argv) == 0
    text = capsys.readouterr().out
    for command in (
        "otrain-convert",
        "otrain-train",
        "otrain-infer",
        "otrain-checkinfer",
        "otrain-optimise-dataset-size",
    ):
        assert f"$ {command} " in text
    assert "where the results are" in text
    assert (out / "model" / "CNN_training" / "demo.h5").is_file()
    assert (out / "data" / "candidates" / "infer_results.dat").is_file()
    assert len(list((out / "otrain_plots" / "CheckInfer").glob("*.png"))) >= 3
    assert list((out / "dataset_size").glob("*.csv"))


def test_convert_and_checkinfer_never_import_tensorflow(trained, tmp_path):
    code = (
        "import sys\n"
        "from otrain.cli import convert\n"
        f"assert convert.main(['--path', {str(tmp_path)!r}, '--cube', 'c', '--cutouts', "
        f"{str(trained / 'candidates_training')!r}]) == 0\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# -- thresholds, calibration, Monte-Carlo dropout (docs/trust.md) ---------------------


@pytest.fixture(scope="module")
def tuned(trained):
    """A model calibrated and thresholded for a target recall by otrain-train."""
    import os

    here = os.getcwd()
    os.chdir(trained)
    try:
        assert (
            train.main(
                "--cube datacube_test/cube.npz --model-path model --model-name tuned --epochs 3 "
                "--frac 0.3 --calibrate sigmoid --target-recall 0.9 --no-plots "
                "--verbose 0".split()
            )
            == 0
        )
    finally:
        os.chdir(here)
    return trained / "model" / "CNN_training" / "tuned.h5"


def test_train_calibrates_and_chooses_a_threshold(tuned, capsys):
    from otrain.datacube import load_datacube
    from otrain.model_files import load_model, read_record
    from otrain.thresholds import choose_threshold

    record = read_record(tuned)
    assert record["calibration"]["method"] == "sigmoid"
    assert set(record["calibration"]) == {"method", "a", "b"}
    assert record["threshold_rule"]["target_recall"] == 0.9
    folder = tuned.parent / "tuned" / "validation_set" / "datacube"
    tune = load_datacube(folder / "cube_tuning.npz")
    evaluate = load_datacube(folder / "cube_validation.npz")
    cube = load_datacube(tuned.parents[2] / "datacube_test" / "cube.npz")
    assert len(tune) + len(evaluate) == round(0.3 * len(cube))
    model = load_model(tuned)
    # The stored threshold is the one chosen on the tuning half, calibrated scores.
    p_tune = model.predict_proba(tune.cube)[:, 1]
    assert record["threshold"] == choose_threshold(tune.labels, p_tune, target_recall=0.9)
    assert model.threshold_ == record["threshold"]


def test_train_prints_brier_before_and_after(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    assert (
        train.main(
            f"--cube datacube_test/cube.npz --model-path {tmp_path} --model-name iso --epochs 1 "
            "--frac 0.3 --calibrate isotonic --no-plots --verbose 0".split()
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Brier score on the evaluation half" in out and "after calibration" in out
    from otrain.model_files import read_record

    record = read_record(tmp_path / "CNN_training" / "iso.h5")
    assert record["calibration"]["method"] == "isotonic" and "threshold_rule" not in record


def test_threshold_options_exclude_each_other(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    with pytest.raises(SystemExit):
        train.main(
            "--cube datacube_test/cube.npz --model-path m --model-name x "
            "--threshold 0.3 --target-recall 0.9".split()
        )
    assert "not allowed with" in capsys.readouterr().err


def test_infer_labels_with_the_stored_threshold_and_mc_dropout(tuned, trained, tmp_path, capsys):
    from otrain.model_files import read_record

    threshold = read_record(tuned)["threshold"]
    argv = f"--cutouts {trained / 'candidates'} --model {tuned} --outdir {tmp_path}"
    assert infer.main(f"{argv} --mc-samples 4 --seed 1".split()) == 0
    out = capsys.readouterr().out
    assert f"P(real) >= {threshold:g} (threshold stored in the model" in out
    assert "calibrated (sigmoid)" in out
    table = Table.read(tmp_path / "infer_results.ecsv")
    first = table.colnames.index("label1")
    after = ["label1", "label", "label1_std", "status", "reason"]
    assert table.colnames[first : first + 5] == after
    np.testing.assert_array_equal(table["label"], (table["label1"] >= threshold).astype(int))
    assert np.all(table["label1_std"] >= 0) and np.any(table["label1_std"] > 0)
    assert table.meta["threshold"] == threshold and table.meta["calibration"] == "sigmoid"
    first = np.array(table["label1"])
    assert infer.main(f"{argv} --mc-samples 4 --seed 1".split()) == 0
    np.testing.assert_array_equal(Table.read(tmp_path / "infer_results.ecsv")["label1"], first)
    # A given --threshold wins over the stored one.
    assert infer.main(f"{argv} --threshold 0.99".split()) == 0
    table = Table.read(tmp_path / "infer_results.dat", format="ascii.commented_header")
    np.testing.assert_array_equal(table["label"], (table["label1"] >= 0.99).astype(int))
    assert "label1_std" not in table.colnames


def test_train_stores_a_bfloat16_check_and_infer_uses_it(trained, tmp_path, capsys):
    from otrain import load_model
    from otrain.precision import bfloat16_supported

    model = trained / "model" / "CNN_training" / "test.h5"
    check = load_model(model).bfloat16_check_
    assert check["n_stamps"] > 0 and 0 <= check["max_difference"] <= 0.1
    argv = f"--cutouts {trained / 'candidates'} --model {model} --outdir {tmp_path}"
    assert infer.main(f"{argv} --precision float32".split()) == 0
    assert "scored in float32: float32 asked for" in capsys.readouterr().out
    exact = Table.read(tmp_path / "infer_results.ecsv")
    assert infer.main(argv.split()) == 0
    expected = "bfloat16" if bfloat16_supported() and check["passed"] else "float32"
    assert f"scored in {expected}: " in capsys.readouterr().out
    auto = Table.read(tmp_path / "infer_results.ecsv")
    assert list(auto["filename"]) == list(exact["filename"])
    np.testing.assert_allclose(auto["label1"], exact["label1"], atol=0.02)


def test_an_ensemble_is_calibrated_on_its_out_of_fold_scores(trained, tmp_path, capsys):
    """--ensemble: no stamp set aside for calibration; the disagreement gets a column."""
    from otrain.datacube import load_datacube
    from otrain.model_files import read_record

    cube = load_datacube(trained / "datacube_test" / "cube.npz")
    argv = (
        f"--cube {trained / 'datacube_test' / 'cube.npz'} --model-path {tmp_path} "
        "--model-name ens --ensemble 2 --epochs 2 --network vgg6 --calibrate sigmoid "
        "--target-recall 0.9 --no-plots --verbose 0"
    )
    assert train.main(argv.split()) == 0
    out = capsys.readouterr().out
    n_train = len(cube) - round(0.15 * len(cube))
    assert "an ensemble of 2 networks, each on 1 of 2 folds" in out
    assert "trained 2 networks for 2, 2 epochs" in out
    assert f"out-of-fold P(real) of the {n_train} training cutouts" in out
    assert "Brier score on the validation part" in out
    assert "validation part split in two" not in out
    model = tmp_path / "CNN_training" / "ens.h5"
    record = read_record(model)
    assert record["calibration"]["input"] == "log_odds"
    assert record["calibration_fitted_on"] == "out-of-fold"
    assert record["calibration_stamps"] == record["threshold_rule"]["n_tuning"] == n_train
    folder = tmp_path / "CNN_training" / "ens" / "validation_set" / "datacube"
    assert not (folder / "cube_tuning.npz").exists()
    assert len(load_datacube(folder / "cube_validation.npz")) == len(cube) - n_train
    # Fewer stamps than a sigmoid needs: said, not hidden.
    assert "caution: sigmoid calibration fitted on" in out

    outdir = tmp_path / "scores"
    assert (
        infer.main(f"--cutouts {trained / 'candidates'} --model {model} --outdir {outdir}".split())
        == 0
    )
    table = Table.read(outdir / "infer_results.ecsv")
    scored = table["status"] == "scored"
    spread = np.asarray(table["label1_ensemble_std"][scored])
    assert np.all(spread >= 0) and np.any(spread > 0)
    assert "ensemble" in table["label1_ensemble_std"].description
    dat = Table.read(outdir / "infer_results.dat", format="ascii.commented_header")
    assert dat.colnames[-1] == "label1_ensemble_std"


def test_train_help_is_quick_and_has_the_librarys_defaults():
    """otrain-train -h answers without TensorFlow, with CutoutClassifier's defaults."""
    import inspect

    code = (
        "import sys; from otrain.cli import train; train.build_parser().format_help(); "
        "print('tensorflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
    from otrain import CutoutClassifier

    parser = train.build_parser()
    signature = inspect.signature(CutoutClassifier.__init__).parameters
    for name in ("epochs", "patience", "ensemble", "network", "dropout", "batch_size"):
        assert parser.get_default(name) == signature[name].default, name
