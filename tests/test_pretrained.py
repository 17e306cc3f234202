"""Fine-tuning from a trained network: init="braai", an otrain model, a legacy file."""

import json
import zipfile

import numpy as np
import pytest
from astropy.table import Table
from sklearn.base import clone

from otrain import CutoutClassifier, CutoutError, ModelFileError, load_model, save_model
from otrain.datasets import make_stamps
from otrain.pretrained import PRETRAINED, load_init, write_braai

TRIPLETS = ("SCI", "REF", "DIFF")


@pytest.fixture(scope="module")
def triplets():
    """(X, y): 48 synthetic 63x63 SCI,REF,DIFF stamps, the layout braai takes."""
    X, y, _ = make_stamps(24, 24, size=63, triplets=True, random_state=5)
    return X, y


def _braai():
    return load_model(PRETRAINED["braai"]["file"])


def test_shipped_braai_scores_as_ztf_file(braai_path, ztf_folder):
    """The shipped model is braai: the same P(real) as ZTF's .h5 on real stamps."""
    from otrain import load_cutouts

    paths = sorted((ztf_folder / "cutouts").glob("*.fits"))[:64]
    X, _, _ = load_cutouts(paths, channels=TRIPLETS)
    shipped = _braai()
    legacy = load_model(braai_path, channels=TRIPLETS, normalisation="l2")
    np.testing.assert_allclose(
        shipped.predict_proba(X)[:, 1], legacy.predict_proba(X)[:, 1], atol=1e-6
    )
    assert shipped.channels_ == TRIPLETS
    assert shipped.model_file_record_["normalisation"] == "l2"
    assert "MIT" in shipped.model_file_record_["source"]


def test_shipped_braai_is_rebuilt_by_write_braai(braai_path, tmp_path):
    """The shipped weights are exactly those write_braai makes from ZTF's file."""
    rebuilt = load_model(write_braai(braai_path, tmp_path / "braai.keras"))
    for a, b in zip(rebuilt.model_.get_weights(), _braai().model_.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_licence_travels_with_the_weights():
    licence = PRETRAINED["braai"]["file"].with_name("LICENSE-braai").read_text()
    assert "MIT License" in licence and "Dmitry Duev" in licence


def test_init_starts_from_the_trained_weights(triplets):
    """With a vanishing learning rate, the fine-tuned model scores as braai does."""
    X, y = triplets
    tuned = CutoutClassifier(
        init="braai", learning_rate=1e-12, epochs=1, validation_fraction=0, random_state=0
    ).fit(X, y)
    braai = _braai().predict_proba(X)[:, 1]
    np.testing.assert_allclose(tuned.predict_proba(X)[:, 1], braai, atol=1e-5)
    assert np.ptp(braai) > 0.5  # braai's scores, not a constant any start would give
    assert tuned.init_source_["init"] == "braai"
    assert tuned.channels_ == TRIPLETS  # the stamps are in the layout braai takes
    assert tuned.model_.output_shape[-1] == 2


def test_fine_tuning_is_reproducible_and_learns(triplets, tmp_path):
    X, y = triplets
    a = CutoutClassifier(init="braai", epochs=1, random_state=3).fit(X, y, channels=TRIPLETS)
    b = CutoutClassifier(init="braai", epochs=1, random_state=3).fit(X, y, channels=TRIPLETS)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.n_steps_ > 0
    # The record says where the training started; loading restores it.
    path = save_model(a, tmp_path / "tuned.keras")
    with zipfile.ZipFile(path) as archive:
        record = json.loads(archive.read("otrain.json"))
    assert record["init"]["init"] == "braai"
    assert record["params"]["init"] == "braai"
    loaded = load_model(path)
    assert loaded.init_source_["description"].startswith("ZTF's braai")
    np.testing.assert_allclose(loaded.predict_proba(X), a.predict_proba(X), atol=1e-6)
    # ... and that file is itself a start for another fine-tuning.
    again = CutoutClassifier(init=path, epochs=1, random_state=0).fit(X, y)
    assert again.init_source_["file"] == "tuned.keras"


def test_an_ensemble_of_fine_tuned_networks(triplets):
    X, y = triplets
    clf = CutoutClassifier(init="braai", ensemble=2, epochs=1, random_state=0).fit(X, y)
    assert clf.n_networks_ == 2
    assert clf.oof_p_real_.shape == (len(y),)
    each = clf.predict_proba_networks(X)
    assert each.shape == (len(y), 2)


def test_legacy_file_is_recognised(braai_path, triplets):
    """ZTF's own .h5 needs no channels or normalisation: otrain knows the file."""
    info = load_init(braai_path)
    assert info["channels"] == TRIPLETS
    assert info["input_shape"] == (63, 63, 3)
    X, _ = triplets
    np.testing.assert_allclose(
        info["model"].predict(X, verbose=0)[:, 1], _braai().predict_proba(X)[:, 1], atol=1e-6
    )


def test_clone_and_params_keep_init():
    clf = CutoutClassifier(init="braai")
    assert clone(clf).get_params()["init"] == "braai"


@pytest.mark.parametrize(
    "stamps, channels, message",
    [
        ((48, 63, 63, 1), None, "takes 63x63x3 stamps (SCI, REF, DIFF), these are 63x63x1"),
        ((48, 32, 32, 3), None, "--cutout-size 63 --channels SCI,REF,DIFF"),
        ((48, 63, 63, 3), ("DIFF", "SCI", "REF"), "the stamps are DIFF, SCI, REF"),
    ],
)
def test_stamps_the_network_does_not_take(stamps, channels, message):
    X = np.random.default_rng(0).normal(size=stamps).astype(np.float32)
    y = np.arange(len(X)) % 2
    with pytest.raises(CutoutError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CutoutClassifier(init="braai", epochs=1).fit(X, y, channels=channels)


def test_bad_starts_are_clear_errors(tmp_path, stamps):
    X, y = stamps
    with pytest.raises(ModelFileError, match="no such model file to start from.*'braai'"):
        CutoutClassifier(init=tmp_path / "missing.keras").fit(X, y)
    with pytest.raises(ValueError, match="init must be None, a pretrained name"):
        CutoutClassifier(init=3).fit(X, y)
    ensemble = CutoutClassifier(ensemble=2, epochs=1, random_state=0).fit(X, y)
    path = save_model(ensemble, tmp_path / "ensemble.keras")
    with pytest.raises(ModelFileError, match="an ensemble of 2 networks; init takes one"):
        CutoutClassifier(init=path).fit(X, y)


def test_otrain_train_init_braai(tmp_path, triplets, capsys):
    from otrain.cli import train
    from otrain.datacube import Datacube

    X, y = triplets
    keywords = Table({"candid": np.arange(len(y)).astype(str)})
    Datacube(X, y, keywords, TRIPLETS).save(tmp_path / "cube.npz")
    argv = f"--cube {tmp_path}/cube.npz --model-path {tmp_path}/model --epochs 1 --no-plots"
    assert train.main(f"{argv} --model-name tuned --init braai".split()) == 0
    out = capsys.readouterr().out
    assert "fine-tuning ZTF's braai d6_m9" in out
    model = load_model(tmp_path / "model" / "CNN_training" / "tuned.h5")
    assert model.init_source_["init"] == "braai"
    # A missing start is named before anything is read or written.
    assert train.main(f"{argv} --model-name none --init {tmp_path}/nope.keras".split()) != 0
    err = capsys.readouterr().err
    assert "nope.keras: no such model file to start from" in err
    assert not (tmp_path / "model" / "CNN_training" / "none.h5").exists()
