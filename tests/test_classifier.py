"""CutoutClassifier: a real scikit-learn classifier, reproducible, NaN-safe."""

import pickle

import numpy as np
import pytest
from conftest import tiny_network
from sklearn.base import clone, is_classifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedKFold,
    check_cv,
    cross_val_score,
)
from sklearn.pipeline import make_pipeline

from otrain import CutoutClassifier, CutoutError, CutoutLoader, NotFittedError

FAST = dict(network=tiny_network, epochs=2, batch_size=32, learning_rate=5e-3, random_state=1)


@pytest.fixture(scope="module")
def fitted(stamps):
    X, y = stamps
    return CutoutClassifier(**FAST).fit(X, y)


def test_sklearn_sees_a_classifier():
    clf = CutoutClassifier()
    assert is_classifier(clf)
    assert isinstance(
        check_cv(5, np.array([0, 1] * 10), classifier=is_classifier(clf)), StratifiedKFold
    )


def test_cross_val_score_is_stratified_and_roc_auc_works(stamps):
    X, y = stamps
    scores = cross_val_score(CutoutClassifier(**FAST), X, y, cv=3, scoring="roc_auc")
    assert np.isfinite(scores).all() and scores.mean() > 0.8


def test_predict_proba_columns_are_bogus_real(fitted, stamps):
    X, y = stamps
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(y), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert list(fitted.classes_) == [0, 1]
    # Column 1 is P(real): it ranks the real stamps first.
    assert roc_auc_score(y, proba[:, 1]) > 0.95
    np.testing.assert_array_equal(fitted.predict(X), (proba[:, 1] > 0.5).astype(int))


def test_one_stamp_gives_one_row(fitted, stamps):
    X, _ = stamps
    assert fitted.predict_proba(X[:1]).shape == (1, 2)


def test_same_seed_same_probabilities(stamps):
    X, y = stamps
    a = CutoutClassifier(**FAST).fit(X, y).predict_proba(X)
    b = CutoutClassifier(**FAST).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    c = CutoutClassifier(**{**FAST, "random_state": 2}).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, c)


def test_clone_and_pickle_keep_predictions(fitted, stamps):
    X, _ = stamps
    expected = fitted.predict_proba(X)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict_proba(X), expected)
    cloned = clone(fitted)
    assert cloned.get_params()["network"] is tiny_network and not cloned.initialized_


def test_nan_and_inf_pixels_give_finite_probabilities(fitted, stamps):
    X, _ = stamps
    bad = X[:4].copy()
    bad[0] = np.nan
    bad[1, :10] = np.nan
    bad[2, 5, 5] = np.inf
    bad[3, 5, 5] = -np.inf
    assert np.isfinite(fitted.predict_proba(bad)).all()


def nan_network(inputs, *, dropout=0.3):
    """A network whose weights are NaN: its loss is NaN from the first batch."""
    import keras

    x = keras.layers.Flatten()(inputs)
    return keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(np.nan))(x)


def test_diverging_training_is_a_clear_error(stamps):
    X, y = stamps
    clf = CutoutClassifier(**{**FAST, "network": nan_network, "epochs": 2})
    with pytest.raises(ValueError, match="training diverged.*learning rate"):
        clf.fit(X, y)


def test_training_with_nan_stamps(stamps):
    X, y = stamps
    X = X.copy()
    X[:10, :8] = np.nan
    clf = CutoutClassifier(**{**FAST, "epochs": 1}).fit(X, y)
    assert np.isfinite(clf.history_["loss"]).all()


def test_wrong_stamp_size_is_a_clear_error(fitted):
    with pytest.raises(CutoutError, match="stamps of 20x20x1.*model takes 32x32x1.*cutout_size=32"):
        fitted.predict_proba(np.zeros((2, 20, 20, 1), np.float32))


def test_not_fitted_error():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        CutoutClassifier().predict_proba(np.zeros((1, 8, 8, 1)))


@pytest.mark.parametrize(
    "y, message",
    [
        (np.zeros(8), "holds 1 class.*two classes"),
        (np.array([0, 1, 2, 0, 1, 2, 0, 1]), "holds 3 classes"),
        (np.linspace(0, 1, 8), "Unknown label type: continuous"),
        (None, "requires y to be passed"),
    ],
)
def test_bad_targets_are_clear_errors(y, message):
    with pytest.raises(ValueError, match=message):
        CutoutClassifier().fit(np.zeros((8, 8, 8, 1), np.float32), y)


def test_paths_are_rejected_with_a_hint():
    with pytest.raises(ValueError, match="CutoutLoader"):
        CutoutClassifier().fit(np.array(["a.fits", "b.fits"]), [0, 1])


def test_early_stopping_uses_a_validation_fraction(stamps):
    X, _ = stamps
    # Labels without signal: the validation loss soon stops improving.
    y = np.random.default_rng(0).permutation([0, 1] * (len(X) // 2))
    clf = CutoutClassifier(**{**FAST, "epochs": 30, "patience": 2}).fit(X, y)
    assert "val_loss" in clf.history_
    assert len(clf.history_["loss"]) < 30


def test_no_validation_fraction_trains_all_epochs(stamps):
    X, y = stamps
    clf = CutoutClassifier(**{**FAST, "validation_fraction": 0.0}).fit(X, y)
    assert "val_loss" not in clf.history_ and len(clf.history_["loss"]) == FAST["epochs"]


@pytest.mark.parametrize("network", ["otrain", "vgg6"])
def test_builtin_networks_any_size_and_channels(network):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 40, 40, 3)).astype(np.float32)
    y = np.array([0, 1] * 8)
    clf = CutoutClassifier(network=network, epochs=1, validation_fraction=0, random_state=0)
    assert clf.fit(X, y).predict_proba(X).shape == (16, 2)
    assert clf.model_.input_shape == (None, 40, 40, 3)


def test_bad_settings_are_reported_at_fit(stamps):
    X, y = stamps
    with pytest.raises(ValueError, match="normalisation must be one of robust, l2, none"):
        CutoutClassifier(normalisation="zscale").fit(X, y)
    with pytest.raises(ValueError, match="network must be one of otrain, vgg6"):
        CutoutClassifier(network="resnet").fit(X, y)


def test_grid_search_over_a_pipeline_fed_with_paths(training_folder):
    paths = sorted(str(p) for p in training_folder.glob("*/*.fits"))
    y = np.array([1 if "/true/" in p else 0 for p in paths])
    pipe = make_pipeline(CutoutLoader(), CutoutClassifier(**FAST))
    search = GridSearchCV(
        pipe, {"cutoutclassifier__learning_rate": [1e-3, 3e-3]}, cv=2, scoring="roc_auc"
    )
    search.fit(np.array(paths), y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_score_ > 0.5
    assert search.best_params_["cutoutclassifier__learning_rate"] in (1e-3, 3e-3)
    assert search.predict_proba(np.array(paths[:3])).shape == (3, 2)


def test_optimizer_setting_is_used(stamps):
    import keras

    X, y = stamps
    clf = CutoutClassifier(**{**FAST, "epochs": 1, "optimizer": "sgd", "learning_rate": 0.05})
    clf.fit(X, y)
    assert isinstance(clf.model_.optimizer, keras.optimizers.SGD)
    assert float(clf.model_.optimizer.learning_rate) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="optimizer must be a Keras optimizer"):
        CutoutClassifier(**{**FAST, "optimizer": 3}).fit(X, y)
