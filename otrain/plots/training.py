"""Figures of training: loss and accuracy per epoch, and the training-set size curves
(``otrain-optimise-dataset-size``).
"""

import numpy as np
from matplotlib.ticker import MaxNLocator

from . import _common
from ._common import (
    _MARK,
    _TRAIN,
    _VALID,
    _add_legend,
    _as_1d,
    _check_not_empty,
    _figure,
)

__all__ = [
    "plot_history",
    "plot_learning_curve",
    "plot_learning_gap",
]


def plot_history(history, path, metric="loss", *, n_networks=1):
    """Plot a training metric per epoch, for the training and validation sets.

    Parameters
    ----------
    history : mapping of str to sequence of float
        Values per epoch, as Keras' ``History.history``: ``metric`` and, when there
        was a validation set, ``"val_" + metric``.
    path : str or path-like
        Output file.
    metric : str, default "loss"
        The metric to plot, e.g. ``"loss"`` or ``"accuracy"``. The best validation
        epoch is marked (lowest for a loss, highest otherwise).
    n_networks : int, default 1
        For an ensemble, whose ``history`` is the mean over its networks (see
        ``CutoutClassifier.history_``): said in the title, and no epoch is marked
        (each network kept its own).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        If ``history`` has no values for ``metric``.
    """
    if metric not in history or len(history[metric]) == 0:
        keys = ", ".join(sorted(k for k in history if not k.startswith("val_"))) or "none"
        raise ValueError(f"history has no values for {metric!r}; metrics present: {keys}")
    train = _as_1d(history[metric], f"history[{metric!r}]")
    valid = history.get(f"val_{metric}")
    name = metric.replace("_", " ")
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    epochs = np.arange(1, len(train) + 1)
    style = {"marker": "o", "markersize": 3} if len(train) <= 30 else {}
    ax.plot(epochs, train, color=_TRAIN, label="training", **style)
    if valid is not None and len(valid):
        valid = _as_1d(valid, f"history['val_{metric}']")
        epochs_valid = np.arange(1, len(valid) + 1)
        ax.plot(epochs_valid, valid, color=_VALID, label="validation", **style)
        if np.isfinite(valid).any() and n_networks == 1:
            lower_is_better = "loss" in metric or "error" in metric
            best = int(np.nanargmin(valid) if lower_is_better else np.nanargmax(valid))
            ax.plot(
                epochs_valid[best],
                valid[best],
                marker="*",
                markersize=12,
                color=_MARK,
                linestyle="none",
                label=f"best validation: epoch {best + 1}, {valid[best]:.4g}",
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    # Whole epochs only, however few: one epoch is one point at 1, not 0.945...1.055.
    ax.set_xlim(0.5, max(len(train), 1) + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    title = f"{name.capitalize()} per epoch"
    if n_networks > 1:
        title += f", mean of {n_networks} networks (each on its own fold)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _add_legend(ax)
    return _common._save(fig, path)


def _learning_arrays(train_sizes, train_scores, valid_scores):
    sizes = _as_1d(train_sizes, "train_sizes")
    scores = []
    for name, values in (("train_scores", train_scores), ("valid_scores", valid_scores)):
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, np.newaxis]
        if values.ndim != 2 or values.shape[0] != len(sizes):
            raise ValueError(
                f"{name} must have shape (n_sizes, n_folds) with n_sizes = {len(sizes)}, "
                f"got shape {values.shape}"
            )
        scores.append(values)
    _check_not_empty(len(sizes), "training-set size")
    return sizes, scores[0], scores[1]


def _mean_std(scores):
    """Mean and standard deviation over folds, ignoring failed (NaN) folds."""
    finite = np.isfinite(scores)
    count = finite.sum(axis=1)
    filled = np.where(finite, scores, 0.0)
    mean = np.full(len(scores), np.nan)
    np.divide(filled.sum(axis=1), count, out=mean, where=count > 0)
    square = np.where(finite, (scores - mean[:, np.newaxis]) ** 2, 0.0).sum(axis=1)
    std = np.full(len(scores), np.nan)
    np.divide(square, count, out=std, where=count > 0)
    return mean, np.sqrt(std)


def plot_learning_curve(
    train_sizes, train_scores, valid_scores, path, metric="MCC", chosen_size=None
):
    """Training and validation scores against the size of the training set.

    Takes the output of :func:`sklearn.model_selection.learning_curve`: lines are the
    mean over cross-validation folds, bands one standard deviation. When the
    validation score stops rising, more data no longer helps. Folds that failed (NaN
    scores) are left out.

    Parameters
    ----------
    train_sizes : array-like of shape (n_sizes,)
        Numbers of training candidates.
    train_scores, valid_scores : array-like of shape (n_sizes, n_folds)
        Scores on the training and validation folds.
    path : str or path-like
        Output file.
    metric : str, default "MCC"
        Name of the score, for the axis label.
    chosen_size : int, optional
        Training-set size chosen, marked.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    sizes, train, valid = _learning_arrays(train_sizes, train_scores, valid_scores)
    fig = _figure(6.8, 4.8)
    ax = fig.add_subplot()
    for scores, colour, name in ((train, _TRAIN, "training"), (valid, _VALID, "validation")):
        mean, std = _mean_std(scores)
        ax.plot(sizes, mean, marker="o", markersize=4, color=colour, label=f"{name} (mean)")
        ax.fill_between(
            sizes, mean - std, mean + std, color=colour, alpha=0.2, label=f"{name} (±1 std)"
        )
    if chosen_size is not None:
        ax.axvline(chosen_size, color=_MARK, linestyle="--", label=f"chosen size {chosen_size:g}")
    ax.set_xlabel("training-set size (candidates)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs training-set size ({train.shape[1]}-fold cross-validation)")
    ax.grid(alpha=0.3)
    _add_legend(ax, loc="best")
    return _common._save(fig, path)


def plot_learning_gap(train_sizes, train_scores, valid_scores, path, metric="MCC"):
    """Training minus validation score against the size of the training set.

    A large gap means over-fitting: the network learns its training set by heart.
    The gap should shrink as the training set grows. The line is the mean over
    folds of the per-fold gap, the band one standard deviation.

    Parameters
    ----------
    train_sizes : array-like of shape (n_sizes,)
        Numbers of training candidates.
    train_scores, valid_scores : array-like of shape (n_sizes, n_folds)
        Scores on the training and validation folds, as returned by
        :func:`sklearn.model_selection.learning_curve`.
    path : str or path-like
        Output file.
    metric : str, default "MCC"
        Name of the score, for the axis label.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    sizes, train, valid = _learning_arrays(train_sizes, train_scores, valid_scores)
    if train.shape != valid.shape:
        raise ValueError(
            f"train_scores and valid_scores must have the same shape, "
            f"got {train.shape} and {valid.shape}"
        )
    mean, std = _mean_std(train - valid)
    fig = _figure(6.8, 4.4)
    ax = fig.add_subplot()
    ax.axhline(0, color="grey", linestyle=":", linewidth=1, label="no gap")
    ax.plot(sizes, mean, marker="o", markersize=4, color="tab:purple", label="gap (mean)")
    ax.fill_between(
        sizes, mean - std, mean + std, color="tab:purple", alpha=0.2, label="gap (±1 std)"
    )
    ax.set_xlabel("training-set size (candidates)")
    ax.set_ylabel(f"training − validation {metric}")
    ax.set_title(f"Generalisation gap ({train.shape[1]}-fold cross-validation)")
    ax.grid(alpha=0.3)
    _add_legend(ax, loc="upper right")
    return _common._save(fig, path)
