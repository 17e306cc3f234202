"""Decision thresholds: from P(real) to a 0/1 call, chosen on validation data.

A candidate is **called real when** ``p_real >= threshold`` everywhere in otrain
(diagnostics, ``otrain-infer``'s ``label`` column, ``CutoutClassifier.predict`` of
a model that stores a threshold). :func:`choose_threshold` picks the threshold
that keeps a target fraction of the real transients (recall) or lets through at
most a target fraction of the bogus candidates (false-positive rate), measured on
labelled validation data the network was not trained on.
"""

import math

import numpy as np

from ._validation import check_scores

__all__ = ["choose_threshold", "DEFAULT_THRESHOLD"]

#: Threshold of a model file that stores none.
DEFAULT_THRESHOLD = 0.5


def _check_target(value, name):
    try:
        target = float(value)
    except (TypeError, ValueError):
        target = math.nan
    if not 0.0 < target <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return target


def choose_threshold(y_true, p_real, *, target_recall=None, target_fpr=None):
    """The threshold on P(real) that meets a target recall or false-positive rate.

    Candidates are called real when ``p_real >= threshold``. Give exactly one target:

    - ``target_recall``: the **highest** threshold whose recall (share of the real
      candidates called real) is at least ``target_recall``. It is the score of a
      real candidate: the ``ceil(target_recall * n_real)``-th highest. Higher
      thresholds would lose more real transients than allowed; lower ones would
      only let more bogus candidates through.
    - ``target_fpr``: the **lowest** threshold whose false-positive rate (share of
      the bogus candidates called real) is at most ``target_fpr``: half-way between
      the highest-scoring bogus candidate that must be rejected and the next higher
      score, so that it keeps as many real candidates as the target allows.

    The targets hold on the data given; on new data they hold on average only, the
    more closely the larger the validation set (with 100 real candidates, a recall
    of 0.99 rests on one transient).

    Parameters
    ----------
    y_true : array-like of shape (n,)
        1 real, 0 bogus; both classes must be present.
    p_real : array-like of shape (n,)
        P(real) of each candidate, in [0, 1] (calibrated or not: the threshold is
        chosen on the scores given, and must be used on the same kind of scores).
    target_recall : float in (0, 1], optional
        Share of the real candidates to keep, e.g. 0.99.
    target_fpr : float in (0, 1], optional
        Largest share of the bogus candidates to call real, e.g. 0.01.

    Returns
    -------
    float
        The threshold, in [0, 1].

    Raises
    ------
    ValueError
        If no or both targets are given, a target is outside (0, 1], a class is
        missing, or no threshold in [0, 1] meets ``target_fpr`` (bogus candidates
        scored exactly 1).

    Examples
    --------
    >>> y = [0, 0, 0, 1, 1, 1, 1]
    >>> p = [0.1, 0.4, 0.7, 0.3, 0.6, 0.8, 0.9]
    >>> choose_threshold(y, p, target_recall=0.75)
    0.6
    >>> choose_threshold(y, p, target_fpr=0.34)
    0.5
    """
    if (target_recall is None) == (target_fpr is None):
        raise ValueError(
            "give exactly one of target_recall and target_fpr "
            f"(got target_recall={target_recall!r}, target_fpr={target_fpr!r})"
        )
    y_true, p_real = check_scores(y_true, p_real)
    n_real = int(np.count_nonzero(y_true == 1))
    n_bogus = len(y_true) - n_real
    if n_real == 0 or n_bogus == 0:
        raise ValueError(
            f"choosing a threshold needs real and bogus candidates; got {n_real} real and "
            f"{n_bogus} bogus"
        )
    if target_recall is not None:
        target = _check_target(target_recall, "target_recall")
        real_scores = np.sort(p_real[y_true == 1])[::-1]
        # Rounding guard: 0.99 * 100 is 98.99999999999999 in floating point.
        k = max(1, math.ceil(target * n_real - 1e-9))
        return float(real_scores[k - 1])
    target = _check_target(target_fpr, "target_fpr")
    bogus_scores = np.sort(p_real[y_true == 0])[::-1]
    allowed = math.floor(target * n_bogus + 1e-9)
    if allowed >= n_bogus:
        return 0.0
    rejected = bogus_scores[allowed]
    above = p_real[p_real > rejected]
    if len(above):
        return float(0.5 * (rejected + above.min()))
    threshold = float(np.nextafter(rejected, np.inf))
    if threshold > 1.0:
        raise ValueError(
            f"no threshold in [0, 1] lets through at most {target:g} of the bogus "
            f"candidates: {int(np.count_nonzero(bogus_scores >= 1.0))} of {n_bogus} score "
            "exactly 1; calibrate the model or accept a larger target_fpr"
        )
    return threshold
