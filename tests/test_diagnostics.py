"""Tests of otrain.diagnostics against small examples computed by hand."""

import math

import numpy as np
import pytest
from astropy.io import ascii
from astropy.table import MaskedColumn, Table
from sklearn.metrics import f1_score, matthews_corrcoef, precision_score, recall_score

from otrain.diagnostics import (
    binary_diagnostics,
    format_diagnostics,
    magnitude_bins,
    match_simulated,
    threshold_scan,
)

KEYS = {
    "n",
    "n_real",
    "n_bogus",
    "threshold",
    "accuracy",
    "average_precision",
    "roc_auc",
    "precision",
    "recall",
    "f1",
    "mcc",
    "brier",
    "confusion_matrix",
    "fpr",
    "fnr",
}


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(7)
    y = (rng.random(500) < 0.4).astype(int)
    p = np.clip(0.35 * y + rng.normal(0.35, 0.2, 500), 0, 1)
    return y, p


# ------------------------------------------------------------------ binary_diagnostics


def test_perfect_classifier():
    d = binary_diagnostics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert set(d) == KEYS
    assert d["confusion_matrix"] == [[2, 0], [0, 2]]
    for key in ("accuracy", "precision", "recall", "f1", "mcc", "roc_auc", "average_precision"):
        assert d[key] == 1.0, key
    assert d["fpr"] == 0.0 and d["fnr"] == 0.0
    assert d["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert (d["n"], d["n_real"], d["n_bogus"], d["threshold"]) == (4, 2, 2, 0.5)


def test_hand_computed_example():
    # Called real (>= 0.5): 0.6 (bogus), 0.7 and 0.9 (real): tp=2, fp=1, fn=1, tn=2.
    y = [0, 0, 0, 1, 1, 1]
    p = [0.2, 0.6, 0.4, 0.7, 0.3, 0.9]
    d = binary_diagnostics(y, p)
    assert d["confusion_matrix"] == [[2, 1], [1, 2]]
    assert d["precision"] == pytest.approx(2 / 3)
    assert d["recall"] == pytest.approx(2 / 3)
    assert d["f1"] == pytest.approx(2 / 3)
    assert d["accuracy"] == pytest.approx(4 / 6)
    assert d["mcc"] == pytest.approx((2 * 2 - 1 * 1) / 9)
    assert d["fpr"] == pytest.approx(1 / 3)
    assert d["fnr"] == pytest.approx(1 / 3)
    # Ranking: 7 of the 9 (real, bogus) pairs are in the right order (0.3 beats 0.2 only).
    assert d["roc_auc"] == pytest.approx(7 / 9)


def test_matches_scikit_learn(scores):
    y, p = scores
    d = binary_diagnostics(y, p, threshold=0.4)
    pred = (p >= 0.4).astype(int)
    assert d["precision"] == pytest.approx(precision_score(y, pred))
    assert d["recall"] == pytest.approx(recall_score(y, pred))
    assert d["f1"] == pytest.approx(f1_score(y, pred))
    assert d["mcc"] == pytest.approx(matthews_corrcoef(y, pred))


def test_threshold_is_inclusive():
    d = binary_diagnostics([0, 1], [0.3, 0.5], threshold=0.5)
    assert d["confusion_matrix"] == [[1, 0], [0, 1]]


def test_constant_bogus_classifier_has_zero_mcc_and_undefined_precision():
    d = binary_diagnostics([0, 0, 1, 1, 1], [0.2] * 5)
    assert d["confusion_matrix"] == [[2, 0], [3, 0]]
    assert d["mcc"] == 0.0
    assert math.isnan(d["precision"])  # nothing called real: 0 / 0
    assert d["recall"] == 0.0
    assert d["f1"] == 0.0
    assert d["fpr"] == 0.0 and d["fnr"] == 1.0
    assert d["roc_auc"] == pytest.approx(0.5)
    assert d["average_precision"] == pytest.approx(0.6)


def test_constant_real_classifier():
    d = binary_diagnostics([0, 0, 1, 1, 1], [0.9] * 5)
    assert d["mcc"] == 0.0
    assert d["precision"] == pytest.approx(0.6)
    assert d["recall"] == 1.0
    assert d["fpr"] == 1.0


def test_one_class_only_gives_nan_not_warnings():
    d = binary_diagnostics([1, 1, 1], [0.9, 0.2, 0.7])
    for key in ("roc_auc", "average_precision", "mcc", "fpr"):
        assert math.isnan(d[key]), key
    assert d["recall"] == pytest.approx(2 / 3)
    assert d["precision"] == 1.0
    assert d["n_bogus"] == 0


def test_accepts_bool_and_float_labels():
    a = binary_diagnostics(np.array([False, True]), [0.1, 0.9])
    b = binary_diagnostics(np.array([0.0, 1.0]), [0.1, 0.9])
    assert a == b


@pytest.mark.parametrize(
    ("y", "p", "kwargs", "match"),
    [
        ([0, 2], [0.1, 0.2], {}, r"only 0 \(bogus\) and 1 \(real\), found \[2\]"),
        (["a", "b"], [0.1, 0.2], {}, "only 0"),
        ([0, 1], [0.1, 1.2], {}, "between 0 and 1; 1 values are not"),
        ([0, 1], [0.1, np.nan], {}, "between 0 and 1"),
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], {}, r"p\[:, 1\]"),
        ([0, 1, 1], [0.1, 0.2], {}, "same length, got 3 and 2"),
        ([], [], {}, "empty"),
        ([0, 1], [0.1, 0.2], {"threshold": 1.5}, "threshold must be a number between 0 and 1"),
    ],
)
def test_invalid_input_is_named(y, p, kwargs, match):
    with pytest.raises(ValueError, match=match):
        binary_diagnostics(y, p, **kwargs)


# ------------------------------------------------------------------ format_diagnostics


def test_format_diagnostics_table():
    text = format_diagnostics(binary_diagnostics([0, 0, 1, 1, 1], [0.2] * 5))
    lines = text.splitlines()
    assert lines[0].startswith("candidates") and "5 (3 real, 2 bogus)" in lines[0]
    assert any(line.startswith("precision (purity)") and "undefined" in line for line in lines)
    assert any(line.startswith("MCC") and line.endswith("0.000") for line in lines)
    header, bogus, real = lines[-3:]
    assert "called bogus" in header and "called real" in header
    assert bogus.split() == ["true", "bogus", "2", "0"]
    assert real.split() == ["true", "real", "3", "0"]
    # Columns are aligned: the counts end where their headers end.
    assert len(header) == len(bogus) == len(real)
    # Metric values start in one column.
    starts = {line.index("0.") for line in lines[2:12] if "0." in line}
    assert len(starts) == 1


# ---------------------------------------------------------------------- threshold_scan


def test_threshold_scan_default_grid(scores):
    y, p = scores
    scan = threshold_scan(y, p)
    assert len(scan) == 99
    assert scan.colnames == ["threshold", "precision", "recall", "f1", "mcc", "fpr", "accuracy"]
    assert scan["threshold"][0] == pytest.approx(0.01)
    assert scan["threshold"][-1] == pytest.approx(0.99)
    assert (np.diff(scan["recall"]) <= 0).all()
    assert (np.diff(scan["fpr"]) <= 0).all()
    assert scan.meta["n"] == 500 and scan.meta["n_real"] == int(y.sum())


def test_threshold_scan_agrees_with_binary_diagnostics(scores):
    y, p = scores
    scan = threshold_scan(y, p, thresholds=[0.7, 0.3, 0.5])
    assert scan["threshold"].tolist() == [0.7, 0.3, 0.5]
    for row in scan:
        d = binary_diagnostics(y, p, threshold=row["threshold"])
        for key in ("precision", "recall", "f1", "mcc", "fpr", "accuracy"):
            assert row[key] == pytest.approx(d[key], nan_ok=True), key


def test_threshold_scan_nan_where_undefined():
    scan = threshold_scan([0, 1], [0.2, 0.6], thresholds=[0.1, 0.9])
    assert math.isnan(scan["precision"][1])  # nothing called real at 0.9
    assert scan["mcc"][1] == 0.0
    assert scan["precision"][0] == 0.5


def test_threshold_scan_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="every threshold"):
        threshold_scan([0, 1], [0.2, 0.6], thresholds=[0.5, 2.0])


# ---------------------------------------------------------------------- magnitude_bins


def test_magnitude_bins_given_edges_pass_through():
    assert magnitude_bins([1.0], edges=[16, 18, 20]).tolist() == [16.0, 18.0, 20.0]
    with pytest.raises(ValueError, match="increasing"):
        magnitude_bins([1.0], edges=[18, 16])


def test_magnitude_bins_fixed_width_ignores_nan():
    edges = magnitude_bins([16.2, 17.5, 18.9, np.nan, np.inf], width=1.0)
    assert edges.tolist() == [16.0, 17.0, 18.0, 19.0]


def test_magnitude_bins_quantiles_hold_similar_counts():
    rng = np.random.default_rng(0)
    mags = np.concatenate([rng.normal(18, 1.5, 1000), [np.nan] * 10])
    edges = magnitude_bins(mags, n_bins=4)
    assert len(edges) == 5
    # Edges are rounded to 0.1 mag and enclose every finite value.
    assert np.allclose(edges, np.round(edges, 1))
    finite = mags[np.isfinite(mags)]
    assert edges[0] <= finite.min() and edges[-1] >= finite.max()
    counts, _ = np.histogram(finite, edges)
    assert counts.sum() == 1000
    assert counts.min() > 200 and counts.max() < 300


def test_magnitude_bins_degenerate_inputs():
    assert magnitude_bins([np.nan, np.nan]).size == 0
    assert magnitude_bins([17.3, 17.3]).tolist() == [17.0, 18.0]


# --------------------------------------------------------------------- match_simulated


def test_match_simulated_marks_rows_and_gives_injected_mags():
    infer = Table({"cand_ID": [10, 11, 12, 13], "label1": [0.9, 0.1, 0.8, 0.5], "mag": [1.0] * 4})
    xmatch = Table(
        {
            "idx": [0, 1, 2, 3],
            "closest_candID": MaskedColumn([12, 10, 12, 99], mask=[False, False, False, True]),
            "mag": [19.5, 17.25, 18.0, 16.0],
        }
    )
    is_sim, mag_sim = match_simulated(infer, xmatch)
    assert is_sim.tolist() == [True, False, True, False]
    # The mags are the crossmatch's (injected) ones; candidate 12, named twice, takes
    # the brightest; the masked row names no candidate.
    assert mag_sim.tolist() == [17.25, 18.0]


def test_match_simulated_ids_of_different_types():
    infer = Table({"cand_ID": np.array(["5", " 7", "9"])})
    xmatch = Table({"closest_candID": [7.0, np.nan, 5.0], "mag": [np.nan, 20.0, 18.0]})
    is_sim, mag_sim = match_simulated(infer, xmatch)
    assert is_sim.tolist() == [True, True, False]
    assert mag_sim[0] == 18.0 and math.isnan(mag_sim[1])


def test_match_simulated_reads_otrain_files(tmp_path):
    # O'TRAIN's otrain-infer wrote infer_results.dat as ascii.commented_header.
    infer = Table({"cand_ID": [1, 2, 3], "label0": [0.1, 0.8, 0.4], "label1": [0.9, 0.2, 0.6]})
    infer.write(tmp_path / "infer_results.dat", format="ascii.commented_header")
    Table({"idx": [0, 1], "closest_candID": [3, 1], "mag": [20.5, 17.0]}).write(
        tmp_path / "crossmatch.dat", format="ascii.commented_header"
    )
    is_sim, mag_sim = match_simulated(
        ascii.read(tmp_path / "infer_results.dat"), ascii.read(tmp_path / "crossmatch.dat")
    )
    assert is_sim.tolist() == [True, False, True]
    assert mag_sim.tolist() == [17.0, 20.5]


def test_match_simulated_custom_columns_and_missing_column():
    infer = Table({"candid": [1, 2]})
    xmatch = Table({"closest_candID": [2], "mag_inj": [19.0]})
    is_sim, mag_sim = match_simulated(infer, xmatch, id_column="candid", mag_column="mag_inj")
    assert is_sim.tolist() == [False, True] and mag_sim.tolist() == [19.0]
    with pytest.raises(
        ValueError, match=r"inference table has no column 'cand_ID' \(columns: candid\)"
    ):
        match_simulated(infer, xmatch)


# -- when the report cannot be trusted -------------------------------------------------


def test_report_cautions_small_sets_and_one_class_models(tmp_path):
    from otrain.report import report_cautions, write_report

    y = np.array([1] * 12 + [0] * 40)
    p = np.where(y == 1, 0.9, 0.1)
    cautions = report_cautions(y, p)
    assert cautions == [
        "only 12 real candidates in the validation set (fewer than 30): these numbers "
        "are noisy; validate on more"
    ]
    everything_real = report_cautions(y, np.full(len(y), 0.7))
    assert any("calls every candidate real at threshold 0.5" in c for c in everything_real)
    big = np.array([1] * 40 + [0] * 40)
    assert report_cautions(big, np.where(big == 1, 0.8, 0.3)) == []
    report = write_report(y, p, tmp_path, curves=False)
    assert report["cautions"] == cautions
    assert "caution: only 12 real candidates" in report["text"]
    assert "caution: only 12 real" in (tmp_path / "diagnostics.txt").read_text()
