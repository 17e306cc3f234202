"""CutoutClassifier as a scikit-learn estimator: its own randomness, its fitted state,
its parameter checks, and the contracts of scikit-learn's 2-D checks, on stamps."""

import random
import threading

import joblib
import numpy as np
import pytest
from conftest import tiny_network, tiny_network_without_seed
from sklearn.base import clone

from otrain import CutoutClassifier, NotFittedError
from otrain.networks import n_dihedral_views


def _small(stamps, n=60):
    X, y = stamps
    return X[:n], y[:n]


def _p(classifier, X):
    return classifier.predict_proba(X)[:, 1]


def _clf(**params):
    # Several batches an epoch: the order of the batches is part of what is seeded.
    return CutoutClassifier(network=tiny_network, epochs=2, batch_size=16, **params)


# -- randomness ------------------------------------------------------------------------


def test_seeded_fit_then_unseeded_fit(stamps):
    X, y = _small(stamps)
    _clf(random_state=0).fit(X, y)
    # scikeras left TensorFlow's op determinism on: this raised "Random ops require a seed".
    unseeded = _clf().fit(X, y)
    assert np.all(np.isfinite(_p(unseeded, X)))


def test_process_wide_random_state_is_neither_read_nor_changed(stamps):
    import tensorflow as tf
    from tensorflow.python.framework import config

    X, y = _small(stamps)
    random.seed(11)
    np.random.seed(11)  # noqa: NPY002 - the process-wide stream is what is tested
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    first = _p(_clf(random_state=4).fit(X, y), X)
    assert random.getstate() == python_state
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])  # noqa: NPY002
    assert not config.is_op_determinism_enabled()
    # Other draws from the process-wide streams do not change the model.
    random.random()
    np.random.random(5)  # noqa: NPY002
    tf.random.set_seed(123)
    try:
        again = _p(_clf(random_state=4).fit(X, y), X)
    finally:
        tf.random.set_seed(None)
    np.testing.assert_array_equal(first, again)


def test_user_network_without_seed_is_reseeded(stamps):
    X, y = _small(stamps)

    def fit():
        clf = CutoutClassifier(
            network=tiny_network_without_seed, epochs=2, batch_size=16, random_state=6
        )
        return _p(clf.fit(X, y), X)

    first = fit()
    random.random()  # Keras draws unseeded layers' seeds from this stream
    np.testing.assert_array_equal(fit(), first)


def test_random_state_kinds(stamps):
    X, y = _small(stamps)
    by_int = _p(_clf(random_state=5).fit(X, y), X)
    rs1 = _p(_clf(random_state=np.random.RandomState(1)).fit(X, y), X)
    rs1_again = _p(_clf(random_state=np.random.RandomState(1)).fit(X, y), X)
    rs2 = _p(_clf(random_state=np.random.RandomState(2)).fit(X, y), X)
    gen = _p(_clf(random_state=np.random.default_rng(1)).fit(X, y), X)
    np.testing.assert_array_equal(rs1, rs1_again)
    # Every RandomState gave the model of seed 0 (scikeras drew randint(low=1)).
    assert not np.allclose(rs1, rs2)
    assert not np.allclose(rs1, by_int)
    assert np.all(np.isfinite(gen))
    with pytest.raises(ValueError, match="random_state must be None, an int"):
        _clf(random_state="seven").fit(X, y)


def test_same_seed_same_model_in_threads(stamps):
    X, y = _small(stamps)
    alone = _p(_clf(random_state=8).fit(X, y), X)
    results = [None, None]

    def fit(i):
        results[i] = _p(_clf(random_state=8).fit(X, y), X)

    threads = [threading.Thread(target=fit, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    np.testing.assert_allclose(results[0], alone, atol=1e-6)
    np.testing.assert_allclose(results[1], alone, atol=1e-6)


def test_builtin_network_is_seeded_without_python_random(stamps):
    X, y = _small(stamps, 40)
    state = random.getstate()
    a = CutoutClassifier(network="vgg6", epochs=1, batch_size=16, random_state=2).fit(X, y)
    # Layer seeds came from Python's `random` stream (and advanced it).
    assert random.getstate() == state
    b = CutoutClassifier(network="vgg6", epochs=1, batch_size=16, random_state=2).fit(X, y)
    np.testing.assert_array_equal(_p(a, X), _p(b, X))


# -- fitted state ------------------------------------------------------------------------


def test_fit_resets_everything_a_previous_fit_left(stamps, tmp_path):
    from otrain.model_files import load_model, save_model

    X, y = _small(stamps)
    clf = _clf(random_state=0).fit(X, y, channels=["diff"])
    assert clf.channels_ == ("DIFF",)
    clf.calibrate(X, y)
    clf.set_threshold(0.3)
    clf.check_bfloat16(X[:10])
    save_model(clf, tmp_path / "a.keras")
    assert clf.model_file_record_["threshold"] == 0.3
    clf.fit(X, y)
    for name in (
        "calibration_",
        "threshold_",
        "bfloat16_check_",
        "channels_",
        "model_file_record_",
    ):
        assert getattr(clf, name) is None, name
    save_model(clf, tmp_path / "b.keras")
    record = load_model(tmp_path / "b.keras").model_file_record_
    assert "calibration" not in record and "threshold" not in record
    loaded = load_model(tmp_path / "a.keras")
    assert loaded.threshold_ == 0.3 and loaded.calibration_ is not None
    loaded.fit(X, y)
    assert loaded.threshold_ is None and loaded.calibration_ is None


def test_stamp_shape_and_n_features_in(stamps):
    X, y = _small(stamps)
    clf = _clf(random_state=0).fit(X, y)
    assert clf.stamp_shape_ == (32, 32, 1)
    assert clf.n_features_in_ == 32 * 32


def test_set_threshold_is_checked(stamps):
    X, y = _small(stamps)
    with pytest.raises(NotFittedError):
        _clf().set_threshold(0.5)
    clf = _clf(random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="threshold must be a number between 0 and 1"):
        clf.set_threshold(1.5)
    np.testing.assert_array_equal(clf.set_threshold(0.0).predict(X), np.ones(len(X)))


# -- validation ----------------------------------------------------------------------------


def test_misspelled_parameter_names_the_close_match(stamps):
    X, y = _small(stamps)
    with pytest.raises(ValueError, match=r"unknown parameter 'epoch'; did you mean 'epochs'"):
        CutoutClassifier(network=tiny_network, epoch=1).fit(X, y)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout must lie in \[0, 1\)"),
        ({"learning_rate": 0}, "learning_rate must be a positive number"),
        ({"validation_fraction": 1}, r"validation_fraction must lie in \[0, 1\)"),
        ({"patience": -1}, "patience must be at least 0"),
        ({"epochs": 2.5}, "epochs must be a whole number"),
        ({"normalisation": "robustt"}, "did you mean 'robust'"),
        ({"network": "vgg"}, "did you mean 'vgg6'"),
        ({"class_weight": "equal"}, "class_weight must be 'balanced'"),
        ({"augment": "yes"}, "augment must be True or False"),
    ],
)
def test_bad_settings_name_the_parameter(stamps, params, message):
    X, y = _small(stamps, 20)
    clf = CutoutClassifier(**{"network": tiny_network, "epochs": 1, **params})
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)


def test_score_before_fit_is_not_fitted(stamps):
    X, y = _small(stamps)
    with pytest.raises(NotFittedError):
        _clf().score(X, y)


def test_bad_sample_weight_y_and_empty_input(stamps):
    X, y = _small(stamps)
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(3,\), expected \(60,\)"):
        _clf().fit(X, y, sample_weight=[1.0, 2.0, 3.0])
    y_nan = y.astype(float)
    y_nan[3] = np.nan
    with pytest.raises(ValueError, match="y contains NaN"):
        _clf().fit(X, y_nan)
    clf = _clf(random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="0 sample"):
        clf.predict([])


def test_tags_say_stamps_not_tables():
    from sklearn.utils import get_tags

    tags = get_tags(CutoutClassifier())
    assert tags.input_tags.two_d_array is False
    assert tags.input_tags.three_d_array is True
    assert tags.input_tags.allow_nan is True
    assert tags.estimator_type == "classifier"


# -- the contracts of scikit-learn's 2-D checks, on stamps -----------------------------------


@pytest.fixture(scope="module")
def fitted_pair(stamps):
    X, y = _small(stamps)
    return _clf(random_state=3).fit(X, y), X, y


def test_fit_is_idempotent(fitted_pair):
    clf, X, y = fitted_pair
    before = _p(clf, X)
    clf2 = clone(clf).fit(X, y)
    clf2.fit(X, y)
    np.testing.assert_array_equal(_p(clf2, X), before)


def test_predictions_do_not_depend_on_sample_order_or_subsets(fitted_pair):
    clf, X, _ = fitted_pair
    whole = _p(clf, X)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(_p(clf, X[order]), whole[order], atol=1e-6)
    parts = np.concatenate([_p(clf, X[i : i + 7]) for i in range(0, len(X), 7)])
    np.testing.assert_allclose(parts, whole, atol=1e-6)


def test_read_only_memmap_input(fitted_pair, tmp_path):
    clf, X, y = fitted_pair
    path = tmp_path / "stamps.npy"
    np.save(path, X)
    X_mm = np.load(path, mmap_mode="r")
    assert not X_mm.flags.writeable
    fitted = clone(clf).fit(X_mm, y)
    np.testing.assert_array_equal(_p(fitted, X_mm), _p(clf, X))


def test_sample_weight_ones_and_zeros(fitted_pair):
    clf, X, y = fitted_pair
    reference = _p(clf, X)
    ones = _p(clone(clf).fit(X, y, sample_weight=np.ones(len(y))), X)
    np.testing.assert_array_equal(ones, reference)
    # Zero weight is the same as leaving the stamp out.
    weights = np.ones(len(y))
    weights[:10] = 0
    zeroed = _p(clone(clf).fit(X, y, sample_weight=weights), X)
    left_out = _p(clone(clf).fit(X[10:], y[10:]), X)
    np.testing.assert_array_equal(zeroed, left_out)


def test_fit_does_not_change_parameters_or_sample_weight(stamps):
    X, y = _small(stamps)
    weights = np.ones(len(y))
    fixed = _clf(random_state=1)
    before = joblib.hash(fixed.get_params())
    fixed.fit(X, y, sample_weight=weights)
    assert joblib.hash(fixed.get_params()) == before
    np.testing.assert_array_equal(weights, np.ones(len(y)))


# -- quiet by default ------------------------------------------------------------------------

_QUIET_SCRIPT = """
import numpy as np
from conftest import tiny_network
from otrain import CutoutClassifier, load_model, save_model

rng = np.random.default_rng(0)
X = rng.normal(size=(40, 16, 16, 1)).astype("float32")
y = np.array([0, 1] * 20)
clf = CutoutClassifier(network=tiny_network, epochs=2, verbose=0, random_state=0).fit(X, y)
save_model(clf, "m.keras")
# Many models scored one after the other (an ensemble, a grid search's winners):
# otrain's forward function is traced once per model, never warned about.
for _ in range(7):
    load_model("m.keras").predict_proba(X)
"""


def test_import_fit_and_scoring_write_nothing_to_stderr(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-c", _QUIET_SCRIPT],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "m.keras").is_file()


# -- where CutoutLoader lives ------------------------------------------------------------------


def test_cutout_loader_pickles_of_0_1_0_still_load():
    import pickle
    from pathlib import Path

    from otrain.loader import CutoutLoader

    # Made by otrain 0.1.0, which pickled the class as otrain.cutouts.CutoutLoader.
    old = (Path(__file__).parent / "data" / "cutout_loader_otrain_0.1.0.pkl").read_bytes()
    assert b"otrain.cutouts" in old
    loader = pickle.loads(old)
    assert type(loader) is CutoutLoader
    assert loader.get_params() == {
        "channels": ("SCI", "REF", "DIFF"),
        "cutout_size": 32,
        "n_jobs": None,
    }
    new = pickle.dumps(loader)
    assert b"otrain.loader" in new and b"otrain.cutouts" not in new
    assert CutoutLoader.__module__ == "otrain.loader"


def test_how_the_training_ran_is_recorded(stamps):
    X, y = _small(stamps)
    clf = CutoutClassifier(
        network=tiny_network, epochs=3, batch_size=16, patience=50, random_state=0
    ).fit(X, y)
    # 60 stamps, 9 held out for early stopping: 51, each in its 8 rotations and
    # flips, in 26 batches of 16 an epoch.
    assert (clf.n_epochs_, clf.n_steps_, clf.stopped_early_) == (3, 78, False)
    assert clf.best_epoch_ == int(np.argmin(clf.history_["val_loss"])) + 1
    assert clf.networks_ == [
        {"n_epochs": 3, "n_steps": 78, "best_epoch": clf.best_epoch_, "stopped_early": False}
    ]
    no_valid = CutoutClassifier(
        network=tiny_network,
        epochs=2,
        batch_size=16,
        validation_fraction=0,
        augment=False,
        random_state=0,
    ).fit(X, y)
    # Without augmentation an epoch is the 60 stamps once: 4 batches.
    assert (no_valid.n_epochs_, no_valid.n_steps_, no_valid.best_epoch_) == (2, 8, 2)
    no_valid.partial_fit(X, y)
    assert (no_valid.n_epochs_, no_valid.n_steps_) == (3, 12)


def test_an_epoch_shows_every_stamp_in_each_rotation_and_flip_once():
    from otrain.classifier import _Batches
    from otrain.networks import dihedral

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 4, 4, 1)).astype(np.float32)
    y = np.arange(5)
    batches = _Batches(X, y, None, 7, shuffle=True, seed=3, first_epoch=0, views=8)
    assert len(batches) == 6  # 40 views in batches of 7
    seen = [
        (int(label), stamp.tobytes())
        for index in range(len(batches))
        for stamp, label in zip(*batches[index], strict=True)
    ]
    expected = [(i, dihedral(X[i : i + 1], v)[0].tobytes()) for i in range(5) for v in range(8)]
    assert sorted(seen) == sorted(expected)
    # The eight views of a stamp are eight different arrays.
    assert len({b for _, b in expected}) == 40
    first = [label for label, _ in seen]
    batches.on_epoch_end()
    again = [int(v) for index in range(len(batches)) for v in batches[index][1]]
    assert first != again  # a new order each epoch
    # Rectangular stamps have four symmetries (no transpose).
    assert n_dihedral_views((63, 41, 3)) == 4 and n_dihedral_views((63, 63)) == 8


def test_an_ensemble_is_cross_fitted_and_scored_as_one_model(stamps, tmp_path):
    from otrain import load_model, save_model
    from otrain.networks import ensemble_members

    X, y = _small(stamps)
    clf = CutoutClassifier(
        network=tiny_network, ensemble=3, epochs=1, batch_size=16, random_state=0
    ).fit(X, y, channels=["DIFF"])
    networks = ensemble_members(clf.model_)
    assert [n.name for n in networks] == ["network_1", "network_2", "network_3"]
    assert len(clf.networks_) == 3 and clf.n_steps_ == sum(r["n_steps"] for r in clf.networks_)
    # Each stamp scored once, by the network that did not train on it.
    assert clf.oof_p_real_.shape == (len(y),) and np.all(np.isfinite(clf.oof_p_real_))
    np.testing.assert_array_equal(clf.oof_y_, y)
    each = clf.predict_proba_networks(X)
    assert each.shape == (len(y), 3)
    # The ensemble's P(real) is the mean of its networks' log-odds.
    clipped = np.clip(each, 1e-7, 1 - 1e-7)
    mean_log_odds = np.mean(np.log(clipped) - np.log1p(-clipped), axis=1)
    np.testing.assert_allclose(
        clf.predict_proba(X)[:, 1], 1 / (1 + np.exp(-mean_log_odds)), atol=1e-5
    )
    clf.calibrate(method="sigmoid")
    assert clf.calibration_.input == "log_odds"
    calibrated = clf.predict_proba(X)[:, 1]
    path = tmp_path / "ensemble.keras"
    save_model(clf, path)
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.predict_proba(X)[:, 1], calibrated, atol=1e-6)
    assert loaded.predict_proba_networks(X).shape == (len(y), 3)
    # Grad-CAM explains the ensemble (its networks' maps, averaged), by layer name too;
    # Monte-Carlo dropout draws in every network.
    from otrain.gradcam import conv_layer_names, grad_cam

    assert conv_layer_names(loaded) == [f"network_{k}/conv_tiny" for k in (1, 2, 3)]
    maps = grad_cam(loaded, X[:4])
    assert maps.shape == X[:4].shape[:3] and 0 <= maps.min() and maps.max() <= 1
    one = grad_cam(loaded, X[:4], layer="network_2/conv_tiny")
    # The class each map explains is the one the ensemble's network output calls.
    called = (loaded.model_.predict(X[:4], verbose=0)[:, 1] >= 0.5).astype(int)
    np.testing.assert_allclose(one, grad_cam(networks[1], X[:4], target=called), atol=1e-5)
    mean, std = loaded.predict_proba_mc(X[:4], n_samples=3, random_state=0)
    assert mean.shape == std.shape == (4, 2) and np.all(std[:, 1] > 0)
    # Same seed, same ensemble.
    again = CutoutClassifier(
        network=tiny_network, ensemble=3, epochs=1, batch_size=16, random_state=0
    ).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba_networks(X), each)
    np.testing.assert_array_equal(again.oof_p_real_, clf.oof_p_real_)


def test_cross_fitted_calibration_needs_an_ensemble(stamps):
    X, y = _small(stamps)
    single = CutoutClassifier(network=tiny_network, epochs=1, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="out-of-fold"):
        single.calibrate(method="sigmoid")
    with pytest.raises(ValueError, match="both X and y"):
        single.calibrate(X, method="sigmoid")
