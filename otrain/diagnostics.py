"""The numbers that say how well real and bogus candidates are told apart.

Everything here works on plain arrays: ``y_true`` holds the true classes (0 = bogus,
1 = real) and ``p_real`` the classifier's probability that each candidate is real. A
candidate is *called real* when ``p_real >= threshold``.

Metrics that a data set cannot define are NaN, never a warning: precision when no
candidate is called real, recall and the false negative rate without real candidates,
the false positive rate without bogus ones, ROC AUC, average precision and MCC when only
one class is present. The Matthews correlation coefficient of a classifier that calls
every candidate the same way, on data holding both classes, is 0 (no skill), as in
scikit-learn.

The module also holds the bookkeeping behind ``otrain-checkinfer`` (which inference
rows are simulated sources injected into the images, and at what magnitude) and the
choice of magnitude bins shared by the plots of :mod:`otrain.plots`.

Only numpy, scikit-learn's metrics and astropy are imported, so command-line tools
that only report or plot start fast.
"""

import math

import numpy as np
from astropy.table import Table
from sklearn.metrics import average_precision_score, roc_auc_score

from ._validation import check_scores, check_threshold

__all__ = [
    "score_datacube",
    "binary_diagnostics",
    "format_diagnostics",
    "threshold_scan",
    "magnitude_bins",
    "match_simulated",
]


def _ratio(numerator, denominator):
    """``numerator / denominator`` elementwise, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _rates(tp, fp, tn, fn):
    """Threshold metrics from confusion counts (scalars or arrays), by one set of rules."""
    tp, fp, tn, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, tn, fn))
    n_real, n_bogus = tp + fn, tn + fp
    # Products of counts overflow int64 for large sets, hence floats throughout.
    denominator = np.sqrt((tp + fp) * n_real * n_bogus * (tn + fn))
    mcc = _ratio(tp * tn - fp * fn, denominator)
    # Both classes present but one call for all: no skill, 0 (scikit-learn's convention).
    mcc = np.where((denominator == 0) & (n_real > 0) & (n_bogus > 0), 0.0, mcc)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, n_real),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "mcc": mcc,
        "fpr": _ratio(fp, n_bogus),
        "fnr": _ratio(fn, n_real),
    }


def score_datacube(classifier, cube, *, threshold=None, name="the datacube"):
    """P(real) of a labelled datacube's stamps, with the channels the model takes.

    Parameters
    ----------
    classifier : CutoutClassifier
        Fitted or loaded (:func:`otrain.model_files.load_model`).
    cube : Datacube
        Labelled stamps; its channels are matched to the classifier's
        ``channels_`` (:meth:`otrain.datacube.Datacube.select_channels`).
    threshold : float, optional
        Decision threshold; default the classifier's ``threshold_``, else 0.5.
    name : str, default "the datacube"
        How to name the cube in an error (its file, say).

    Returns
    -------
    cube : Datacube
        The cube with the model's channels.
    p_real : ndarray of shape (n,)
        P(real) of each stamp (calibrated when the classifier is).
    threshold : float
    """
    from .thresholds import DEFAULT_THRESHOLD

    channels = getattr(classifier, "channels_", None)
    if channels:
        cube = cube.select_channels(channels, name=name)
    if threshold is None:
        threshold = getattr(classifier, "threshold_", None)
    threshold = check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
    return cube, classifier.predict_proba(cube.cube)[:, 1], threshold


def binary_diagnostics(y_true, p_real, threshold=0.5):
    """Summary metrics of a real/bogus classifier at one decision threshold.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True classes: 0 = bogus, 1 = real.
    p_real : array-like of shape (n,)
        Probability that each candidate is real, between 0 and 1.
    threshold : float, default 0.5
        A candidate is called real when ``p_real >= threshold``.

    Returns
    -------
    dict
        Plain Python numbers (ready for JSON):

        - ``n``, ``n_real``, ``n_bogus`` : int, candidates in all and per true class;
        - ``threshold`` : float;
        - ``accuracy`` : fraction of candidates called right;
        - ``precision`` : fraction of the candidates called real that are real (purity);
        - ``recall`` : fraction of the real candidates called real (completeness);
        - ``f1`` : harmonic mean of precision and recall;
        - ``mcc`` : Matthews correlation coefficient, -1 to 1, 0 for no skill;
        - ``fpr`` : false positive rate, fraction of bogus candidates called real;
        - ``fnr`` : false negative rate, fraction of real candidates called bogus;
        - ``average_precision`` : area under the precision-recall curve (all thresholds);
        - ``roc_auc`` : area under the ROC curve (all thresholds);
        - ``brier`` : mean squared difference between ``p_real`` and ``y_true``;
        - ``confusion_matrix`` : ``[[tn, fp], [fn, tp]]``, rows = true bogus / true
          real, columns = called bogus / called real.

        Values the data cannot define are NaN (see the module notes).

    Raises
    ------
    ValueError
        If the arrays are empty, of different lengths, ``y_true`` holds anything but 0
        and 1, or ``p_real`` a value outside [0, 1].

    Examples
    --------
    >>> d = binary_diagnostics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    >>> d["confusion_matrix"], d["precision"], d["mcc"]
    ([[1, 1], [1, 1]], 0.5, 0.0)
    """
    y_true, p_real = check_scores(y_true, p_real)
    threshold = check_threshold(threshold)
    called_real = p_real >= threshold
    real = y_true == 1
    tp = int(np.count_nonzero(called_real & real))
    fp = int(np.count_nonzero(called_real & ~real))
    fn = int(np.count_nonzero(~called_real & real))
    tn = int(np.count_nonzero(~called_real & ~real))
    rates = {name: float(value) for name, value in _rates(tp, fp, tn, fn).items()}
    both_classes = 0 < tp + fn < len(y_true)
    if both_classes:
        average_precision = float(average_precision_score(y_true, p_real))
        roc_auc = float(roc_auc_score(y_true, p_real))
    else:
        average_precision = roc_auc = math.nan
    return {
        "n": len(y_true),
        "n_real": tp + fn,
        "n_bogus": tn + fp,
        "threshold": threshold,
        **{k: rates[k] for k in ("accuracy", "precision", "recall", "f1", "mcc", "fpr", "fnr")},
        "average_precision": average_precision,
        "roc_auc": roc_auc,
        "brier": float(np.mean((p_real - y_true) ** 2)),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


_ROWS = (
    ("accuracy", "accuracy"),
    ("precision", "precision (purity)"),
    ("recall", "recall (completeness)"),
    ("f1", "F1 score"),
    ("mcc", "MCC"),
    ("fpr", "false positive rate"),
    ("fnr", "false negative rate"),
    ("average_precision", "average precision"),
    ("roc_auc", "ROC AUC"),
    ("brier", "Brier score"),
)


def format_diagnostics(diag):
    """Lay out the result of :func:`binary_diagnostics` as an aligned text table.

    Parameters
    ----------
    diag : dict
        As returned by :func:`binary_diagnostics`.

    Returns
    -------
    str
        Several lines, without a trailing newline: the counts, one metric per line
        (``undefined`` for NaN) and the confusion matrix with labelled rows and columns.

    Examples
    --------
    >>> d = binary_diagnostics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    >>> print(format_diagnostics(d).splitlines()[2])
    accuracy               0.500
    """

    def number(value):
        return "undefined" if value is None or math.isnan(value) else f"{value:.3f}"

    width = max(len(label) for _, label in _ROWS) + 2
    lines = [
        f"{'candidates':<{width}}{diag['n']} ({diag['n_real']} real, {diag['n_bogus']} bogus)",
        f"{'threshold':<{width}}{diag['threshold']:.3f} (called real when P(real) >= threshold)",
    ]
    lines += [f"{label:<{width}}{number(diag[key])}" for key, label in _ROWS]
    (tn, fp), (fn, tp) = diag["confusion_matrix"]
    cells = [str(v) for v in (tn, fp, fn, tp)]
    col = max(len("called bogus"), *(len(c) for c in cells)) + 2
    lines += [
        "",
        "confusion matrix",
        f"{'':<{width}}{'called bogus':>{col}}{'called real':>{col}}",
        f"{'true bogus':<{width}}{tn:>{col}}{fp:>{col}}",
        f"{'true real':<{width}}{fn:>{col}}{tp:>{col}}",
    ]
    return "\n".join(lines)


def threshold_scan(y_true, p_real, thresholds=None):
    """Threshold metrics over a range of decision thresholds.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True classes: 0 = bogus, 1 = real.
    p_real : array-like of shape (n,)
        Probability that each candidate is real.
    thresholds : array-like, optional
        Thresholds to try, each in [0, 1]; by default 0.01, 0.02, ..., 0.99.

    Returns
    -------
    astropy.table.Table
        One row per threshold, in the order given, with columns ``threshold``,
        ``precision``, ``recall``, ``f1``, ``mcc``, ``fpr`` and ``accuracy``, computed
        by the rules of :func:`binary_diagnostics` (NaN where undefined). ``meta``
        holds ``n``, ``n_real`` and the decision rule.

    Examples
    --------
    >>> scan = threshold_scan([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], thresholds=[0.5, 0.7])
    >>> scan["recall"].tolist(), scan["precision"].tolist()
    ([0.5, 0.5], [0.5, 1.0])
    """
    y_true, p_real = check_scores(y_true, p_real)
    if thresholds is None:
        thresholds = np.arange(1, 100) / 100
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if thresholds.ndim != 1 or len(thresholds) == 0:
        raise ValueError("thresholds must be a non-empty one-dimensional sequence")
    for value in thresholds:
        check_threshold(value, "every threshold")
    # Counting scores >= t in sorted arrays gives all thresholds in one pass.
    p_sorted_real = np.sort(p_real[y_true == 1])
    p_sorted_bogus = np.sort(p_real[y_true == 0])
    tp = len(p_sorted_real) - np.searchsorted(p_sorted_real, thresholds, side="left")
    fp = len(p_sorted_bogus) - np.searchsorted(p_sorted_bogus, thresholds, side="left")
    fn = len(p_sorted_real) - tp
    tn = len(p_sorted_bogus) - fp
    rates = _rates(tp, fp, tn, fn)
    table = Table(
        meta={
            "n": len(y_true),
            "n_real": len(p_sorted_real),
            "rule": "called real when p_real >= threshold",
        }
    )
    table["threshold"] = thresholds
    for name in ("precision", "recall", "f1", "mcc", "fpr", "accuracy"):
        table[name] = rates[name]
    return table


def _nice_decimals(step):
    """Decimals that show a bin step of this size to about two significant digits."""
    if not step > 0:
        return 1
    return int(min(4, max(0, 1 - math.floor(math.log10(step)))))


def magnitude_bins(mags, edges=None, *, n_bins=5, width=None):
    """Choose bin edges for plots and metrics split by magnitude (or magnitude error).

    Three ways, in order of precedence:

    - ``edges`` given: they are checked (increasing, at least two) and returned;
    - ``width`` given: fixed bins of that width, aligned on multiples of it (e.g. whole
      magnitudes for ``width=1``), covering all finite values; suited to plots with
      magnitude on the x axis;
    - otherwise: ``n_bins`` bins holding about the same number of candidates
      (quantiles), with edges rounded to two significant digits of the typical bin
      width (0.1 mag for magnitudes spread over a few magnitudes); suited to one curve
      per bin, each with enough candidates to be meaningful. Edges that rounding makes
      equal are merged, so fewer bins may come back.

    Bins are half-open, ``[edges[i], edges[i + 1])``, except the last, which includes
    its upper edge; the outer edges enclose every finite value.

    Parameters
    ----------
    mags : array-like
        Magnitudes (or any values to bin); NaN and infinite values (unknown magnitudes)
        are ignored.
    edges : array-like, optional
        Bin edges to use as they are.
    n_bins : int, default 5
        Number of equal-count bins when neither ``edges`` nor ``width`` is given.
    width : float, optional
        Width of fixed bins, in the units of ``mags``.

    Returns
    -------
    ndarray of float
        The bin edges, increasing; empty when ``mags`` holds no finite value (and no
        ``edges`` are given).

    Examples
    --------
    >>> magnitude_bins([16.2, 17.5, 18.9, float("nan")], width=1.0)
    array([16., 17., 18., 19.])
    """
    if edges is not None:
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or not (np.diff(edges) > 0).all():
            raise ValueError(
                f"edges must be at least two increasing numbers, got {edges.tolist()!r}"
            )
        if np.isnan(edges).any():
            raise ValueError(f"edges must not hold NaN, got {edges.tolist()!r}")
        return edges
    values = np.asarray(mags, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.empty(0)
    low, high = float(values.min()), float(values.max())
    if width is not None:
        width = float(width)
        if not width > 0 or not math.isfinite(width):
            raise ValueError(f"width must be a positive number, got {width!r}")
        start = math.floor(low / width)
        stop = max(math.floor(high / width) + 1, start + 1)
        return np.arange(start, stop + 1) * width
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if high == low:
        return np.array([math.floor(low), math.floor(low) + 1.0])
    decimals = _nice_decimals((high - low) / n_bins)
    scale = 10.0**decimals
    inner = np.round(np.quantile(values, np.linspace(0, 1, int(n_bins) + 1)[1:-1]), decimals)
    # min/max guard against float rounding leaving an extreme value outside.
    outer = [min(low, math.floor(low * scale) / scale), max(high, math.ceil(high * scale) / scale)]
    return np.unique(np.concatenate([[outer[0]], inner, [outer[1]]]))


def _column(table, name, which):
    try:
        return table[name]
    except (KeyError, ValueError, IndexError) as err:
        try:
            available = ", ".join(map(str, table.colnames))
        except AttributeError:
            available = ", ".join(map(str, getattr(table, "keys", list)()))
        raise ValueError(
            f"the {which} table has no column {name!r} (columns: {available or 'none'}); "
            "name the column to use"
        ) from err


def _id_keys(column):
    """Candidate IDs as comparable strings; masked and NaN IDs become None."""
    mask = np.ma.getmaskarray(column)
    values = np.ma.getdata(column)
    values = np.asarray(values)
    if values.dtype.kind == "f":
        keys = []
        for value, masked in zip(values, mask, strict=True):
            if masked or not math.isfinite(value):
                keys.append(None)
            elif value == int(value):
                # An ID read back as float (e.g. from a CSV with gaps) must still match.
                keys.append(str(int(value)))
            else:
                keys.append(repr(float(value)))
        return keys
    if values.dtype.kind in "iub":
        return [None if masked else str(int(v)) for v, masked in zip(values, mask, strict=True)]
    return [None if masked else str(v).strip() for v, masked in zip(values, mask, strict=True)]


def match_simulated(
    infer_table,
    crossmatch_table,
    *,
    id_column="cand_ID",
    crossmatch_id_column="closest_candID",
    mag_column="mag",
):
    """Find which scored candidates are simulated sources, and their injected magnitude.

    ``otrain-checkinfer`` checks a model on images into which artificial point sources
    were injected. A crossmatch table lists the injected sources, each with the ID of
    the candidate closest to it (``closest_candID``) and its injected magnitude; the
    inference table lists the scored candidates (``cand_ID``). A candidate is simulated
    when some injected source names it as its closest candidate.

    Unlike O'TRAIN, a candidate named by several injected sources counts as simulated
    (O'TRAIN dropped it from the simulated sample and counted it as a real source); its
    magnitude is that of the brightest of them, which dominates its flux. Crossmatch
    rows without a candidate ID (masked or NaN) are ignored.

    Parameters
    ----------
    infer_table : astropy.table.Table or mapping of columns
        The scored candidates, one per row.
    crossmatch_table : astropy.table.Table or mapping of columns
        The injected sources, one per row.
    id_column : str, default "cand_ID"
        Candidate ID column of ``infer_table``.
    crossmatch_id_column : str, default "closest_candID"
        Column of ``crossmatch_table`` with the ID of the closest candidate.
    mag_column : str, default "mag"
        Injected magnitude column of ``crossmatch_table``.

    Returns
    -------
    is_sim : ndarray of bool, shape (len(infer_table),)
        True for the inference rows that are simulated sources.
    mag_sim : ndarray of float, shape (is_sim.sum(),)
        Injected magnitude of each simulated row, in the order of the rows of
        ``infer_table[is_sim]``; NaN where the crossmatch gives none.

    Raises
    ------
    ValueError
        If a column is missing (the message lists the columns present).

    Examples
    --------
    >>> from astropy.table import Table
    >>> infer = Table({"cand_ID": [1, 2, 3], "label1": [0.9, 0.2, 0.7]})
    >>> xmatch = Table({"closest_candID": [3, 1], "mag": [19.5, 17.0]})
    >>> is_sim, mag_sim = match_simulated(infer, xmatch)
    >>> is_sim.tolist(), mag_sim.tolist()
    ([True, False, True], [17.0, 19.5])
    """
    infer_ids = _id_keys(_column(infer_table, id_column, "inference"))
    cross_ids = _id_keys(_column(crossmatch_table, crossmatch_id_column, "crossmatch"))
    cross_mags = np.ma.filled(
        np.ma.asarray(_column(crossmatch_table, mag_column, "crossmatch"), dtype=np.float64),
        np.nan,
    )
    brightest = {}
    for key, mag in zip(cross_ids, cross_mags, strict=True):
        if key is None:
            continue
        best = brightest.get(key, math.nan)
        # NaN compares false, so a known magnitude always replaces an unknown one.
        brightest[key] = mag if math.isnan(best) or mag < best else best
    is_sim = np.array([key is not None and key in brightest for key in infer_ids], dtype=bool)
    mag_sim = np.array(
        [brightest[key] for key, sim in zip(infer_ids, is_sim, strict=True) if sim],
        dtype=np.float64,
    )
    return is_sim, mag_sim
