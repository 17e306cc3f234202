"""Model files: one file to score with; legacy Keras 2 models such as braai."""

import csv
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import tiny_network

from otrain import CutoutClassifier, ModelFileError, load_cutouts, load_model, save_model
from otrain.model_files import read_record

FAST = dict(network=tiny_network, epochs=2, batch_size=32, random_state=0)


@pytest.fixture(scope="module")
def fitted(stamps):
    X, y = stamps
    return CutoutClassifier(**FAST).fit(X, y)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_round_trip_keeps_probabilities_and_metadata(fitted, stamps, tmp_path, suffix):
    X, _ = stamps
    path = save_model(fitted, tmp_path / f"m{suffix}", channels=("DIFF",), extra={"threshold": 0.4})
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    record = loaded.model_file_record_
    assert record["channels"] == ["DIFF"] and record["input_shape"] == [32, 32, 1]
    assert record["classes"] == [0, 1] and record["normalisation"] == "robust"
    assert record["threshold"] == 0.4 and record["otrain_version"]
    assert loaded.channels_ == ("DIFF",)
    assert [p.name for p in tmp_path.iterdir()] == [f"m{suffix}"]


def test_keras_file_holds_the_record_and_no_pickle(fitted, tmp_path):
    path = save_model(fitted, tmp_path / "m.keras")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert "otrain.json" in names and not any(n.endswith((".pkl", ".pickle")) for n in names)
        assert json.loads(archive.read("otrain.json"))["params"]["network"] == "tiny_network"


def test_files_leave_out_the_optimizer_state(fitted, tmp_path):
    import io

    keras_file = save_model(fitted, tmp_path / "m.keras")
    with zipfile.ZipFile(keras_file) as archive:
        weights = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(weights) as handle:
        assert "optimizer" not in handle and "layers" in handle
    with h5py.File(save_model(fitted, tmp_path / "m.h5")) as handle:
        assert "optimizer_weights" not in handle and "model_weights" in handle
    assert fitted.model_.optimizer is not None  # still there for further training


def test_failed_save_keeps_the_old_file(fitted, tmp_path, monkeypatch):
    path = save_model(fitted, tmp_path / "m.keras")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fitted.model_, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(fitted, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def test_masked_sentinel_pixels_are_treated_as_nan(fitted, stamps):
    X, _ = stamps
    sentinel, nan = X[:3].copy(), X[:3].copy()
    sentinel[:, 3:6, 3:6] = np.finfo(np.float32).max
    nan[:, 3:6, 3:6] = np.nan
    np.testing.assert_allclose(fitted.predict_proba(sentinel), fitted.predict_proba(nan), atol=1e-6)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a model at all", "not a Keras model file"),
        (None, "HDF5 file but not a Keras model"),
    ],
)
def test_foreign_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "m.h5"
    if content is None:
        with h5py.File(path, "w") as handle:
            handle["data"] = np.zeros(3)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=f"m.h5.*{message}"):
        load_model(path)


def test_zip_that_is_not_keras(tmp_path):
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError, match="not a Keras model"):
        load_model(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "none.keras")


def test_stored_settings_cannot_be_contradicted(fitted, tmp_path):
    path = save_model(fitted, tmp_path / "m.keras")
    with pytest.raises(ModelFileError, match="trained with normalisation robust, not l2"):
        load_model(path, normalisation="l2")
    assert load_model(path, channels="DIFF").channels_ == ("DIFF",)


def test_legacy_braai_reproduces_ztf_drb(braai_path, ztf_folder):
    with pytest.raises(ModelFileError, match="without otrain metadata.*--channels SCI,REF,DIFF"):
        load_model(braai_path)
    model = load_model(braai_path, channels=("SCI", "REF", "DIFF"), normalisation="l2")
    with open(ztf_folder / "index.csv") as handle:
        rows = list(csv.DictReader(handle))
    X, _, _ = load_cutouts([ztf_folder / r["file"] for r in rows], channels=("SCI", "REF", "DIFF"))
    p = model.predict_proba(X)[:, 1]
    drb = np.array([float(r["drb"]) for r in rows])
    assert np.isfinite(p).all()
    # The data README: braai's outputs match ZTF's drb to a median of 0.005, 96% agree.
    assert np.median(np.abs(p - drb)) < 0.01
    assert np.mean((p > 0.5) == (drb > 0.5)) > 0.94


def test_legacy_braai_against_an_independent_numpy_forward_pass(braai_path, ztf_folder):
    """Recompute braai's output from the file's weights with numpy alone."""
    model = load_model(braai_path, channels="SCI,REF,DIFF", normalisation="l2")
    paths = sorted((ztf_folder / "cutouts").glob("*.fits"))[:5]
    X, _, _ = load_cutouts(paths, channels=("SCI", "REF", "DIFF"))
    with h5py.File(braai_path, "r") as f:
        g = f["model_weights"]

        def w(layer):
            names = [n.decode() for n in g[layer].attrs["weight_names"]]
            return [np.asarray(g[layer][n]) for n in names]

        weights = {name: w(name) for name in ("conv1", "conv2", "conv3", "conv4", "fc_1", "fc_out")}

    def conv(x, kernel, bias):
        k = kernel.shape[0]
        h, wd = x.shape[0] - k + 1, x.shape[1] - k + 1
        patches = np.stack([x[i : i + h, j : j + wd] for i in range(k) for j in range(k)], axis=2)
        out = np.einsum("hwpc,pcf->hwf", patches, kernel.reshape(k * k, *kernel.shape[2:]))
        return np.maximum(out + bias, 0)

    def pool(x, size):
        h, wd = x.shape[0] // size, x.shape[1] // size
        return x[: h * size, : wd * size].reshape(h, size, wd, size, -1).max(axis=(1, 3))

    expected = []
    for stamp in X.astype(np.float64):
        stamp = np.where(np.isfinite(stamp), stamp, 0)
        stamp = stamp / np.sqrt((stamp**2).sum(axis=(0, 1)))
        x = pool(conv(conv(stamp, *weights["conv1"]), *weights["conv2"]), 2)
        x = pool(conv(conv(x, *weights["conv3"]), *weights["conv4"]), 4)
        x = np.maximum(x.reshape(-1) @ weights["fc_1"][0] + weights["fc_1"][1], 0)
        z = x @ weights["fc_out"][0] + weights["fc_out"][1]
        expected.append(1 / (1 + np.exp(-z[0])))
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], expected, atol=1e-4)
    assert read_record(braai_path) is None


def test_models_saved_after_a_pickle_load(tmp_path):
    # Pickling a fitted classifier makes scikeras register Keras' Functional class as
    # ">Functional"; every model saved afterwards in the process carries that name.
    import pickle
    import subprocess
    import sys

    import numpy as np
    from conftest import tiny_network

    from otrain import CutoutClassifier, load_model, save_model

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 16, 16, 1)).astype("float32"), np.array([0, 1] * 10)
    clf = CutoutClassifier(network=tiny_network, epochs=1, random_state=0).fit(X, y)
    pickle.loads(pickle.dumps(clf))
    path = save_model(clf, tmp_path / "after_pickle.keras")
    assert b">Functional" in __import__("zipfile").ZipFile(path).read("config.json")
    np.testing.assert_allclose(load_model(path).predict_proba(X), clf.predict_proba(X), atol=1e-6)
    # And in a fresh process, where nothing is registered under that name.
    code = f"from otrain import load_model; load_model({str(path)!r}); print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_an_ensemble_saved_after_a_pickle_loads_in_a_fresh_process(tmp_path):
    """Nested networks of an .h5 ensemble are named ">Functional" once scikeras has
    pickled a classifier in the process; the allow-list and the loader take them. And
    training the networks one after another says nothing on stderr."""
    import subprocess
    import sys
    import textwrap

    save = textwrap.dedent(
        f"""
        import pickle
        import sys
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import tiny_network
        from otrain import CutoutClassifier, save_model
        from otrain.datasets import make_stamps
        X, y, _ = make_stamps(20, 20, size=24, random_state=0)
        fast = dict(network=tiny_network, epochs=1, random_state=0)
        pickle.dumps(CutoutClassifier(**fast).fit(X, y))
        clf = CutoutClassifier(ensemble=2, **fast).fit(X, y)
        save_model(clf, {str(tmp_path / "ens.h5")!r}, channels=["DIFF"])
        np.save({str(tmp_path / "p.npy")!r}, clf.predict_proba(X))
        """
    )
    load = textwrap.dedent(
        f"""
        import numpy as np
        from otrain import load_model
        from otrain.datasets import make_stamps
        X, y, _ = make_stamps(20, 20, size=24, random_state=0)
        p = load_model({str(tmp_path / "ens.h5")!r}).predict_proba(X)
        np.testing.assert_allclose(p, np.load({str(tmp_path / "p.npy")!r}), atol=1e-6)
        """
    )
    for script in (save, load):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
