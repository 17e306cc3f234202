"""Figures of a classifier's scores against labels: ROC, precision-recall, F1/MCC
against threshold, probability distributions, reliability.
"""

import math

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from .._validation import check_scores, check_threshold
from ..diagnostics import (
    binary_diagnostics,
    threshold_scan,
)
from . import _common
from ._common import (
    _BOGUS,
    _GREYED,
    _MARK,
    _P_BINS,
    _REAL,
    MIN_PER_CLASS,
    _add_legend,
    _bins,
    _check_groups,
    _count_axis,
    _decimals,
    _figure,
    _missing_note,
    _ordered_colours,
    _range_label,
)

__all__ = [
    "SURVEY_SCORES",
    "plot_survey_scores",
    "plot_roc",
    "plot_precision_recall",
    "plot_threshold_scan",
    "plot_probability_distribution",
    "plot_reliability",
]


def _roc_curve(ax, y, p, label, score=True, **style):
    fpr, tpr, _ = roc_curve(y, p)
    if score:
        label = f"{label}, AUC {roc_auc_score(y, p):.3f}"
    ax.plot(fpr, tpr, label=label, **style)


def _pr_curve(ax, y, p, label, score=True, **style):
    precision, recall, _ = precision_recall_curve(y, p)
    if score:
        label = f"{label}, AP {average_precision_score(y, p):.3f}"
    ax.plot(recall, precision, drawstyle="steps-post", label=label, **style)


def _draw_by_group(ax, y, p, groups, draw):
    """Draw one curve per bin of checked ``groups`` (or one overall); return legend notes.

    A bin with fewer than ``MIN_PER_CLASS`` stamps of a class is drawn grey and
    dotted, without a score: its curve is a handful of steps, its AUC chance.
    """
    overall = f"all candidates (n={len(y)})"
    if groups is None:
        draw(ax, y, p, overall, color="tab:blue", linewidth=2)
        return []
    values, edges, label = groups
    notes = _missing_note(values, label)
    bins = list(_bins(values, edges))
    colours = _ordered_colours(len(bins))
    decimals = _decimals(edges)
    greyed = 0
    for colour, (low, high, mask, last) in zip(colours, bins, strict=True):
        count = int(mask.sum())
        if count == 0:
            continue
        text = f"{_range_label(low, high, label, decimals, last)} (n={count}"
        n_real = int(y[mask].sum())
        if n_real in (0, count):
            notes.append(f"{text}): not drawn, one class only")
            continue
        if min(n_real, count - n_real) < MIN_PER_CLASS:
            greyed += 1
            draw(
                ax,
                y[mask],
                p[mask],
                f"{text}: {n_real} real, {count - n_real} bogus; too few)",
                score=False,
                **_GREYED,
            )
            continue
        draw(ax, y[mask], p[mask], f"{text})", color=colour, linewidth=1.6)
    draw(ax, y, p, overall, color="black", linewidth=1.2, linestyle="--")
    if greyed:
        notes.append(
            f"grey dotted: bins with fewer than {MIN_PER_CLASS} real or bogus "
            "candidates, no score given"
        )
    return notes


def _check_both_classes(y, what):
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"a {what} needs both real and bogus candidates; y_true holds only "
            f"{'real (1)' if y[0] == 1 else 'bogus (0)'}"
        )


def plot_roc(y_true, p_real, path, *, groups=None):
    """Plot the ROC curve: real candidates recovered against bogus ones let through.

    Two panels: the full range, and the small false positive rates on a log axis,
    where a useful real/bogus classifier operates.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True classes: 0 = bogus, 1 = real.
    p_real : array-like of shape (n,)
        Probability of real.
    path : str or path-like
        Output file.
    groups : tuple (values, edges, label), optional
        Draw one curve per bin of ``values`` (e.g. magnitudes or magnitude errors,
        NaN for unknown), with bin ``edges`` (None: chosen by
        :func:`~otrain.diagnostics.magnitude_bins`) and ``label`` the name of the
        quantity (e.g. ``"mag"``); the overall curve is drawn dashed. Empty bins are
        skipped; bins holding one class only are named in the legend, not drawn.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        If the inputs are invalid or hold one class only.
    """
    y, p = check_scores(y_true, p_real)
    _check_both_classes(y, "ROC curve")
    groups = None if groups is None else _check_groups(groups, len(y))
    fig = _figure(11.5, 5.6)
    full, zoom = fig.subplots(1, 2)
    notes = _draw_by_group(full, y, p, groups, _roc_curve)
    _draw_by_group(zoom, y, p, groups, _roc_curve)
    # Surveys see far more bogus than real candidates, so what matters is the true
    # positive rate at false positive rates of 1e-3 or less: a log axis shows that
    # corner. Below 1 / n_bogus there is no information; the axis starts just under.
    low = max(0.5 / np.count_nonzero(y == 0), 1e-6)
    for ax, start in ((full, 0.0), (zoom, low)):
        ax.plot([start, 1], [start, 1], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_xlabel("false positive rate (fraction of bogus called real)")
        ax.set_ylabel("true positive rate (fraction of real called real)")
        ax.grid(alpha=0.3)
    full.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    full.set_title("Full range")
    zoom.set_xscale("log")
    zoom.set(xlim=(low, 1), ylim=(-0.01, 1.01))
    zoom.set_title("Small false positive rates (log scale)")
    by = "" if groups is None else f" per {groups[2]} bin"
    fig.suptitle(f"ROC curve{by}")
    # One curve per bin makes a long legend: under the panels, off the curves.
    if groups is None:
        _add_legend(full, notes, loc="lower right")
    else:
        _add_legend(full, notes, below=True)
    return _common._save(fig, path)


def plot_precision_recall(y_true, p_real, path, *, groups=None):
    """Plot precision (purity) against recall (completeness) over all thresholds.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True classes: 0 = bogus, 1 = real.
    p_real : array-like of shape (n,)
        Probability of real.
    path : str or path-like
        Output file.
    groups : tuple (values, edges, label), optional
        One curve per bin, as in :func:`plot_roc`; the legend gives each bin's range,
        count and average precision (AP).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        If the inputs are invalid or hold one class only.
    """
    y, p = check_scores(y_true, p_real)
    _check_both_classes(y, "precision-recall curve")
    groups = None if groups is None else _check_groups(groups, len(y))
    fig = _figure(6.4, 6.0)
    ax = fig.add_subplot()
    notes = _draw_by_group(ax, y, p, groups, _pr_curve)
    prevalence = float(np.mean(y))
    ax.axhline(
        prevalence,
        color="grey",
        linestyle=":",
        linewidth=1,
        label=f"chance (fraction real {prevalence:.2f})",
    )
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.03), aspect="equal")
    ax.set_xlabel("recall (fraction of real candidates called real)")
    ax.set_ylabel("precision (fraction of those called real that are real)")
    by = "" if groups is None else f" per {groups[2]} bin"
    ax.set_title(f"Precision-recall curve{by}")
    ax.grid(alpha=0.3)
    if groups is None:
        _add_legend(ax, notes, loc="lower left")
    else:
        _add_legend(ax, notes, below=True, ncols=1)
    return _common._save(fig, path)


def plot_threshold_scan(y_true, p_real, path, threshold=0.5):
    """Plot precision, recall, F1 and MCC against the decision threshold.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True classes: 0 = bogus, 1 = real.
    p_real : array-like of shape (n,)
        Probability of real.
    path : str or path-like
        Output file.
    threshold : float, default 0.5
        The chosen threshold, marked with its F1 and MCC; the threshold of highest
        MCC is marked too.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    y, p = check_scores(y_true, p_real)
    threshold = check_threshold(threshold)
    scan = threshold_scan(y, p, thresholds=np.arange(1, 200) / 200)
    chosen = binary_diagnostics(y, p, threshold)
    fig = _figure(7.0, 5.4)
    ax = fig.add_subplot()
    t = scan["threshold"]
    ax.plot(t, scan["precision"], color="tab:green", label="precision (purity)")
    ax.plot(t, scan["recall"], color="tab:purple", label="recall (completeness)")
    ax.plot(t, scan["f1"], color="tab:blue", linewidth=2, label="F1")
    ax.plot(t, scan["mcc"], color="black", linewidth=2, label="MCC")
    ax.axvline(
        threshold,
        color=_MARK,
        linestyle="--",
        label=f"chosen {threshold:.2f}: F1 {chosen['f1']:.3f}, MCC {chosen['mcc']:.3f}",
    )
    mcc = np.asarray(scan["mcc"], dtype=np.float64)
    if np.isfinite(mcc).any():
        best = int(np.nanargmax(mcc))
        ax.axvline(
            t[best],
            color="grey",
            linestyle=":",
            label=f"best MCC at {t[best]:.3f}: MCC {mcc[best]:.3f}",
        )
    # MCC can be negative (worse than chance); show it when it is.
    bottom = min(0.0, float(np.nanmin(mcc)) - 0.02) if np.isfinite(mcc).any() else 0.0
    ax.set(xlim=(0, 1), ylim=(bottom, 1.02))
    ax.set_xlabel("threshold on P(real) (called real when P(real) ≥ threshold)")
    ax.set_ylabel("score")
    ax.set_title(f"Scores against decision threshold (n={len(y)}, {int(y.sum())} real)")
    ax.grid(alpha=0.3)
    _add_legend(ax, below=True)
    return _common._save(fig, path)


def plot_probability_distribution(y_true, p_real, path, threshold=0.5):
    """Histograms of P(real) for the true real and the true bogus candidates.

    The y axis is logarithmic, so the few misclassified candidates (bogus with high
    P(real), real with low P(real)) stay visible next to the large peaks at 0 and 1.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True classes: 0 = bogus, 1 = real.
    p_real : array-like of shape (n,)
        Probability of real.
    path : str or path-like
        Output file.
    threshold : float, default 0.5
        Decision threshold, marked; the legend counts the candidates on its wrong side.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    y, p = check_scores(y_true, p_real)
    threshold = check_threshold(threshold)
    fig = _figure(6.4, 4.6)
    ax = fig.add_subplot()
    for cls, name, colour, wrong in ((0, "bogus", _BOGUS, "real"), (1, "real", _REAL, "bogus")):
        values = p[y == cls]
        if len(values) == 0:
            continue
        misses = np.count_nonzero(values >= threshold if cls == 0 else values < threshold)
        label = f"true {name} (n={len(values)}; {misses} called {wrong})"
        ax.hist(values, bins=_P_BINS, histtype="stepfilled", color=colour, alpha=0.3)
        ax.hist(values, bins=_P_BINS, histtype="step", color=colour, linewidth=1.6, label=label)
    ax.axvline(threshold, color=_MARK, linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set_yscale("log")
    _count_axis(ax.yaxis)
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(real)")
    ax.set_ylabel(f"candidates per bin (bin width {_P_BINS[1]:.3f})")
    ax.set_title("Distribution of P(real) by true class")
    ax.grid(alpha=0.3)
    _add_legend(ax, loc="upper center", headroom=True)
    return _common._save(fig, path)


def _wilson_interval(fraction, count, z=1.0):
    """Wilson score interval of a binomial fraction (z=1: 68%).

    Unlike the normal approximation it does not shrink to nothing at 0 and 1.
    """
    shrink = 1 + z * z / count
    centre = (fraction + z * z / (2 * count)) / shrink
    spread = math.sqrt(fraction * (1 - fraction) / count + z * z / (4 * count * count))
    half = z * spread / shrink
    return max(0.0, centre - half), min(1.0, centre + half)


def plot_reliability(y_true, p_real, path, n_bins=10):
    """Reliability diagram: the fraction of real candidates against P(real).

    A calibrated classifier lies on the diagonal: of the candidates given P(real) =
    0.8, 80% are real. Each point is one bin of P(real), at the mean P(real) of its
    candidates, with a 68% Wilson binomial interval; the lower panel shows how many
    candidates each bin holds. The title gives the Brier score (lower is better).

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True classes: 0 = bogus, 1 = real.
    p_real : array-like of shape (n,)
        Probability of real.
    path : str or path-like
        Output file.
    n_bins : int, default 10
        Number of equal-width bins of P(real).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    y, p = check_scores(y_true, p_real)
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    points = []  # (mean P(real), fraction real, lower error, upper error, count)
    for _, _, mask, _ in _bins(p, edges):
        count = int(mask.sum())
        if count == 0:
            continue
        f = float(y[mask].mean())
        low, high = _wilson_interval(f, count)
        # max(0, ...): at f = 0 or 1 rounding can put the bound a hair past f.
        points.append((float(p[mask].mean()), f, max(0.0, f - low), max(0.0, high - f), count))
    brier = float(np.mean((p - y) ** 2))
    fig = _figure(6.0, 6.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    # Bins of a handful of candidates say little: drawn grey and not joined, so that
    # the line follows only the bins that can be read.
    enough = MIN_PER_CLASS
    for kept, style in (
        (
            [q for q in points if q[4] >= enough],
            {"color": "tab:blue", "label": f"classifier ({n_bins} bins of P(real))"},
        ),
        (
            [q for q in points if q[4] < enough],
            {
                "color": "0.6",
                "linestyle": "none",
                "markerfacecolor": "white",
                "label": f"bins of fewer than {enough} candidates: too few to judge",
            },
        ),
    ):
        if kept:
            x, f, low, high, _ = zip(*kept, strict=True)
            top.errorbar(x, f, yerr=[low, high], marker="o", capsize=3, **style)
    top.set(xlim=(0, 1), ylim=(-0.02, 1.02))
    top.set_ylabel("fraction of candidates that are real")
    top.set_title(f"Reliability diagram (n={len(y)}, Brier score {brier:.4f})")
    top.grid(alpha=0.3)
    # Below the figure: in the axes it would hide the bins near 0 and 1.
    _add_legend(top, below=True, ncols=1)
    bottom.hist(p, bins=edges, color="tab:blue", alpha=0.5, edgecolor="tab:blue")
    bottom.set_yscale("log")
    _count_axis(bottom.yaxis)
    bottom.set_xlabel("P(real)")
    bottom.set_ylabel("candidates per bin")
    bottom.grid(alpha=0.3)
    return _common._save(fig, path)


#: The survey scores :func:`plot_survey_scores` draws against, with their labels.
SURVEY_SCORES = {
    "drb": "ZTF drb (deep real/bogus)",
    "rb": "ZTF rb (random forest)",
    "reliability": "Rubin reliability",
}


def plot_survey_scores(table, path, *, title=None):
    """Draw otrain's P(real) against the survey's own scores, one panel per score.

    For alert packets (:mod:`otrain.alerts`), whose candidates carry the survey's
    real/bogus scores: ZTF's ``rb`` and ``drb``, Rubin's ``reliability``.

    Parameters
    ----------
    table : astropy.table.Table
        A result table with ``label1`` and some of the columns ``rb``, ``drb``,
        ``reliability`` (as :func:`otrain.inference.score_files` gives for alerts).
    path : str or path-like
        The PNG to write (atomically).
    title : str, optional
        Figure title (default: the number of candidates).

    Returns
    -------
    pathlib.Path or None
        The file written, or None when the table has no survey score.
    """
    panels = []
    for column, label in SURVEY_SCORES.items():
        if column in table.colnames:
            values = np.asarray(table[column], dtype=np.float64)
            if np.isfinite(values).any():
                panels.append((column, label, values))
    if not panels:
        return None
    p_real = np.asarray(table["label1"], dtype=np.float64)
    fig = _figure(4.2 * len(panels), 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (_column, label, values) in zip(axes, panels, strict=True):
        ok = np.isfinite(values) & np.isfinite(p_real)
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, zorder=0)
        ax.scatter(values[ok], p_real[ok], s=14, alpha=0.7, edgecolor="none")
        agree = np.mean((values[ok] >= 0.5) == (p_real[ok] >= 0.5))
        ax.set(
            xlim=(-0.02, 1.02),
            ylim=(-0.02, 1.02),
            xlabel=label,
            ylabel="otrain P(real) (label1)",
            title=f"{ok.sum()} candidates, {100 * agree:.0f}% agree at 0.5",
        )
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"otrain against the survey's own scores ({len(table)} candidates)")
    return _common._save(fig, path)
