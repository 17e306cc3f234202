"""Thresholds, calibration and Monte-Carlo dropout: the trust in a P(real)."""

import numpy as np
import pytest
from conftest import tiny_network
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from otrain import CutoutClassifier
from otrain.calibration import Calibration, calibrate
from otrain.model_files import load_model, read_record, save_model
from otrain.thresholds import choose_threshold

FAST = dict(network=tiny_network, epochs=2, batch_size=32, learning_rate=5e-3, random_state=0)


@pytest.fixture(scope="module")
def fitted(stamps):
    X, y = stamps
    return CutoutClassifier(**FAST).fit(X[:80], y[:80])


# -- thresholds -----------------------------------------------------------------------


def test_target_recall_gives_the_highest_threshold_that_keeps_it():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 500), 0, 1)
    for target in (0.5, 0.9, 0.99, 1.0):
        t = choose_threshold(y, p, target_recall=target)
        recall = np.mean(p[y == 1] >= t)
        assert recall >= target
        # Any higher score as threshold loses the target.
        higher = np.unique(p[p > t])
        if len(higher):
            assert np.mean(p[y == 1] >= higher[0]) < target


def test_target_fpr_gives_the_lowest_threshold_that_keeps_it():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 500), 0, 1)
    for target in (0.01, 0.1, 0.5):
        t = choose_threshold(y, p, target_fpr=target)
        assert np.mean(p[y == 0] >= t) <= target
        # The next lower score as threshold breaks the target.
        lower = p[p < t].max()
        assert np.mean(p[y == 0] >= lower) > target


def test_threshold_examples_and_rule_is_greater_or_equal():
    y = [0, 0, 0, 1, 1, 1, 1]
    p = [0.1, 0.4, 0.7, 0.3, 0.6, 0.8, 0.9]
    assert choose_threshold(y, p, target_recall=0.75) == 0.6
    assert choose_threshold(y, p, target_recall=1.0) == 0.3
    assert choose_threshold(y, p, target_fpr=0.34) == 0.5
    assert choose_threshold(y, p, target_fpr=1.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"target_recall": 0.9, "target_fpr": 0.1}, "exactly one"),
        ({"target_recall": 0.0}, "target_recall must be a number in \\(0, 1\\]"),
        ({"target_fpr": 1.5}, "target_fpr must be"),
    ],
)
def test_bad_targets_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        choose_threshold([0, 1], [0.2, 0.8], **kwargs)


def test_one_class_or_saturated_bogus_is_a_clear_error():
    with pytest.raises(ValueError, match="real and bogus"):
        choose_threshold([1, 1], [0.2, 0.8], target_recall=0.9)
    with pytest.raises(ValueError, match="score exactly 1"):
        choose_threshold([0, 0, 1], [1.0, 1.0, 1.0], target_fpr=0.1)


# -- calibration ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_stored_map_reproduces_sklearn_calibration(fitted, stamps, method):
    X, y = stamps
    X_cal, y_cal, X_new = X[80:], y[80:], X[:40]
    reference = CalibratedClassifierCV(FrozenEstimator(fitted), method=method).fit(X_cal, y_cal)
    expected = reference.predict_proba(X_new)
    raw = fitted.predict_proba(X_new)
    try:
        calibrate(fitted, X_cal, y_cal, method=method)
        got = fitted.predict_proba(X_new)
        assert fitted.calibration_.method == method
        np.testing.assert_allclose(got, expected, atol=1e-6)
        np.testing.assert_allclose(got.sum(axis=1), 1.0)
        # Re-calibrating starts from the raw probabilities, not the calibrated ones.
        calibrate(fitted, X_cal, y_cal, method=method)
        np.testing.assert_allclose(fitted.predict_proba(X_new), expected, atol=1e-6)
    finally:
        fitted.calibration_ = None
    np.testing.assert_allclose(fitted.predict_proba(X_new), raw)


def test_calibration_lowers_brier_of_a_miscalibrated_score():
    # An over-confident score: the true P(real) is 0.5 + (s - 0.5) / 4.
    rng = np.random.default_rng(0)
    s = rng.uniform(0, 1, 4000)
    y = (rng.uniform(0, 1, 4000) < 0.5 + (s - 0.5) / 4).astype(int)
    from sklearn.calibration import _SigmoidCalibration

    mapping = _SigmoidCalibration().fit(s[:2000], y[:2000])
    cal = Calibration("sigmoid", {"a": mapping.a_, "b": mapping.b_})
    before = np.mean((s[2000:] - y[2000:]) ** 2)
    after = np.mean((cal.apply(s[2000:]) - y[2000:]) ** 2)
    assert after < before - 0.02


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_calibration_and_threshold_travel_in_the_model_file(fitted, stamps, tmp_path, suffix):
    X, y = stamps
    try:
        fitted.calibrate(X[80:], y[80:], method="isotonic")
        expected = fitted.predict_proba(X[:20])
        path = save_model(fitted, tmp_path / f"m{suffix}", extra={"threshold": 0.37})
    finally:
        fitted.calibration_ = None
        fitted.threshold_ = None
    record = read_record(path)
    assert record["threshold"] == 0.37
    assert record["calibration"]["method"] == "isotonic"
    assert len(record["calibration"]["x"]) == len(record["calibration"]["y"]) >= 2
    assert path.read_bytes().count(b"pickle") == 0
    loaded = load_model(path)
    assert loaded.threshold_ == 0.37 and loaded.calibration_.method == "isotonic"
    np.testing.assert_allclose(loaded.predict_proba(X[:20]), expected, atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(X[:20]), (expected[:, 1] >= 0.37).astype(int))


def test_bad_calibration_settings():
    with pytest.raises(ValueError, match="sigmoid, isotonic"):
        Calibration("platt", {"a": 1, "b": 0})
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibration("isotonic", {"x": [0, 1], "y": [1, 0]})
    with pytest.raises(ValueError, match="sigmoid, isotonic"):
        calibrate(CutoutClassifier(), np.zeros((2, 8, 8, 1)), [0, 1], method="beta")


# -- Monte-Carlo dropout --------------------------------------------------------------


def test_mc_dropout_spreads_and_is_reproducible(fitted, stamps):
    X, _ = stamps
    mean, std = fitted.predict_proba_mc(X[:30], n_samples=10, random_state=3)
    assert mean.shape == std.shape == (30, 2)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0)
    assert np.all(std[:, 1] > 0) and np.all(std[:, 1] < 0.5)
    again = fitted.predict_proba_mc(X[:30], n_samples=10, random_state=3)
    np.testing.assert_array_equal(mean, again[0])
    np.testing.assert_array_equal(std, again[1])
    other, _ = fitted.predict_proba_mc(X[:30], n_samples=10, random_state=4)
    assert np.abs(other - mean).max() > 0
    # The mean of the draws is close to the deterministic probability.
    assert np.abs(mean - fitted.predict_proba(X[:30])).mean() < 0.1


def test_mc_dropout_keeps_the_augmentation_off(stamps):
    X, y = stamps
    # No dropout, but the random rotations/flips layer in the model (models trained
    # by otrain <= 0.2 hold it; newer ones see the rotations in their batches): if it
    # were on, the draws of these asymmetric stamps would differ.
    from otrain.networks import build_model

    clf = CutoutClassifier(**{**FAST, "dropout": 0.0}).fit(X[:60], y[:60])
    clf.model_ = build_model(
        X.shape[1:], network=FAST["network"], augment=True, dropout=0.0, seed=0
    )
    assert any(layer.name == "augmentation" for layer in clf.model_.layers)
    mean, std = clf.predict_proba_mc(X[:20], n_samples=4, random_state=0)
    assert std.max() == 0.0
    np.testing.assert_allclose(mean, clf.predict_proba(X[:20]), atol=1e-6)
    # The augmentation does change the probabilities when it is on.
    training_mode = np.asarray(clf.model_(X[:20], training=True))
    assert np.abs(training_mode - clf.predict_proba(X[:20])).max() > 1e-6


def test_mc_dropout_errors(fitted, stamps):
    with pytest.raises(ValueError, match="at least 2"):
        fitted.predict_proba_mc(stamps[0][:2], n_samples=1)


# -- otrain-calibrate ---------------------------------------------------------------------


def test_otrain_calibrate_writes_a_new_calibrated_model(fitted, stamps, tmp_path, capsys):
    import subprocess
    import sys

    from astropy.table import Table

    from otrain.cli import calibrate as calibrate_cli
    from otrain.datacube import Datacube

    X, y = stamps
    model = save_model(fitted, tmp_path / "m.keras", extra={"threshold": 0.4})
    cube = Datacube(X[80:], y[80:], Table({"candid": [str(i) for i in range(40)]}), ("DIFF",))
    cube_path = cube.save(tmp_path / "valid.npz")
    before = model.read_bytes()
    assert calibrate_cli.main(["--model", str(model), "--cube", str(cube_path)]) == 0
    out = capsys.readouterr().out
    output = tmp_path / "m_calibrated.keras"
    n_real = int(y[80:].sum())
    assert f"40 stamps ({n_real} real, {40 - n_real} bogus)" in out
    assert "caution: sigmoid calibration fitted on" in out
    assert f"calibrated model written to {output}" in out
    assert model.read_bytes() == before  # the original is never touched
    loaded = load_model(output)
    assert loaded.calibration_.method == "sigmoid"
    assert loaded.threshold_ == 0.4  # kept
    assert read_record(output)["calibration_stamps"] == 40
    # A trained model is not replaced without --overwrite; --target-recall picks anew.
    assert calibrate_cli.main(["--model", str(model), "--cube", str(cube_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    argv = ["--model", str(model), "--cube", str(cube_path), "--target-recall", "0.9"]
    assert calibrate_cli.main([*argv, "--overwrite", "--method", "isotonic"]) == 0
    out = capsys.readouterr().out
    assert "threshold" in out and "chosen for target recall 0.9" in out
    assert "prefer sigmoid on small sets" in out
    reloaded = load_model(output)
    assert reloaded.calibration_.method == "isotonic"
    p = reloaded.predict_proba(X[80:])[:, 1]
    assert np.mean(p[y[80:] == 1] >= reloaded.threshold_) >= 0.9
    # The installed command answers too.
    bindir = sys.executable.rsplit("/", 1)[0]
    result = subprocess.run(
        [
            f"{bindir}/otrain-calibrate",
            *("--model", str(model), "--cube", str(tmp_path / "no.npz")),
            *("--output", str(tmp_path / "other.keras")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no.npz" in result.stderr
    assert result.stderr.count("\n") == 1
