"""Probability calibration: make P(real) mean what it says.

A network trained with balanced class weights and early stopping ranks candidates
well, but its P(real) is often over- or under-confident: of the candidates scored
0.8, far more or far fewer than 80 % may be real. Calibration fits a monotone map
from the network's P(real) to a calibrated one on labelled data held out from
training, with scikit-learn's :class:`~sklearn.calibration.CalibratedClassifierCV`
around the already-fitted classifier (:class:`~sklearn.frozen.FrozenEstimator`,
which replaced ``cv="prefit"``).

The fitted map is kept as plain numbers, never as a pickle:

``"sigmoid"`` (Platt scaling)
    ``p_cal = 1 / (1 + exp(a * p + b))`` with two numbers ``a``, ``b``. Smooth and
    frugal: the choice for validation sets of up to a few hundred candidates.
``"isotonic"``
    A non-decreasing step-wise linear map through the points ``(x, y)``, clipped
    at both ends. Makes no assumption on the shape of the miscalibration but needs
    more data (thousands of candidates) and flattens ties into steps.

These numbers are stored in the model file's ``otrain`` record under
``"calibration"`` (see :mod:`otrain.model_files`) and applied by
:meth:`otrain.CutoutClassifier.predict_proba` after the network, so a calibrated
model is still one file. The Keras network inside the file is unchanged: an ONNX
export (:mod:`otrain.export`) gives the network's uncalibrated P(real) unless the
calibration is added to it (``otrain-export`` does, by default).
"""

import numpy as np

__all__ = [
    "CALIBRATION_METHODS",
    "Calibration",
    "calibrate",
    "fit_calibration",
    "fit_calibration_scores",
    "log_odds",
    "calibration_cautions",
    "calibrate_model_file",
    "MIN_CALIBRATION_STAMPS",
]

#: Calibration methods otrain stores and applies.
CALIBRATION_METHODS = ("sigmoid", "isotonic")

#: Fewest stamps of each class a method is fitted on before its map is trusted: a
#: sigmoid has two numbers to fit, an isotonic map one step per distinct score and
#: overfits small sets (scikit-learn advises against it below about a thousand).
MIN_CALIBRATION_STAMPS = {"sigmoid": 50, "isotonic": 500}


class Calibration:
    """A fitted calibration map of P(real), stored as plain numbers.

    Parameters
    ----------
    method : {"sigmoid", "isotonic"}
    params : dict
        ``{"a": float, "b": float}`` for ``"sigmoid"``; ``{"x": list, "y": list}``
        (the isotonic regression's thresholds, increasing ``x``) for ``"isotonic"``.

    Examples
    --------
    >>> cal = Calibration("sigmoid", {"a": -6.0, "b": 3.0})
    >>> cal.apply([0.5]).round(3)
    array([0.5])
    """

    def __init__(self, method, params):
        params = dict(params)
        scale = params.pop("input", "p_real")
        if scale not in _SCALES:
            raise ValueError(
                f"calibration input must be one of {', '.join(_SCALES)}, got {scale!r}"
            )
        if method not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, "
                f"got {method!r}"
            )
        if method == "sigmoid":
            params = {"a": float(params["a"]), "b": float(params["b"])}
            if not (np.isfinite(params["a"]) and np.isfinite(params["b"])):
                raise ValueError(f"sigmoid calibration needs finite a and b, got {params}")
        else:
            x = np.asarray(params["x"], dtype=np.float64)
            y = np.asarray(params["y"], dtype=np.float64)
            if x.ndim != 1 or x.shape != y.shape or len(x) < 1:
                raise ValueError(
                    "isotonic calibration needs equally long, non-empty x and y lists, got "
                    f"{len(np.atleast_1d(x))} and {len(np.atleast_1d(y))} values"
                )
            if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise ValueError("isotonic calibration needs non-decreasing x and y")
            params = {"x": x.tolist(), "y": y.tolist()}
        self.method = method
        self.params = params
        self.input = scale

    def apply(self, p_real):
        """Calibrated P(real) of raw P(real) values.

        Parameters
        ----------
        p_real : array-like
            The network's P(real).

        Returns
        -------
        ndarray of float64, same shape
        """
        p = np.asarray(p_real, dtype=np.float64)
        if self.input == "log_odds":
            p = log_odds(p)
        if self.method == "sigmoid":
            from scipy.special import expit

            return expit(-(self.params["a"] * p + self.params["b"]))
        # np.interp clips outside [x[0], x[-1]], as IsotonicRegression(out_of_bounds="clip").
        return np.interp(p, self.params["x"], self.params["y"])

    def to_record(self):
        """The JSON-able record stored in a model file: ``{"method", **params}``."""
        record = {"method": self.method, **self.params}
        if self.input != "p_real":
            record["input"] = self.input
        return record

    @classmethod
    def from_record(cls, record):
        """Rebuild from :meth:`to_record`'s output."""
        record = dict(record)
        return cls(record.pop("method"), record)

    def __repr__(self):
        on = "" if self.input == "p_real" else f", input={self.input!r}"
        if self.method == "sigmoid":
            return f"Calibration('sigmoid', a={self.params['a']:.4g}, b={self.params['b']:.4g}{on})"
        return f"Calibration('isotonic', {len(self.params['x'])} points{on})"


# What a map takes: P(real) itself, or its log-odds log(p / (1 - p)).
_SCALES = ("p_real", "log_odds")
# P(real) is clipped this far from 0 and 1 before its log-odds are taken.
_CLIP = 1e-7


def log_odds(p_real):
    """``log(p / (1 - p))`` of P(real), clipped to stay finite (float64)."""
    p = np.clip(np.asarray(p_real, dtype=np.float64), _CLIP, 1.0 - _CLIP)
    return np.log(p) - np.log1p(-p)


def fit_calibration_scores(p_real, y, *, method="sigmoid"):
    """Fit a calibration map on the log-odds of P(real) values and their labels.

    For out-of-fold scores (each stamp scored by the network of an ensemble that did
    not train on it; see :meth:`otrain.CutoutClassifier.calibrate`). The map takes
    the log-odds of P(real): a sigmoid on log-odds (Platt scaling) then carries over
    exactly from one network to an ensemble that averages its networks' log-odds.

    Parameters
    ----------
    p_real : array-like of shape (n,)
        Uncalibrated P(real).
    y : array-like of shape (n,)
        1 real, 0 bogus.
    method : {"sigmoid", "isotonic"}, default "sigmoid"

    Returns
    -------
    Calibration
    """
    from sklearn.calibration import _SigmoidCalibration
    from sklearn.isotonic import IsotonicRegression

    y = _check_method_and_labels(method, y).astype(int)
    scores = log_odds(p_real)
    if method == "sigmoid":
        mapping = _SigmoidCalibration().fit(scores, y)
        params = {"a": float(mapping.a_), "b": float(mapping.b_)}
    else:
        mapping = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores, y)
        params = {"x": mapping.X_thresholds_.tolist(), "y": mapping.y_thresholds_.tolist()}
    return Calibration(method, {**params, "input": "log_odds"})


def calibrate(classifier, X, y, *, method="sigmoid"):
    """Calibrate a fitted classifier on held-out stamps, in place.

    The same as ``classifier.calibrate(X, y, method=method)``: the map fitted by
    :func:`fit_calibration` becomes ``classifier.calibration_``, which
    ``predict_proba`` then applies. A classifier that was calibrated before is
    re-calibrated from its raw probabilities.

    Parameters
    ----------
    classifier : CutoutClassifier
        Fitted (or loaded).
    X : array-like of shape (n, H, W, C)
        Stamps the network was NOT trained on (e.g. the validation set).
    y : array-like of shape (n,)
        1 real, 0 bogus.
    method : {"sigmoid", "isotonic"}, default "sigmoid"

    Returns
    -------
    CutoutClassifier
        ``classifier``, with ``calibration_`` set.
    """
    return classifier.calibrate(X, y, method=method)


def fit_calibration(classifier, X, y, *, method="sigmoid"):
    """Fit a calibration map of a classifier's raw P(real) on held-out stamps.

    The map is fitted by scikit-learn's ``CalibratedClassifierCV`` on
    ``FrozenEstimator(classifier)`` (the network is not retrained), from the
    network's own probabilities (any calibration the classifier has is left out).
    The classifier is not changed: ``CutoutClassifier.calibrate`` keeps the map.

    Parameters
    ----------
    classifier : CutoutClassifier
        Fitted (or loaded).
    X : array-like of shape (n, H, W, C)
        Stamps the network was NOT trained on (e.g. the validation set).
    y : array-like of shape (n,)
        1 real, 0 bogus.
    method : {"sigmoid", "isotonic"}, default "sigmoid"

    Returns
    -------
    Calibration
    """
    import copy

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    from .exceptions import NotFittedError

    y = _check_method_and_labels(method, y)
    if not getattr(classifier, "initialized_", False):
        raise NotFittedError("this CutoutClassifier is not fitted yet: fit it before calibrating")
    raw = copy.copy(classifier)
    raw.calibration_ = None
    calibrated = CalibratedClassifierCV(FrozenEstimator(raw), method=method).fit(X, y)
    (fitted,) = calibrated.calibrated_classifiers_
    (mapping,) = fitted.calibrators
    if method == "sigmoid":
        params = {"a": float(mapping.a_), "b": float(mapping.b_)}
    else:
        params = {"x": mapping.X_thresholds_.tolist(), "y": mapping.y_thresholds_.tolist()}
    return Calibration(method, params)


def _check_method_and_labels(method, y):
    """``y`` as an array, once ``method`` is known and ``y`` holds both classes."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}"
        )
    y = np.asarray(y)
    if len(np.unique(y)) != 2:
        raise ValueError(
            f"calibration needs real and bogus stamps; y holds {len(np.unique(y))} class(es)"
        )
    return y


def calibration_cautions(y, method):
    """Why a calibration map fitted on labels ``y`` with ``method`` may not be trusted.

    Parameters
    ----------
    y : array-like of shape (n,)
        The labels the map is fitted on (1 real, 0 bogus).
    method : {"sigmoid", "isotonic"}

    Returns
    -------
    list of str
        Empty when each class has at least :data:`MIN_CALIBRATION_STAMPS` stamps.
    """
    y = np.asarray(y)
    need = MIN_CALIBRATION_STAMPS[method]
    cautions = []
    for label, name in ((1, "real"), (0, "bogus")):
        count = int(np.sum(y == label))
        if count < need:
            cautions.append(
                f"{method} calibration fitted on {count} {name} stamps, fewer than the "
                f"{need} it needs to be trusted"
                + ("; prefer sigmoid on small sets" if method == "isotonic" else "")
            )
    return cautions


def calibrate_model_file(
    model,
    cube,
    output,
    *,
    method="sigmoid",
    target_recall=None,
    target_fpr=None,
    channels=None,
    normalisation=None,
    overwrite=False,
):
    """Calibrate a model file on a labelled datacube and write the result to ``output``.

    Parameters
    ----------
    model : str or path-like
        A model file (:func:`otrain.model_files.load_model`).
    cube : str or path-like
        A labelled datacube of stamps the network was not trained on; its channels
        are matched to the model's.
    output : str or path-like
        The calibrated model file (``.keras`` or ``.h5``).
    method : {"sigmoid", "isotonic"}, default "sigmoid"
    target_recall, target_fpr : float, optional
        Choose a new threshold on the calibrated P(real) of ``cube`` (see
        :func:`otrain.thresholds.choose_threshold`); by default the model's stored
        threshold is kept.
    channels, normalisation : optional
        For a legacy model without otrain metadata (see ``load_model``).
    overwrite : bool, default False
        Replace an existing ``output``.

    Returns
    -------
    dict
        ``calibration``, ``n_stamps``, ``n_real``, ``n_bogus``, ``brier_before``,
        ``brier_after`` (on ``cube`` itself), ``threshold``, ``threshold_rule`` and
        ``cautions`` (see :func:`calibration_cautions`).
    """
    from pathlib import Path

    from .datacube import load_datacube
    from .diagnostics import binary_diagnostics, score_datacube
    from .exceptions import OutputError
    from .model_files import load_model, save_model
    from .thresholds import choose_threshold

    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: exists; give another output or overwrite=True")
    if Path(model).resolve() == output.resolve():
        raise OutputError(f"{output}: is the model being calibrated; give another output")
    targets = {"target_recall": target_recall, "target_fpr": target_fpr}
    targets = {k: v for k, v in targets.items() if v is not None}
    if len(targets) > 1:
        raise ValueError("give one of target_recall= and target_fpr=, not both")
    data = load_datacube(cube)
    classifier = load_model(model, channels=channels, normalisation=normalisation)
    data, p_before, threshold = score_datacube(classifier, data, name=str(cube))
    classifier.calibrate(data.cube, data.labels, method=method)
    p_after = classifier.predict_proba(data.cube)[:, 1]
    rule = None
    if targets:
        threshold = choose_threshold(data.labels, p_after, **targets)
        rule = dict(targets)
    classifier.set_threshold(threshold)
    extra = {"calibration_stamps": len(data), "calibration_cube": str(cube)}
    if rule is not None:
        extra["threshold_rule"] = {**rule, "n_tuning": len(data)}
    save_model(classifier, output, extra=extra)
    return {
        "calibration": classifier.calibration_,
        "n_stamps": len(data),
        "n_real": data.n_true,
        "n_bogus": data.n_false,
        "brier_before": binary_diagnostics(data.labels, p_before)["brier"],
        "brier_after": binary_diagnostics(data.labels, p_after)["brier"],
        "threshold": threshold,
        "threshold_rule": rule,
        "cautions": calibration_cautions(data.labels, method),
    }
