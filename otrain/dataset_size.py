"""How many cutouts does a training set need? Learning curves over training-set sizes.

A network is trained on growing subsets of a datacube and scored on held-out cutouts,
with stratified k-fold cross-validation: a learning curve. When the validation score
stops rising, more cutouts no longer help: :func:`smallest_sufficient_size` finds the
smallest training set whose validation MCC is within a tolerance of the best one, and
:func:`write_dataset_size_report` writes the numbers and the figures. This is the
library behind ``otrain-optimise-dataset-size`` (O'TRAIN's ``optimise_dataset_size``).

The curve follows :func:`sklearn.model_selection.learning_curve` (train on the first
``n`` cutouts of each training fold, score on its validation fold) but runs it
through :func:`sklearn.model_selection.cross_validate`, one split per (size, fold)
pair, because ``learning_curve`` takes a single score and the curve needs four,
from one training each.

Every training subset keeps the class balance of the cube: the training fold is
ordered so that each of its prefixes holds real and bogus cutouts in the proportion
of the whole fold. Random prefixes (``learning_curve(shuffle=True)``) can miss the
rarer class entirely at small sizes. The order is random within each class, seeded
by ``random_state``.

Scores, for the training subset and for the validation fold of each size and fold:

- ``mcc``: Matthews correlation coefficient, the headline score (robust to class
  imbalance);
- ``f1``: F1 score of the real class;
- ``accuracy``: fraction of correct calls at P(real) >= 0.5;
- ``loss``: log loss (cross-entropy) of the final model, without class weights,
  augmentation or dropout, so training and validation values compare directly.
"""

import math
import os
from contextlib import contextmanager
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table
from sklearn.metrics import make_scorer, matthews_corrcoef
from sklearn.model_selection import StratifiedKFold, cross_validate

from ._atomic import atomic_output, ensure_folder
from .datacube import Datacube, load_datacube
from .exceptions import OutputError

__all__ = [
    "METRICS",
    "dataset_size_curve",
    "smallest_sufficient_size",
    "dataset_size_answer",
    "dataset_size_notes",
    "format_dataset_size_table",
    "write_dataset_size_report",
]

#: Scores of a dataset-size curve: column-name stem -> label in tables and figures.
METRICS = {"mcc": "MCC", "f1": "F1", "accuracy": "accuracy", "loss": "log loss"}

# Scorers given to cross_validate. The loss is scored as neg_log_loss (greater is
# better, as scikit-learn wants) and stored with its sign flipped.
_SCORING = {
    "mcc": make_scorer(matthews_corrcoef),
    "f1": "f1",
    "accuracy": "accuracy",
    "loss": "neg_log_loss",
}


def _epochs_trained(estimator, X, y):
    """Epochs a Keras classifier trained for (NaN for other estimators).

    Given to cross_validate as one more "score": the one way to read a fitted
    attribute without keeping every fitted network in memory.
    """
    history = getattr(estimator, "history_", None)
    return float(len(history["loss"])) if history else math.nan


# The smallest subset holds at least this many cutouts of each class (or all of a
# class's cutouts in the fold, when it has fewer): fewer than a handful of examples
# of a class cannot train a network, and CutoutClassifier needs two of each to hold
# some out for early stopping.
_MIN_PER_CLASS = 5

# Environment variables that size TensorFlow's thread pools; TensorFlow reads them
# when its runtime starts, so they must be set before a worker process imports it.
_TF_THREAD_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def dataset_size_curve(
    cube,
    *,
    estimator=None,
    n_sections=20,
    folds=3,
    random_state=0,
    n_jobs=1,
    min_size=None,
    verbose=0,
    client=None,
):
    """Train and score a classifier on growing training sets (a learning curve).

    For each of ``folds`` stratified folds, a classifier is trained on the first
    ``size`` cutouts of the (class-balanced) training order, for ``n_sections``
    sizes evenly spaced between ``min_size`` and the whole training fold, and
    scored on the training subset and on the validation fold. That is
    ``n_sections * folds`` trainings.

    Parameters
    ----------
    cube : Datacube or path-like
        The labelled cutouts, or the ``.npz`` file of a datacube (named in errors).
    estimator : classifier, optional
        A scikit-learn classifier of stamps with ``predict_proba``; cloned for each
        training. Default: ``CutoutClassifier(random_state=random_state)``.
    n_sections : int, default 20
        Number of training-set sizes, at least 2 (fewer when the sizes, rounded to
        whole cutouts, coincide).
    folds : int, default 3
        Number of cross-validation folds, at least 2: each cutout is in the
        validation set of exactly one fold.
    random_state : int, default 0
        Seed of the folds and of the order of the cutouts within each class.
    n_jobs : int, default 1
        Trainings run at the same time, each in its own process (joblib's loky
        backend; -1 = one per core). Each process gets ``cores // n_jobs`` threads
        for TensorFlow and the numerical libraries, so that the trainings do not
        fight over the cores. Each process holds a TensorFlow runtime and a copy of
        the training data: memory grows with ``n_jobs``. On a GPU, keep 1.
    min_size : int, optional
        Smallest training-set size. Default: the smallest size holding at least
        five cutouts of each class in every fold.
    verbose : int, default 0
        Progress messages: the plan (sizes and number of trainings), then
        scikit-learn's and joblib's lines as trainings end.
    client : distributed.Client, optional
        Run the trainings on the workers of this Dask cluster (joblib's Dask
        backend; ``n_jobs`` is then ignored), each worker's TensorFlow limited to
        its own threads (:func:`otrain.cluster.prepare_workers`). The table is
        the one of a local run with the same seeds. The cube is sent to the
        workers once.

    Returns
    -------
    astropy.table.Table
        One row per size, sizes strictly increasing. Columns: ``size`` (training
        cutouts), ``n_real`` (real ones among them, the fewest over folds), and for
        each score ``m`` of :data:`METRICS` and each of ``train`` and ``valid``:
        ``{train,valid}_m`` (per fold, shape (n_sizes, folds)),
        ``{train,valid}_m_mean`` and ``{train,valid}_m_std`` (over folds); then
        ``fit_time`` (per fold), ``fit_time_mean`` and ``fit_time_std``, in
        seconds, and ``epochs`` (per fold) and ``epochs_mean``: epochs trained,
        until early stopping or the limit (NaN for an estimator without a Keras
        ``history_``). ``meta``
        records the cube, the folds, the seed and the estimator.

    Raises
    ------
    DatacubeError
        If ``cube`` is a path that is not a readable datacube.
    ValueError
        If a setting is out of range, or the cube holds too few cutouts of a class
        for ``folds`` folds and two training-set sizes.

    Examples
    --------
    >>> from otrain import CutoutClassifier
    >>> from otrain.dataset_size import dataset_size_curve, smallest_sufficient_size
    >>> table = dataset_size_curve(
    ...     "cube.npz", estimator=CutoutClassifier(network="vgg6", epochs=10), n_sections=10
    ... )  # doctest: +SKIP
    >>> smallest_sufficient_size(table, tolerance=0.02)  # doctest: +SKIP
    1840
    """
    name = "the datacube"
    if not isinstance(cube, Datacube):
        name = str(cube)
        cube = load_datacube(cube)
    n_sections = _check_int("n_sections", n_sections, 2)
    folds = _check_int("folds", folds, 2)
    if min_size is not None:
        min_size = _check_int("min_size", min_size, 2)
    if estimator is None:
        from .classifier import CutoutClassifier

        estimator = CutoutClassifier(random_state=random_state)

    labels = np.asarray(cube.labels)
    n_real, n_bogus = int(np.sum(labels == 1)), int(np.sum(labels == 0))
    if min(n_real, n_bogus) < folds:
        raise ValueError(
            f"{name} holds {n_real} real and {n_bogus} bogus cutouts: {folds}-fold "
            f"cross-validation needs at least {folds} of each class (and many more for a "
            "useful curve); add cutouts or use fewer folds"
        )
    splits = _stratified_splits(labels, folds, random_state)
    sizes, min_size = _training_sizes(labels, splits, n_sections, min_size, name)

    if verbose:
        print(
            f"[dataset_size_curve] {len(labels)} cutouts ({n_real} real, {n_bogus} bogus): "
            f"{len(sizes)} sizes x {folds} folds = {len(sizes) * folds} trainings; "
            f"training-set sizes: {sizes.tolist()}",
            flush=True,
        )
    # learning_curve's algorithm (train on the first n of each training fold, score on
    # its validation fold) as one cross_validate over every (size, fold) pair:
    # learning_curve takes a single score, cross_validate several at once, and it
    # runs all n_sizes x folds trainings in one parallel pool.
    pairs = [(train[:n], test) for n in sizes for train, test in splits]
    with _worker_threads(n_jobs, client):
        out = cross_validate(
            estimator,
            cube.cube,
            labels,
            cv=pairs,
            scoring={**_SCORING, "epochs": _epochs_trained},
            n_jobs=n_jobs,
            verbose=verbose,
            return_train_score=True,
            error_score="raise",
        )

    table = Table()
    table["size"] = np.asarray(sizes, dtype=np.int64)
    table["n_real"] = [
        min(int(np.sum(labels[train[:n]] == 1)) for train, _ in splits) for n in sizes
    ]
    for metric in METRICS:
        sign = -1.0 if metric == "loss" else 1.0
        for part, key in (("train", "train"), ("valid", "test")):
            values = sign * _per_fold(out[f"{key}_{metric}"], folds)
            _add_columns(table, f"{part}_{metric}", values, "{:.4f}")
    _add_columns(table, "fit_time", _per_fold(out["fit_time"], folds), "{:.1f}", u.s)
    table["epochs"] = _per_fold(out["test_epochs"], folds)
    table["epochs_mean"] = table["epochs"].mean(axis=1)
    table["epochs_mean"].format = "{:.1f}"
    table.meta.update(
        {
            "cube": name,
            "n_cutouts": len(labels),
            "n_real": n_real,
            "n_bogus": n_bogus,
            "folds": folds,
            "n_sections": n_sections,
            "min_size": min_size,
            "random_state": random_state,
            "estimator": type(estimator).__name__,
            "estimator_params": _simple_params(estimator),
        }
    )
    return table


def smallest_sufficient_size(table, tolerance=0.02, metric="mcc"):
    """The smallest training-set size whose validation score is near the best.

    Parameters
    ----------
    table : astropy.table.Table
        A table of :func:`dataset_size_curve` (``size`` and ``valid_{metric}_mean``).
    tolerance : float, default 0.02
        Largest acceptable shortfall from the best mean validation score, in the
        score's units (0.02 MCC by default).
    metric : {"mcc", "f1", "accuracy", "loss"}, default "mcc"
        The score compared; for ``"loss"``, lower is better.

    Returns
    -------
    int
        The smallest ``size`` whose mean validation score is within ``tolerance``
        of the best one over all sizes. Sizes whose score is NaN are ignored.

    Raises
    ------
    ValueError
        If ``tolerance`` is negative or not finite, ``metric`` unknown, or the table
        has no finite validation score.

    Examples
    --------
    >>> from astropy.table import Table
    >>> table = Table({"size": [100, 200, 400], "valid_mcc_mean": [0.70, 0.89, 0.90]})
    >>> smallest_sufficient_size(table, tolerance=0.02)
    200
    """
    tolerance = float(tolerance)
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    column = f"valid_{metric}_mean"
    for needed in ("size", column):
        if needed not in table.colnames:
            raise ValueError(
                f"the table has no {needed!r} column; give a table made by dataset_size_curve"
            )
    sizes = np.asarray(table["size"])
    scores = np.asarray(table[column], dtype=np.float64)
    finite = np.isfinite(scores)
    if not finite.any():
        raise ValueError(f"the table has no finite {column!r} value")
    if metric == "loss":
        good = finite & (scores <= np.min(scores[finite]) + tolerance)
    else:
        good = finite & (scores >= np.max(scores[finite]) - tolerance)
    return int(np.min(sizes[good]))


def dataset_size_answer(table, tolerance=0.02):
    """The answer to "how many cutouts do I need?", as one sentence.

    Parameters
    ----------
    table : astropy.table.Table
        A table of :func:`dataset_size_curve`.
    tolerance : float, default 0.02
        As in :func:`smallest_sufficient_size` (validation MCC).

    Returns
    -------
    str
    """
    size = smallest_sufficient_size(table, tolerance)
    row = table[int(np.flatnonzero(np.asarray(table["size"]) == size)[0])]
    scores = np.asarray(table["valid_mcc_mean"], dtype=np.float64)
    best = table[int(np.nanargmax(scores))]
    folds = table.meta.get("folds")
    cv = f" ({folds}-fold cross-validation)" if folds else ""
    found = f"{row['valid_mcc_mean']:.3f} ± {row['valid_mcc_std']:.3f}"
    if size == table["size"][-1]:
        # Only the largest size is within the tolerance of the best: the best is there.
        return (
            f"At least {size} training cutouts are needed, and more would probably help: "
            f"the validation MCC was still rising at the largest size tried, {found} with "
            f"{size} cutouts{cv}."
        )
    if size == best["size"]:
        return (
            f"About {size} training cutouts are enough: their validation MCC, {found}, "
            f"is the best of all sizes tried, up to {table['size'][-1]} cutouts{cv}."
        )
    return (
        f"About {size} training cutouts are enough: their validation MCC, {found}, is "
        f"within {tolerance:g} of the best, {best['valid_mcc_mean']:.3f} with "
        f"{best['size']} cutouts{cv}."
    )


def dataset_size_notes(table, tolerance=0.02):
    """Warnings on how far the answer can be trusted, one sentence each.

    Parameters
    ----------
    table : astropy.table.Table
        A table of :func:`dataset_size_curve`.
    tolerance : float, default 0.02
        As in :func:`smallest_sufficient_size`.

    Returns
    -------
    list of str
        Empty when nothing is amiss. Two things are checked: the folds disagree by
        more than the tolerance at the sufficient or the best size (the answer is
        within the noise), and most trainings ran every epoch without early
        stopping (the networks may be under-trained: larger sets then score better
        partly because each epoch holds more steps).
    """
    notes = []
    size = smallest_sufficient_size(table, tolerance)
    sizes = np.asarray(table["size"])
    best = int(np.nanargmax(np.asarray(table["valid_mcc_mean"], dtype=np.float64)))
    rows = sorted({int(np.flatnonzero(sizes == size)[0]), best})
    spread = max(float(table["valid_mcc_std"][i]) for i in rows)
    if spread > tolerance:
        notes.append(
            f"the validation MCC varies by ±{spread:.3f} between folds near the answer, "
            f"more than the tolerance ({tolerance:g}): take the answer as rough; runs "
            "with other seeds (--seed) show how much it moves"
        )
    limit = table.meta.get("estimator_params", {}).get("epochs")
    if "epochs" in table.colnames and limit:
        epochs = np.asarray(table["epochs"], dtype=np.float64)
        ran_all = int(np.sum(epochs >= limit))
        if np.isfinite(epochs).all() and ran_all > epochs.size / 2:
            notes.append(
                f"{ran_all} of {epochs.size} trainings ran all {limit} epochs without early "
                "stopping: the networks may be under-trained, and larger sets then score "
                "better partly because an epoch holds more steps; raise the epochs "
                "(--epochs) to check the answer"
            )
    return notes


def format_dataset_size_table(table):
    """The main columns of a dataset-size table as aligned text, one line per size.

    Parameters
    ----------
    table : astropy.table.Table
        A table of :func:`dataset_size_curve`.

    Returns
    -------
    str
        Size, real cutouts, validation MCC, F1, accuracy and loss (mean ± std over
        folds), training MCC, the mean time of one training and the mean epochs.
    """
    header = (
        f"{'size':>7} {'real':>6}  {'valid MCC':>15}  {'valid F1':>15}  "
        f"{'valid accuracy':>15}  {'valid loss':>15}  {'train MCC':>9}  {'fit (s)':>8}"
        f"  {'epochs':>6}"
    )
    lines = [header]
    for row in table:
        cells = [f"{row['size']:>7d}", f"{row['n_real']:>6d}"]
        for metric in ("mcc", "f1", "accuracy", "loss"):
            mean, std = row[f"valid_{metric}_mean"], row[f"valid_{metric}_std"]
            cells.append(f" {f'{mean:.3f} ± {std:.3f}':>15}")
        cells.append(f" {row['train_mcc_mean']:>9.3f}")
        cells.append(f" {row['fit_time_mean']:>8.1f}")
        cells.append(f" {row['epochs_mean']:>6.1f}")
        lines.append(" ".join(cells))
    return "\n".join(lines)


def write_dataset_size_report(table, outdir, tolerance=0.02, *, name=None):
    """Write a dataset-size table and its figures to ``outdir``, atomically.

    Files, each prefixed with ``name + "_"`` when ``name`` is given:

    - ``dataset_size.csv``: one line per size, the means and standard deviations
      (for spreadsheets);
    - ``dataset_size.ecsv``: the whole table, per-fold scores, units and metadata
      included (the tolerance and the answer too): read it back with
      ``astropy.table.Table.read`` to draw the figures again;
    - ``mcc_dataset_size.png``, ``f1_dataset_size.png``,
      ``accuracy_dataset_size.png``: training and validation scores against the
      size, the sufficient size marked;
    - ``gap_dataset_size.png``: training minus validation MCC (over-fitting);
    - ``loss_dataset_size.png``: training and validation log loss.

    Parameters
    ----------
    table : astropy.table.Table
        A table of :func:`dataset_size_curve`.
    outdir : str or path-like
        Output folder, created if needed.
    tolerance : float, default 0.02
        As in :func:`smallest_sufficient_size`; decides the size marked.
    name : str, optional
        Prefix of the file names (the model name of ``otrain-optimise-dataset-size``).

    Returns
    -------
    dict of str to pathlib.Path
        Keys ``"csv"``, ``"ecsv"``, ``"mcc"``, ``"f1"``, ``"accuracy"``, ``"gap"``,
        ``"loss"``.

    Raises
    ------
    OutputError
        If the folder or a file cannot be written.
    """
    from .plots import plot_learning_curve, plot_learning_gap

    chosen = smallest_sufficient_size(table, tolerance)
    outdir = ensure_folder(outdir)
    prefix = f"{name}_" if name else ""
    paths = {}

    full = table.copy()
    full.meta["tolerance"] = float(tolerance)
    full.meta["sufficient_size"] = chosen
    full.meta["answer"] = dataset_size_answer(table, tolerance)
    full.meta["notes"] = dataset_size_notes(table, tolerance)
    scalar = [c for c in table.colnames if table[c].ndim == 1]
    paths["csv"] = _write_table(table[scalar], outdir / f"{prefix}dataset_size.csv", "ascii.csv")
    paths["ecsv"] = _write_table(full, outdir / f"{prefix}dataset_size.ecsv", "ascii.ecsv")

    sizes = np.asarray(table["size"])
    for metric in ("mcc", "f1", "accuracy"):
        paths[metric] = plot_learning_curve(
            sizes,
            table[f"train_{metric}"],
            table[f"valid_{metric}"],
            outdir / f"{prefix}{metric}_dataset_size.png",
            metric=METRICS[metric],
            chosen_size=chosen,
        )
    paths["gap"] = plot_learning_gap(
        sizes, table["train_mcc"], table["valid_mcc"], outdir / f"{prefix}gap_dataset_size.png"
    )
    paths["loss"] = plot_learning_curve(
        sizes,
        table["train_loss"],
        table["valid_loss"],
        outdir / f"{prefix}loss_dataset_size.png",
        metric=METRICS["loss"],
    )
    return paths


# ------------------------------------------------------------------------- helpers


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _stratified_splits(labels, folds, random_state):
    """Stratified k-fold splits whose training indices are in class-balanced order.

    Within each class the order is random; the classes are then interleaved by
    their rank fraction ((rank + 0.5) / count), so that every prefix of the
    training indices holds each class in the proportion of the whole fold.
    """
    rng = np.random.default_rng(random_state)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    splits = []
    for train, test in splitter.split(np.zeros(len(labels)), labels):
        keys = np.empty(len(train))
        for value in np.unique(labels[train]):
            members = np.flatnonzero(labels[train] == value)
            keys[rng.permutation(members)] = (np.arange(len(members)) + 0.5) / len(members)
        # Random tie-breaks: with balanced classes, the first pair is not always real-bogus.
        order = np.lexsort((rng.random(len(train)), keys))
        splits.append((train[order], test))
    return splits


def _training_sizes(labels, splits, n_sections, min_size, name):
    """Evenly spaced sizes from the smallest useful subset to the smallest fold."""
    max_size = min(len(train) for train, _ in splits)
    smallest = 2
    for train, _ in splits:
        fold_labels = labels[train]
        for value in (0, 1):
            counts = np.cumsum(fold_labels == value)
            need = _MIN_PER_CLASS if min_size is None else 1
            need = min(need, int(counts[-1]))
            smallest = max(smallest, int(np.searchsorted(counts, need)) + 1)
    if min_size is None:
        min_size = smallest
    elif min_size < smallest:
        raise ValueError(
            f"min_size={min_size} leaves a training set without real or without bogus "
            f"cutouts in {name}; use min_size >= {smallest}"
        )
    if min_size >= max_size:
        raise ValueError(
            f"{name} holds too few cutouts ({len(labels)}) for a curve: the training "
            f"folds hold {max_size} cutouts and the smallest useful training set "
            f"{min_size}; add cutouts, use fewer folds or a smaller min_size"
        )
    sizes = np.unique(np.round(np.linspace(min_size, max_size, n_sections)).astype(np.int64))
    return sizes, min_size


def _per_fold(values, folds):
    """cross_validate's flat (size-major) results as an (n_sizes, folds) array."""
    return np.asarray(values, dtype=np.float64).reshape(-1, folds)


def _add_columns(table, stem, values, fmt, unit=None):
    """Per-fold values and their mean and standard deviation over folds."""
    table[stem] = values
    table[f"{stem}_mean"] = values.mean(axis=1)
    table[f"{stem}_std"] = values.std(axis=1)
    for column in (stem, f"{stem}_mean", f"{stem}_std"):
        table[column].format = fmt
        if unit is not None:
            table[column].unit = unit


def _simple_params(estimator):
    """The estimator's parameters that are plain values (a network function is not)."""
    params = estimator.get_params(deep=False)
    simple = (bool, int, float, str, type(None))
    return {key: value for key, value in params.items() if isinstance(value, simple)}


def _write_table(table, path, fmt):
    try:
        with atomic_output(path) as tmp:
            table.write(tmp, format=fmt, overwrite=True)
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(
            f"cannot write {path}: {err.strerror or err}; check the disk space and "
            "permissions of that folder"
        ) from err
    return Path(path)


@contextmanager
def _worker_threads(n_jobs, client=None):
    """Limit the threads of each parallel training to ``cores // n_jobs``.

    With a Dask ``client``, the trainings run on its workers instead, each
    worker's TensorFlow limited to the worker's threads.

    TensorFlow sizes its thread pools from ``TF_NUM_INTRAOP_THREADS`` and
    ``TF_NUM_INTEROP_THREADS`` when its runtime starts. The loky worker processes are
    new interpreters that inherit the environment of this one when they start, so
    the variables are set here (unless the user set them) for the duration of the
    run; ``inner_max_num_threads`` does the same for OpenMP, BLAS and friends.
    """
    from joblib import cpu_count, effective_n_jobs, parallel_config

    if client is not None:
        from .cluster import prepare_workers

        prepare_workers(client)
        with parallel_config(backend="dask", client=client):
            yield
        return
    n_jobs = effective_n_jobs(n_jobs)
    if n_jobs == 1:
        yield
        return
    threads = max(1, cpu_count() // n_jobs)
    saved = {var: os.environ.get(var) for var in _TF_THREAD_VARS}
    for var in _TF_THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    try:
        with parallel_config(backend="loky", inner_max_num_threads=threads):
            yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
