"""otrain.dataset_size and otrain-optimise-dataset-size: learning curves over sizes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from conftest import tiny_network
from sklearn.base import BaseEstimator, ClassifierMixin

from otrain import Datacube, DatacubeError, OutputError
from otrain.cli.optimise_dataset_size import PROG, _outdir, build_parser, main
from otrain.dataset_size import (
    METRICS,
    dataset_size_answer,
    dataset_size_curve,
    dataset_size_notes,
    format_dataset_size_table,
    smallest_sufficient_size,
    write_dataset_size_report,
)
from otrain.datasets import make_stamps

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILES = ("csv", "ecsv", "mcc", "f1", "accuracy", "gap", "loss")


def make_cube(n_real=50, n_bogus=50, size=32, seed=0):
    images, labels, meta = make_stamps(n_real, n_bogus, size=size, random_state=seed)
    return Datacube(images, labels, meta)


@pytest.fixture(scope="module")
def curve():
    """One small curve: 100 stamps, 3 sizes x 2 folds of a tiny network."""
    # Imported here: the parallel test's workers import this module, and need no TensorFlow.
    from otrain import CutoutClassifier

    # No early-stopping hold-out: half the Keras set-up per training, for a plumbing test.
    estimator = CutoutClassifier(
        network=tiny_network,
        epochs=2,
        batch_size=32,
        learning_rate=5e-3,
        validation_fraction=0,
        random_state=0,
    )
    return dataset_size_curve(make_cube(), estimator=estimator, n_sections=3, folds=2)


@pytest.fixture(scope="module")
def cube_file(tmp_path_factory):
    return make_cube(30, 30).save(tmp_path_factory.mktemp("cube") / "small.npz")


# ---------------------------------------------------------------- the curve


def test_curve_table_columns_and_sizes(curve):
    expected = ["size", "n_real"]
    for metric in METRICS:
        for part in ("train", "valid"):
            expected += [f"{part}_{metric}", f"{part}_{metric}_mean", f"{part}_{metric}_std"]
    expected += ["fit_time", "fit_time_mean", "fit_time_std", "epochs", "epochs_mean"]
    assert curve.colnames == expected
    # 2 folds of 100 stamps: training folds of 50; the smallest subset holds 5 of each class.
    assert list(curve["size"]) == [10, 30, 50]
    assert list(curve["n_real"]) == [5, 15, 25]
    assert curve["valid_mcc"].shape == (3, 2)
    np.testing.assert_allclose(curve["valid_mcc_mean"], np.mean(curve["valid_mcc"], axis=1))
    np.testing.assert_allclose(curve["train_f1_std"], np.std(curve["train_f1"], axis=1))
    assert np.all(np.abs(curve["valid_mcc"]) <= 1)
    for metric in ("f1", "accuracy"):
        assert np.all((curve[f"valid_{metric}"] >= 0) & (curve[f"valid_{metric}"] <= 1))
    # The log loss is stored positive (scikit-learn scores it negated).
    assert np.all(curve["train_loss"] > 0) and np.all(curve["valid_loss"] > 0)
    assert np.all(curve["fit_time"] > 0) and str(curve["fit_time"].unit) == "s"
    assert curve.meta["folds"] == 2 and curve.meta["n_real"] == 50
    assert curve.meta["estimator"] == "CutoutClassifier"
    assert curve.meta["estimator_params"]["epochs"] == 2
    # Without a hold-out there is no early stopping: every training ran its 2 epochs.
    assert np.all(curve["epochs"] == 2) and np.all(curve["epochs_mean"] == 2)


class Recorder(ClassifierMixin, BaseEstimator):
    """Predicts the training prior; logs which stamps (numbered pixels) it was fitted on."""

    fits = []

    def __init__(self, threads=None):
        self.threads = threads

    def fit(self, X, y):
        if self.threads is not None:
            seen = os.environ.get("TF_NUM_INTRAOP_THREADS")
            if seen != self.threads:
                raise ValueError(f"worker has TF_NUM_INTRAOP_THREADS={seen}")
        Recorder.fits.append(np.asarray(X)[:, 0, 0, 0].astype(int))
        self.classes_ = np.array([0, 1])
        self.prior_ = np.bincount(y, minlength=2) / len(y)
        return self

    def predict_proba(self, X):
        return np.tile(self.prior_, (len(X), 1))

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def numbered_cube(n_real, n_bogus, seed=3):
    """Stamps whose pixels hold their own index, labels shuffled."""
    n = n_real + n_bogus
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 4, 4, 1))
    labels = np.random.default_rng(seed).permutation(np.r_[np.ones(n_real), np.zeros(n_bogus)])
    return Datacube(images.copy(), labels.astype(int), Table())


def test_every_training_subset_keeps_both_classes_and_nests():
    # Imbalanced: 1 real for 9 bogus. Random prefixes of 20 miss the reals 12% of the time.
    cube = numbered_cube(30, 270)
    Recorder.fits = []
    table = dataset_size_curve(cube, estimator=Recorder(), n_sections=6, folds=3, random_state=1)
    sizes = list(table["size"])
    assert sizes == sorted(set(sizes)) and sizes[-1] == 200
    assert len(Recorder.fits) == 6 * 3
    # cross_validate's order: size-major, fold-minor.
    subsets = np.array(Recorder.fits, dtype=object).reshape(6, 3)
    for i, size in enumerate(sizes):
        for fold in range(3):
            seen = subsets[i, fold]
            assert len(seen) == size
            real = int(cube.labels[seen].sum())
            assert real >= 5 and real == pytest.approx(size / 10, abs=1)
            if i:
                # Each subset grows the previous one: the curve adds cutouts, never swaps them.
                assert set(subsets[i - 1, fold]) <= set(seen)
    assert list(table["n_real"]) == [min(cube.labels[s].sum() for s in row) for row in subsets]
    # The three folds' training sets differ (stratified k-fold, not one split).
    assert len({tuple(sorted(s)) for s in subsets[-1]}) == 3


def test_same_seed_same_subsets_other_seed_others():
    cube = numbered_cube(20, 40)
    runs = []
    for seed in (0, 0, 1):
        Recorder.fits = []
        dataset_size_curve(cube, estimator=Recorder(), n_sections=2, folds=2, random_state=seed)
        runs.append([tuple(f) for f in Recorder.fits])
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_parallel_workers_get_limited_tensorflow_threads(monkeypatch):
    from joblib import cpu_count
    from joblib.externals.loky import get_reusable_executor

    # Workers inherit the limit when they start: a command starts a fresh pool, but
    # earlier tests in this process may have left one running.
    get_reusable_executor().shutdown(wait=True)

    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    expected = str(max(1, cpu_count() // 2))
    # Recorder.fit raises in a worker that lacks the limit, and the error stops the run.
    table = dataset_size_curve(
        numbered_cube(20, 20), estimator=Recorder(threads=expected), n_sections=2, folds=2, n_jobs=2
    )
    assert len(table) == 2
    # The parent's environment is restored afterwards.
    assert "TF_NUM_INTRAOP_THREADS" not in os.environ


def test_min_size_is_honoured_and_checked():
    table = dataset_size_curve(
        numbered_cube(30, 30), estimator=Recorder(), n_sections=3, folds=3, min_size=20
    )
    assert list(table["size"]) == [20, 30, 40]
    with pytest.raises(ValueError, match=r"min_size=2 leaves a training set without real"):
        dataset_size_curve(numbered_cube(10, 90), estimator=Recorder(), min_size=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_sections": 1}, r"n_sections must be an integer >= 2, got 1"),
        ({"folds": 1}, r"folds must be an integer >= 2, got 1"),
        ({"min_size": 2.5}, r"min_size must be an integer >= 2"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dataset_size_curve(numbered_cube(20, 20), estimator=Recorder(), **kwargs)


def test_too_few_cutouts_names_the_file_and_the_fix(tmp_path):
    path = numbered_cube(2, 40).save(tmp_path / "tiny.npz")
    with pytest.raises(ValueError, match=r"tiny\.npz holds 2 real and 40 bogus.*fewer folds"):
        dataset_size_curve(path, estimator=Recorder(), folds=3)
    path = numbered_cube(3, 3).save(tmp_path / "six.npz")
    with pytest.raises(ValueError, match=r"six\.npz holds too few cutouts \(6\).*add cutouts"):
        dataset_size_curve(path, estimator=Recorder(), folds=3)
    with pytest.raises(DatacubeError, match=r"missing\.npz: no such datacube"):
        dataset_size_curve(tmp_path / "missing.npz")


# ------------------------------------------------------- the answer and the report


def hand_table(mcc, sizes=(100, 200, 400, 800)):
    table = Table(
        {"size": list(sizes), "valid_mcc_mean": mcc, "valid_mcc_std": [0.01] * len(sizes)}
    )
    table.meta["folds"] = 3
    return table


def test_smallest_sufficient_size():
    table = hand_table([0.50, 0.88, 0.90, 0.895])
    assert smallest_sufficient_size(table, 0.02) == 200
    assert smallest_sufficient_size(table, 0.0) == 400
    assert smallest_sufficient_size(table, 0.5) == 100
    # Within the tolerance means >= best - tolerance, boundary included.
    assert smallest_sufficient_size(hand_table([0.5, 0.88, 0.90, 0.90]), 0.02) == 200
    # Failed sizes (NaN) are ignored.
    assert smallest_sufficient_size(hand_table([np.nan, 0.6, np.nan, 0.7]), 0.05) == 800
    # A loss: lower is better.
    loss = Table({"size": [10, 20, 40], "valid_loss_mean": [0.9, 0.32, 0.30]})
    assert smallest_sufficient_size(loss, 0.05, metric="loss") == 20


@pytest.mark.parametrize(
    ("table", "tolerance", "message"),
    [
        (hand_table([0.5, 0.6, 0.7, 0.8]), -0.1, r"tolerance must be a finite number >= 0"),
        (hand_table([0.5, 0.6, 0.7, 0.8]), np.nan, r"tolerance must be a finite number >= 0"),
        (hand_table([np.nan] * 4), 0.02, r"no finite 'valid_mcc_mean' value"),
        (Table({"size": [1, 2]}), 0.02, r"no 'valid_mcc_mean' column"),
    ],
)
def test_smallest_sufficient_size_rejects(table, tolerance, message):
    with pytest.raises(ValueError, match=message):
        smallest_sufficient_size(table, tolerance)


def test_answer_sentences():
    answer = dataset_size_answer(hand_table([0.50, 0.88, 0.90, 0.895]), 0.02)
    assert answer == (
        "About 200 training cutouts are enough: their validation MCC, 0.880 ± 0.010, is "
        "within 0.02 of the best, 0.900 with 400 cutouts (3-fold cross-validation)."
    )
    answer = dataset_size_answer(hand_table([0.50, 0.91, 0.86, 0.80]), 0.02)
    assert answer.startswith("About 200 training cutouts are enough")
    assert "the best of all sizes tried, up to 800 cutouts" in answer
    answer = dataset_size_answer(hand_table([0.5, 0.6, 0.7, 0.8]), 0.02)
    assert answer.startswith("At least 800 ")
    assert "training cutouts are needed, and more would probably help" in answer
    assert "still rising at the largest size tried, 0.800 ± 0.010 with 800 cutouts" in answer


def test_notes_on_noise_and_under_training(curve):
    quiet = hand_table([0.50, 0.88, 0.90, 0.895])
    assert dataset_size_notes(quiet, 0.02) == []
    noisy = hand_table([0.50, 0.88, 0.90, 0.895])
    noisy["valid_mcc_std"][2] = 0.05
    (note,) = dataset_size_notes(noisy, 0.02)
    assert note.startswith("the validation MCC varies by ±0.050 between folds near the answer")
    # Early stopping ended most trainings: nothing to say. Most ran to the limit: say it.
    for ran, expected in (([3, 4, 5, 4], 0), ([5, 5, 5, 4], 1)):
        table = hand_table([0.50, 0.88, 0.90, 0.895])
        table["epochs"] = np.array(ran, dtype=float)[:, np.newaxis]
        table.meta["estimator_params"] = {"epochs": 5}
        assert len(dataset_size_notes(table, 0.02)) == expected
    assert any("6 of 6 trainings ran all 2 epochs" in n for n in dataset_size_notes(curve, 0.02))


def test_report_files(curve, tmp_path):
    paths = write_dataset_size_report(curve, tmp_path / "out", 0.02, name="NAME")
    assert sorted(paths) == sorted(FILES)
    assert paths["csv"] == tmp_path / "out" / "NAME_dataset_size.csv"
    assert paths["mcc"].name == "NAME_mcc_dataset_size.png"
    for key in FILES[2:]:
        assert paths[key].read_bytes()[:8] == PNG_SIGNATURE
    rows = Table.read(paths["csv"], format="ascii.csv")
    assert list(rows["size"]) == [10, 30, 50]
    assert "valid_mcc_mean" in rows.colnames and "valid_mcc" not in rows.colnames
    np.testing.assert_allclose(rows["valid_mcc_mean"], curve["valid_mcc_mean"], atol=5e-5)
    full = Table.read(paths["ecsv"])
    assert full["valid_mcc"].shape == (3, 2)
    assert full.meta["sufficient_size"] == smallest_sufficient_size(curve, 0.02)
    assert full.meta["answer"] == dataset_size_answer(curve, 0.02)
    assert full.meta["notes"] == dataset_size_notes(curve, 0.02)
    # Only the seven files: no temporary file is left behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in paths.values()
    )
    # The ECSV file is enough to draw the figures again.
    again = write_dataset_size_report(full, tmp_path / "again", 0.02)
    assert again["mcc"].name == "mcc_dataset_size.png"
    assert Table.read(again["ecsv"]).meta["answer"] == full.meta["answer"]


def test_report_into_a_file_is_refused(curve, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=r"cannot create the output folder .*file"):
        write_dataset_size_report(curve, blocker / "out", 0.02)


def test_text_table(curve):
    lines = format_dataset_size_table(curve).splitlines()
    assert len(lines) == 4 and lines[0].split()[:2] == ["size", "real"]
    first = curve[0]
    assert f"{first['valid_mcc_mean']:.3f} ± {first['valid_mcc_std']:.3f}" in lines[1]


# ------------------------------------------------------------------ the command


def test_cli_issue_example(cube_file, tmp_path, capsys):
    outdir = tmp_path / "DIR"
    code = main(
        [
            "--cube", str(cube_file),
            "--model-path", str(tmp_path / "model"),
            "--model-name", "NAME",
            "--epochs", "1",
            "--n_sections", "2",
            "--outdir", str(outdir),
            "--folds", "2",
            "--network", "vgg6",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    names = {f"NAME_dataset_size.{ext}" for ext in ("csv", "ecsv")}
    names |= {f"NAME_{key}_dataset_size.png" for key in FILES[2:]}
    assert {p.name for p in outdir.iterdir()} == names
    rows = Table.read(outdir / "NAME_dataset_size.csv", format="ascii.csv")
    assert list(rows["size"]) == [10, 30]
    assert not (tmp_path / "model").exists()
    full = Table.read(outdir / "NAME_dataset_size.ecsv")
    assert full.meta["cube"] == str(cube_file)
    assert full.meta["estimator_params"]["network"] == "vgg6"
    # The answer is the last line before the timing.
    lines = out.strip().splitlines()
    assert lines[-2] == full.meta["answer"] and lines[-1].startswith("done in")
    assert "60 cutouts (30 real, 30 bogus): 2 sizes x 2 folds = 4 trainings" in out


def run_cli(*args):
    return main([str(a) for a in args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-sections", "1"], "n_sections must be an integer >= 2, got 1"),
        (["--network", "resnet"], "--network must be one of otrain, vgg6, got 'resnet'"),
        (["--folds", "40"], "small.npz holds 30 real and 30 bogus cutouts: 40-fold"),
    ],
)
def test_cli_bad_settings_one_line(cube_file, tmp_path, capsys, args, message):
    code = run_cli("--cube", cube_file, "--outdir", tmp_path / "out", *args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"{PROG}: error: ") and message in err


def test_cli_bad_files_one_line(tmp_path, capsys):
    assert run_cli("--cube", tmp_path / "none.npz", "--outdir", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.npz: no such datacube" in err
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip archive")
    assert run_cli("--cube", corrupt, "--outdir", tmp_path / "out") == 2
    assert "corrupt.npz: not a readable datacube" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run_cli("--cube", corrupt, "--outdir", blocker / "out") == 2
    err = capsys.readouterr().err
    assert "cannot create the output folder" in err and "choose a folder" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cube", "c.npz"], "give --outdir DIR or --model-path PATH"),
        (["--cube", "c.npz", "--outdir", "o", "--tolerance", "-1"], "must be a number >= 0"),
        (["--cube", "c.npz", "--outdir", "o", "--epochs", "0"], "must be a whole number >= 1"),
    ],
)
def test_cli_usage_errors(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_outputs_default_to_model_path_name_dataset_size():
    args = build_parser().parse_args(["--cube", "d/cube.npz", "--model-path", "models"])
    assert _outdir(args) == (Path("models/cube/dataset_size"), "cube")
    args = build_parser().parse_args(
        ["--cube", "c.npz", "--model-path", "m", "--model-name", "NAME", "--n-sections", "4"]
    )
    assert _outdir(args) == (Path("m/NAME/dataset_size"), "NAME") and args.n_sections == 4


def test_installed_entry_point(tmp_path):
    # The training itself runs in-process above; here, the console script is wired.
    script = Path(sys.executable).parent / PROG
    if not script.is_file():
        pytest.fail(f"{script} is missing; install the package: pip install -e .")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for flag in ("--cube", "--model-path", "--model-name", "--n_sections", "--n-sections"):
        assert flag in done.stdout
    for flag in ("--outdir", "--epochs", "--dropout", "--folds", "--seed", "--n-jobs"):
        assert flag in done.stdout
    done = subprocess.run(
        [script, "--cube", "cube.npz"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 2
    assert "give --outdir DIR or --model-path PATH" in done.stderr
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())
