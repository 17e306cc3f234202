"""Active learning: which unlabelled candidates to label next.

A model trained on a few labels is most useful where it is least sure: labelling
those candidates first teaches it more per label than labelling at random. The
strategies:

* ``random``: a seeded random order, the baseline (and the start, when there is no
  model yet);
* ``uncertainty``: P(real) closest to the model's decision threshold first (its
  stored ``threshold_``, else 0.5); one forward pass, cheap;
* ``mc-dropout``: the largest spread of P(real) over Monte-Carlo dropout draws first
  (:meth:`otrain.classifier.CutoutClassifier.predict_proba_mc`); ``mc_samples``
  forward passes, and the network needs a dropout layer;
* ``score`` (highest P(real) first) and ``name`` (as listed) are orders too, for
  browsing rather than for learning.

The loop, as ``docs/labelling.md`` describes it: label ~50 candidates at random,
``otrain-convert``, ``otrain-train``, then label the candidates this module ranks
first, retrain, and so on.
"""

from dataclasses import dataclass

import numpy as np

from .exceptions import LabellingError

__all__ = ["STRATEGIES", "Ranking", "rank_candidates", "order_by_scores"]

#: Strategies understood by :func:`rank_candidates`.
STRATEGIES = ("random", "uncertainty", "mc-dropout", "score", "name")

# Strategies that need a model.
_NEEDS_MODEL = ("uncertainty", "mc-dropout", "score")


@dataclass
class Ranking:
    """Candidates in the order to label them.

    Attributes
    ----------
    order : ndarray of int
        Positions in the candidates given, most informative first; candidates that
        could not be scored (unreadable, EDGE) come last, in the order given.
    p_real : ndarray of float or None
        P(real) of each candidate (in the order given, not ranked), NaN where not
        scored; None for ``random`` and ``name``.
    p_real_std : ndarray of float or None
        Spread of P(real) over Monte-Carlo dropout draws (``mc-dropout`` only).
    threshold : float
        The decision threshold that ``uncertainty`` measured the distance to.
    skipped : list of (str, str)
        Candidate files that could not be scored, and why.
    """

    order: np.ndarray
    p_real: np.ndarray | None = None
    p_real_std: np.ndarray | None = None
    threshold: float = 0.5
    skipped: list | None = None


def _random_state(random_state):
    """``sklearn.utils.check_random_state`` without importing scikit-learn.

    ``otrain-label`` without a model must start in well under 3 s, and importing
    scikit-learn alone costs one to three seconds on a busy machine.
    """
    if isinstance(random_state, np.random.RandomState | np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, int | np.integer):
        return np.random.RandomState(random_state)
    raise ValueError(
        f"random_state must be an int, a RandomState, a Generator or None, got {random_state!r}"
    )


def _check_strategy(strategy):
    if strategy not in STRATEGIES:
        raise LabellingError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


def order_by_scores(strategy, n, *, p_real=None, p_real_std=None, threshold=0.5, random_state=0):
    """Order ``n`` candidates by ``strategy`` from scores already computed.

    Parameters
    ----------
    strategy : {"random", "uncertainty", "mc-dropout", "score", "name"}
    n : int
        Number of candidates.
    p_real : array-like of shape (n,), optional
        P(real); NaN where a candidate was not scored. Needed by ``uncertainty``
        and ``score``.
    p_real_std : array-like of shape (n,), optional
        Monte-Carlo dropout spread; needed by ``mc-dropout``.
    threshold : float, default 0.5
        Decision threshold for ``uncertainty``.
    random_state : int, RandomState, Generator or None, default 0
        Seed of ``random`` (and of the tie-breaking of the others).

    Returns
    -------
    ndarray of int
        Positions ``0..n-1``, the first to label first; unscored ones last.
    """
    _check_strategy(strategy)
    if strategy == "name":
        return np.arange(n)
    rng = _random_state(random_state)
    shuffled = rng.permutation(n)
    if strategy == "random":
        return shuffled
    if strategy == "mc-dropout":
        if p_real_std is None:
            raise LabellingError("the mc-dropout order needs Monte-Carlo dropout scores")
        key = -np.asarray(p_real_std, dtype=float)
    else:
        if p_real is None:
            raise LabellingError(f"the {strategy} order needs the model's scores")
        p_real = np.asarray(p_real, dtype=float)
        key = np.abs(p_real - threshold) if strategy == "uncertainty" else -p_real
    if len(key) != n:
        raise LabellingError(f"{len(key)} scores for {n} candidates")
    # Unscored candidates last; ties broken at random (a stable sort of a shuffle).
    key = np.where(np.isfinite(key), key, np.inf)[shuffled]
    return shuffled[np.argsort(key, kind="stable")]


def rank_candidates(
    model,
    candidates,
    *,
    strategy="uncertainty",
    mc_samples=20,
    threshold=None,
    random_state=0,
    n_jobs=None,
    progress=None,
):
    """Rank unlabelled candidates: the ones worth labelling next first.

    Parameters
    ----------
    model : CutoutClassifier, str, path-like or None
        A fitted classifier, or a model file (loaded with
        :func:`otrain.model_files.load_model`); None only for ``random``/``name``.
    candidates : list of str or ndarray of shape (n, H, W, C)
        Cutout files (scored with :func:`otrain.inference.score_files`) or stamps
        (scored with the classifier's ``predict_proba``/``predict_proba_mc``).
    strategy : {"uncertainty", "mc-dropout", "random", "score", "name"}, default "uncertainty"
        See the module's description.
    mc_samples : int, default 20
        Monte-Carlo dropout draws for ``mc-dropout``.
    threshold : float, optional
        Decision threshold for ``uncertainty``; the model's stored ``threshold_`` by
        default, else 0.5.
    random_state : int, RandomState, Generator or None, default 0
        Seed of the random order, of the tie-breaking and of the dropout draws.
    n_jobs : int, optional
        Processes reading files (see :func:`otrain.inference.score_files`).
    progress : callable, optional
        Called as ``progress(n_done)`` while files are scored.

    Returns
    -------
    Ranking

    Raises
    ------
    LabellingError
        If the strategy is unknown, needs a model and none is given, or no candidate
        could be scored (the model's channels or size do not fit the cutouts).

    Examples
    --------
    >>> from otrain.active_learning import rank_candidates
    >>> ranking = rank_candidates("model.keras", files, strategy="uncertainty")  # doctest: +SKIP
    >>> [files[i] for i in ranking.order[:20]]  # the next 20 to label  # doctest: +SKIP
    """
    _check_strategy(strategy)
    n = len(candidates)
    if strategy not in _NEEDS_MODEL:
        return Ranking(order=order_by_scores(strategy, n, random_state=random_state), skipped=[])
    if model is None:
        raise LabellingError(f"the {strategy} strategy needs a model; give one, or use random")
    if mc_samples is not None and strategy == "mc-dropout" and int(mc_samples) < 2:
        raise LabellingError(f"mc_samples must be at least 2, got {mc_samples}")
    if not hasattr(model, "predict_proba"):
        from .model_files import load_model

        model = load_model(model)
    if threshold is None:
        threshold = getattr(model, "threshold_", None)
    threshold = 0.5 if threshold is None else float(threshold)
    mc = mc_samples if strategy == "mc-dropout" else None
    p_real = np.full(n, np.nan)
    p_std = np.full(n, np.nan) if mc else None
    skipped = []
    if isinstance(candidates, np.ndarray):
        if mc:
            mean, std = model.predict_proba_mc(candidates, mc, random_state=random_state)
            p_real[:], p_std[:] = mean[:, 1], std[:, 1]
        else:
            p_real[:] = model.predict_proba(candidates)[:, 1]
    else:
        from .inference import score_files

        paths = [str(c) for c in candidates]
        table, summary = score_files(
            model,
            paths,
            n_jobs=n_jobs,
            progress=progress,
            threshold=threshold,
            mc_samples=mc,
            random_state=random_state,
            precision="float32",
        )
        skipped = list(summary["skipped"])
        if len(table) == 0 and skipped:
            path, reason = skipped[0]
            raise LabellingError(
                f"the model could score none of the {n} candidates (first: {reason}); "
                "check that its channels and stamp size fit the cutouts"
            )
        where = {path: i for i, path in enumerate(paths)}
        rows = np.array([where[str(p)] for p in table["filename"]], dtype=np.int64)
        if len(rows):
            p_real[rows] = np.asarray(table["label1"], dtype=float)
            if mc:
                p_std[rows] = np.asarray(table["label1_std"], dtype=float)
    order = order_by_scores(
        strategy,
        n,
        p_real=p_real,
        p_real_std=p_std,
        threshold=threshold,
        random_state=random_state,
    )
    return Ranking(
        order=order, p_real=p_real, p_real_std=p_std, threshold=threshold, skipped=skipped
    )
