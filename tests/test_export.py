"""ONNX export: onnxruntime alone scores stamps as the Keras model does."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_network

from otrain import CutoutClassifier
from otrain.cli import export as export_cli
from otrain.model_files import load_model, save_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from otrain.export import INPUT_NAME, OUTPUT_NAME, export_onnx  # noqa: E402


def _awkward(X):
    """Stamps with NaN, inf, a masking sentinel and a blank stamp, as brokers get them."""
    X = X.copy()
    X[0, 3, 3, 0] = np.nan
    X[1, 4, 4, 0] = np.inf
    X[2] = np.nan
    X[3, 5, 5, 0] = 3.4e38
    X[4] = 0.0
    X[4, 1, 1, 0] = np.nan
    return X


def _onnx_scores(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: X.astype(np.float32)})[0]


@pytest.fixture(scope="module")
def default_model(stamps, tmp_path_factory):
    """The default network and normalisation (otrain, robust), briefly trained."""
    X, y = stamps
    clf = CutoutClassifier(epochs=1, batch_size=64, random_state=0).fit(X[:64], y[:64])
    return save_model(clf, tmp_path_factory.mktemp("export") / "default.keras")


def test_default_network_and_normalisation_match_keras(default_model, stamps, tmp_path):
    X = _awkward(stamps[0][:40])
    clf = load_model(default_model)
    assert clf.model_file_record_["normalisation"] == "robust"
    path = export_onnx(clf, tmp_path / "default.onnx")
    got = _onnx_scores(path, X)
    expected = clf.predict_proba(X)
    assert got.shape == (40, 2) and np.all(np.isfinite(got))
    assert np.abs(got - expected).max() < 1e-5
    # No TF op left: the graph is plain ONNX.
    model = onnx.load(path)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["channels"] == "DIFF" and meta["input_shape"] == "32,32,1"
    assert json.loads(meta["otrain"])["normalisation"] == "robust"


@pytest.mark.parametrize("normalisation", ["l2", "none"])
def test_other_normalisations_match_keras(stamps, tmp_path, normalisation):
    X, y = stamps
    clf = CutoutClassifier(
        network=tiny_network, normalisation=normalisation, epochs=1, random_state=0
    ).fit(X[:64], y[:64])
    X = _awkward(X[:40])
    got = _onnx_scores(export_onnx(clf, tmp_path / "m.onnx"), X)
    assert np.abs(got - clf.predict_proba(X)).max() < 1e-5


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibration_is_in_the_graph_unless_left_out(stamps, tmp_path, method):
    X, y = stamps
    clf = CutoutClassifier(network=tiny_network, epochs=2, random_state=0).fit(X[:64], y[:64])
    raw = clf.predict_proba(X[64:])
    clf.calibrate(X[64:], y[64:], method=method)
    calibrated = clf.predict_proba(X[64:])
    assert np.abs(calibrated - raw).max() > 1e-3
    got = _onnx_scores(export_onnx(clf, tmp_path / "cal.onnx"), X[64:])
    got_raw = _onnx_scores(export_onnx(clf, tmp_path / "raw.onnx", calibrated=False), X[64:])
    assert np.abs(got_raw - raw).max() < 1e-5
    # The map in the graph is the stored one: exact on the graph's own raw output. (A
    # steep isotonic step multiplies the network's float32 rounding by its slope.)
    assert np.abs(got[:, 1] - clf.calibration_.apply(got_raw[:, 1])).max() < 1e-6
    assert np.abs(got - calibrated).max() < 1e-4


def test_export_command_in_process(default_model, tmp_path, capsys):
    output = tmp_path / "out.onnx"
    assert export_cli.main(["--model", str(default_model), "--output", str(output)]) == 0
    assert "not calibrated" in capsys.readouterr().out
    assert output.is_file()
    # An existing output is kept without --overwrite: one line, exit code 2.
    assert export_cli.main(["--model", str(default_model), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and err.count("\n") == 1


def test_export_entry_point(default_model, tmp_path):
    output = tmp_path / "cli.onnx"
    exe = str(Path(sys.executable).parent / "otrain-export")
    done = subprocess.run(
        [exe, "--model", str(default_model), "--format", "onnx", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ONNX model written" in done.stdout
    assert output.stat().st_size > 10_000


def test_bad_output_suffix(default_model, tmp_path):
    from otrain.exceptions import ModelFileError

    with pytest.raises(ModelFileError, match=r"\.onnx"):
        export_onnx(load_model(default_model), tmp_path / "m.h5")


def test_a_graph_onnxruntime_cannot_load_is_refused(default_model, tmp_path, monkeypatch):
    """tf2onnx keeps an op it cannot convert (here NthElement, the median by selection
    when the export forgets to sort) and only logs it: the export must refuse it."""
    import contextlib

    from otrain import networks
    from otrain.exceptions import ModelFileError

    monkeypatch.setattr(networks, "median_by_sorting", contextlib.nullcontext)
    with pytest.raises(ModelFileError, match=r"no ONNX form for NthElement.*onnxruntime"):
        export_onnx(load_model(default_model), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_cross_fitted_ensemble_exports_as_one_graph(stamps, tmp_path):
    X, y = stamps
    clf = CutoutClassifier(network=tiny_network, ensemble=2, epochs=1, random_state=0)
    clf.fit(X[:64], y[:64])
    X = _awkward(X[64:104])
    got_raw = _onnx_scores(export_onnx(clf, tmp_path / "raw.onnx", calibrated=False), X)
    assert np.abs(got_raw - clf.model_.predict(X, verbose=0)).max() < 1e-5
    for method in ("sigmoid", "isotonic"):
        clf.calibrate(method=method)
        assert clf.calibration_.input == "log_odds"
        got = _onnx_scores(export_onnx(clf, tmp_path / f"{method}.onnx"), X)
        assert np.all(np.isfinite(got))
        # The map on the log-odds, in the graph, is the stored one.
        assert np.abs(got[:, 1] - clf.calibration_.apply(got_raw[:, 1])).max() < 1e-5
        assert np.abs(got - clf.predict_proba(X)).max() < 1e-4
