"""bfloat16 scoring and its guard; chunked, overlapped scoring of files."""

import numpy as np
import pytest
from conftest import tiny_network, write_stamp

from otrain import CutoutClassifier, load_model, save_model
from otrain import precision as prec
from otrain.inference import score_files


@pytest.fixture(scope="module")
def fitted(stamps):
    X, y = stamps
    return CutoutClassifier(network=tiny_network, epochs=2, random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def candidates(stamps, tmp_path_factory):
    folder = tmp_path_factory.mktemp("candidates")
    X, _ = stamps
    paths = []
    for i, stamp in enumerate(X[:45]):
        edge = "True" if i in (7, 30) else "False"
        paths.append(str(write_stamp(folder / f"c{i:02d}.fits", stamp[..., 0], MAG=i, EDGE=edge)))
    (folder / "c99.fits").write_text("not FITS")
    return [*paths, str(folder / "c99.fits")]


def test_bfloat16_model_computes_in_bfloat16_except_normalisation_and_output(fitted):
    model = prec.bfloat16_model(fitted.model_)
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert policies["normalisation"] == "float32"
    assert policies["probabilities"] == "float32"
    assert policies["conv_tiny"] == "mixed_bfloat16"
    for ours, theirs in zip(model.get_weights(), fitted.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_check_is_stored_in_the_model_file(fitted, stamps, tmp_path):
    X, _ = stamps
    # The function measures; the classifier's method keeps what it measured.
    measured = prec.check_bfloat16(fitted, X[:50])
    assert getattr(fitted, "bfloat16_check_", None) is None
    check = fitted.check_bfloat16(X[:50])
    assert check == measured
    assert check["n_stamps"] == 50 and check["tolerance"] == prec.TOLERANCE
    assert 0 <= check["max_difference"] < 0.05
    assert check["passed"] is (check["max_difference"] <= 0.01)
    assert fitted.bfloat16_check_ is check
    loaded = load_model(save_model(fitted, tmp_path / "m.keras"))
    assert loaded.bfloat16_check_ == check
    with pytest.raises(ValueError, match="needs validation stamps"):
        prec.check_bfloat16(fitted, X[:0])


def test_choose_precision(fitted, monkeypatch):
    monkeypatch.setattr(fitted, "bfloat16_check_", None, raising=False)
    assert prec.choose_precision(fitted, "float32")[:2] == (fitted, "float32")
    monkeypatch.setattr(prec, "bfloat16_supported", lambda: False)
    scorer, used, note = prec.choose_precision(fitted)
    assert (scorer, used) == (fitted, "float32") and "no native bfloat16" in note
    monkeypatch.setattr(prec, "bfloat16_supported", lambda: True)
    _, used, note = prec.choose_precision(fitted)
    assert used == "float32" and "stores no bfloat16 check" in note
    fitted.bfloat16_check_ = {"max_difference": 0.02, "n_stamps": 300}
    _, used, note = prec.choose_precision(fitted)
    assert used == "float32" and "0.02" in note and "more than 0.01" in note
    fitted.bfloat16_check_ = {"max_difference": 0.004, "n_stamps": 300}
    scorer, used, note = prec.choose_precision(fitted)
    assert used == "bfloat16" and "at most 0.004 on 300" in note
    assert scorer is not fitted and scorer.model_ is not fitted.model_
    assert fitted.model_.layers[-1].dtype_policy.name == "float32"
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16"):
        prec.choose_precision(fitted, "float16")


def test_scoring_in_bfloat16_stays_close_to_float32(fitted, candidates):
    full, summary = score_files(fitted, candidates, precision="float32")
    fast, fast_summary = score_files(fitted, candidates, precision="bfloat16")
    assert (summary["precision"], fast_summary["precision"]) == ("float32", "bfloat16")
    assert list(fast["filename"]) == list(full["filename"])
    np.testing.assert_allclose(fast["label1"], full["label1"], atol=0.02)
    assert np.abs(np.asarray(fast["label1"]) - full["label1"]).max() > 0  # really bf16


def test_chunks_overlap_without_changing_the_table(fitted, candidates):
    whole, summary = score_files(fitted, candidates, precision="float32")
    done = []
    chunked, chunked_summary = score_files(
        fitted, iter(candidates), chunk_size=10, precision="float32", progress=done.append
    )
    assert done == [10, 20, 30, 40, 46]
    assert list(chunked["filename"]) == list(whole["filename"])
    assert list(chunked["mag"]) == [i for i in range(45) if i not in (7, 30)]
    # Batches of other sizes may round the last bit otherwise (oneDNN on AMD EPYC).
    np.testing.assert_allclose(chunked["label1"], whole["label1"], atol=1e-6)
    assert summary["n_edge"] == chunked_summary["n_edge"] == 2
    assert [p for p, _ in chunked_summary["skipped"]] == [candidates[-1]]
    assert summary["n_scored"] == 43


def test_monte_carlo_chunk_k_draws_alike_alone(fitted, candidates):
    whole, _ = score_files(fitted, candidates, chunk_size=10, mc_samples=3, random_state=4)
    alone, summary = score_files(
        fitted, candidates[20:30], chunk_size=10, mc_samples=3, random_state=4, first_chunk=2
    )
    assert summary["precision"] == "float32"
    rows = [list(whole["filename"]).index(name) for name in alone["filename"]]
    np.testing.assert_array_equal(alone["label1"], whole["label1"][rows])
    np.testing.assert_array_equal(alone["label1_std"], whole["label1_std"][rows])
