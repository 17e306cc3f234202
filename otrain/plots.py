"""Figures that show how a real/bogus classifier behaves, one PNG per function.

Every function takes arrays and an output path, draws one figure and returns the path
written (:func:`plot_gallery` returns None when there is nothing to show). Files are
written atomically: a failed write leaves no partial file behind and raises
:class:`~otrain.exceptions.OutputError`. The format follows the file suffix (``.png``,
``.pdf``, ``.svg``...).

Figures are built as :class:`matplotlib.figure.Figure` objects, never through pyplot's
global state, so drawing is safe in scripts, servers and threads, needs no display and
leaves no open figure behind.

Conventions shared with :mod:`otrain.diagnostics`: ``y_true`` holds 0 = bogus and 1 =
real, ``p_real`` the probability of real, a candidate is called real when ``p_real >=
threshold``, and unknown magnitudes are NaN: they are left out of the plots split by
magnitude, and the legend says how many.

The figures:

- training: :func:`plot_history` (loss or accuracy per epoch);
- evaluation: :func:`plot_roc`, :func:`plot_precision_recall` (overall or per
  magnitude bin), :func:`plot_threshold_scan`, :func:`plot_probability_distribution`,
  :func:`plot_reliability`, :func:`plot_gallery` (cutouts);
- checks on injected sources (``otrain-checkinfer``):
  :func:`plot_probability_by_magnitude`, :func:`plot_probability_sim_vs_nonsim`,
  :func:`plot_fraction_per_probability_bin`, :func:`plot_fwhm_ratio`;
- training-set size (``otrain-optimise-dataset-size``): :func:`plot_learning_curve`,
  :func:`plot_learning_gap`.
"""

import math
from pathlib import Path

import numpy as np
from astropy.visualization import ImageNormalize, LinearStretch, ZScaleInterval
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from ._atomic import atomic_output
from .diagnostics import (
    _check_scores,
    _check_threshold,
    binary_diagnostics,
    magnitude_bins,
    threshold_scan,
)
from .exceptions import OutputError

__all__ = [
    "plot_history",
    "plot_roc",
    "plot_precision_recall",
    "plot_threshold_scan",
    "plot_probability_distribution",
    "plot_reliability",
    "plot_gallery",
    "gallery_titles",
    "plot_probability_by_magnitude",
    "plot_probability_sim_vs_nonsim",
    "plot_fraction_per_probability_bin",
    "plot_fwhm_ratio",
    "plot_learning_curve",
    "plot_learning_gap",
]

_DPI = 150
_REAL = "tab:blue"
_BOGUS = "tab:orange"
_SIM = "tab:blue"
_NONSIM = "tab:orange"
_TRAIN = "tab:blue"
_VALID = "tab:orange"
_MARK = "tab:red"
# Masked (NaN) pixels of a cutout: a colour no grey-scale pixel can have.
_NAN_COLOUR = "#ff00ff"
_NAN_COLOUR_NAME = "magenta"
# Bins of P(real) for histograms: 40 bins of width 0.025.
_P_BINS = np.linspace(0.0, 1.0, 41)


# --------------------------------------------------------------------------- helpers


def _figure(width=6.4, height=4.8):
    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _save(fig, path):
    """Write ``fig`` to ``path`` atomically; return the path as a :class:`Path`."""
    path = Path(path)
    # The temporary file's suffix ends in the final one, but say the format outright
    # so that a path without suffix still gets a PNG.
    fmt = path.suffix[1:].lower() or "png"
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=_DPI)
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(
            f"cannot write the plot {path}: {err.strerror or err}; "
            "check the disk space and permissions of that folder"
        ) from err
    return path


def _as_1d(values, name, n=None):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
    if n is not None and len(values) != n:
        raise ValueError(f"{name} must have one value per candidate ({n}), got {len(values)}")
    return values


def _as_probabilities(p, name, n=None):
    p = _as_1d(p, name, n)
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        raise ValueError(
            f"{name} must hold probabilities between 0 and 1; {int(bad.sum())} values are "
            f"not (first: {p[bad][0]!r})"
        )
    return p


def _decimals(edges):
    """Fewest decimals (at least one) that write every finite edge exactly."""
    finite = [e for e in np.asarray(edges, dtype=np.float64) if math.isfinite(e)]
    for decimals in range(1, 5):
        if all(abs(round(e, decimals) - e) < 1e-9 for e in finite):
            return decimals
    return 4


def _range_label(low, high, name, decimals, closed=False):
    """``"17.0 ≤ mag < 18.0"``, ``"mag < 12.0"``, ``"mag ≥ 21.0"``."""
    if not math.isfinite(low):
        return f"{name} < {high:.{decimals}f}"
    if not math.isfinite(high):
        return f"{name} ≥ {low:.{decimals}f}"
    upper = "≤" if closed else "<"
    return f"{low:.{decimals}f} ≤ {name} {upper} {high:.{decimals}f}"


def _bins(values, edges):
    """Yield ``(low, high, mask, last)`` per bin; the last bin includes its upper edge.

    NaN values fall in no bin.
    """
    edges = np.asarray(edges, dtype=np.float64)
    for i in range(len(edges) - 1):
        low, high = edges[i], edges[i + 1]
        last = i == len(edges) - 2
        mask = (values >= low) & ((values <= high) if last else (values < high))
        yield low, high, mask, last


def _ordered_colours(n, cmap="viridis", stop=0.9):
    """``n`` colours for ordered bins (bright to faint, low to high)."""
    return colormaps[cmap](np.linspace(0.0, stop, n))


def _note(label):
    """A legend entry that is only text."""
    return Line2D([], [], linestyle="none", marker="none", label=label)


def _add_legend(ax, notes=(), *, headroom=False, below=False, **kwargs):
    """Draw the legend of ``ax`` with extra text-only ``notes``.

    With ``headroom``, the y axis is raised so that a legend at the top of the axes
    sits above the data rather than on it (short legends of histograms). With
    ``below``, the legend goes under the axes, as a figure legend (long legends, or
    one legend for several panels).
    """
    handles, _ = ax.get_legend_handles_labels()
    handles += [_note(text) for text in notes]
    kwargs.setdefault("fontsize", 8)
    kwargs.setdefault("framealpha", 0.9)
    if below:
        kwargs.setdefault("ncols", 2)
        ax.figure.legend(handles=handles, loc="outside lower center", **kwargs)
        return
    ax.legend(handles=handles, **kwargs)
    if headroom:
        # Fraction of the axes height the legend takes, from its number of rows.
        free = min(0.6, 0.05 + 0.065 * len(handles))
        bottom, top = ax.get_ylim()
        if ax.get_yscale() == "log":
            span = math.log10(top) - math.log10(bottom)
            ax.set_ylim(bottom, 10 ** (math.log10(bottom) + span / (1 - free)))
        else:
            ax.set_ylim(bottom, bottom + (top - bottom) / (1 - free))


def _check_groups(groups, n):
    """Unpack ``(values, edges, label)``; ``edges=None`` chooses them from the values."""
    try:
        values, edges, label = groups
    except (TypeError, ValueError) as err:
        raise ValueError(
            "groups must be a tuple (values, edges, label), e.g. (mags, None, 'mag')"
        ) from err
    values = _as_1d(values, f"the {label} values of groups", n)
    edges = magnitude_bins(values, edges)
    return values, edges, str(label)


def _missing_note(values, label):
    missing = int(np.count_nonzero(~np.isfinite(values)))
    return [f"unknown {label}: {missing} left out"] if missing else []


# ------------------------------------------------------------------------- training


def plot_history(history, path, metric="loss"):
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
        if np.isfinite(valid).any():
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.set_title(f"{name.capitalize()} per epoch")
    ax.grid(alpha=0.3)
    _add_legend(ax)
    return _save(fig, path)


# ----------------------------------------------------------------------- evaluation


def _roc_curve(ax, y, p, label, **style):
    fpr, tpr, _ = roc_curve(y, p)
    auc = roc_auc_score(y, p)
    ax.plot(fpr, tpr, label=f"{label}, AUC {auc:.3f}", **style)


def _pr_curve(ax, y, p, label, **style):
    precision, recall, _ = precision_recall_curve(y, p)
    ap = average_precision_score(y, p)
    ax.plot(recall, precision, drawstyle="steps-post", label=f"{label}, AP {ap:.3f}", **style)


def _draw_by_group(ax, y, p, groups, draw):
    """Draw one curve per bin of checked ``groups`` (or one overall); return legend notes."""
    overall = f"all candidates (n={len(y)})"
    if groups is None:
        draw(ax, y, p, overall, color="tab:blue", linewidth=2)
        return []
    values, edges, label = groups
    notes = _missing_note(values, label)
    bins = list(_bins(values, edges))
    colours = _ordered_colours(len(bins))
    decimals = _decimals(edges)
    for colour, (low, high, mask, last) in zip(colours, bins, strict=True):
        count = int(mask.sum())
        if count == 0:
            continue
        text = f"{_range_label(low, high, label, decimals, last)} (n={count}"
        if len(np.unique(y[mask])) < 2:
            notes.append(f"{text}): not drawn, one class only")
            continue
        draw(ax, y[mask], p[mask], f"{text})", color=colour, linewidth=1.6)
    draw(ax, y, p, overall, color="black", linewidth=1.2, linestyle="--")
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
    y, p = _check_scores(y_true, p_real)
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
    for ax in (full, zoom):
        ax.plot([low, 1], [low, 1], color="grey", linestyle=":", linewidth=1, label="chance")
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
    _add_legend(full, notes, loc="lower right")
    return _save(fig, path)


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
    y, p = _check_scores(y_true, p_real)
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
    _add_legend(ax, notes, loc="lower left")
    return _save(fig, path)


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
    y, p = _check_scores(y_true, p_real)
    threshold = _check_threshold(threshold)
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
    return _save(fig, path)


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
    y, p = _check_scores(y_true, p_real)
    threshold = _check_threshold(threshold)
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
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(real)")
    ax.set_ylabel(f"candidates per bin (bin width {_P_BINS[1]:.3f})")
    ax.set_title("Distribution of P(real) by true class")
    ax.grid(alpha=0.3)
    _add_legend(ax, loc="upper center", headroom=True)
    return _save(fig, path)


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
    y, p = _check_scores(y_true, p_real)
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    mean_p, frac, err_low, err_high = [], [], [], []
    for _, _, mask, _ in _bins(p, edges):
        count = int(mask.sum())
        if count == 0:
            continue
        f = float(y[mask].mean())
        low, high = _wilson_interval(f, count)
        mean_p.append(float(p[mask].mean()))
        frac.append(f)
        # max(0, ...): at f = 0 or 1 rounding can put the bound a hair past f.
        err_low.append(max(0.0, f - low))
        err_high.append(max(0.0, high - f))
    brier = float(np.mean((p - y) ** 2))
    fig = _figure(6.0, 6.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    top.errorbar(
        mean_p,
        frac,
        yerr=[err_low, err_high],
        marker="o",
        color="tab:blue",
        capsize=3,
        label=f"classifier ({n_bins} bins of P(real))",
    )
    top.set(xlim=(0, 1), ylim=(-0.02, 1.02))
    top.set_ylabel("fraction of candidates that are real")
    top.set_title(f"Reliability diagram (n={len(y)}, Brier score {brier:.4f})")
    top.grid(alpha=0.3)
    _add_legend(top, loc="upper left")
    bottom.hist(p, bins=edges, color="tab:blue", alpha=0.5, edgecolor="tab:blue")
    bottom.set_yscale("log")
    bottom.set_xlabel("P(real)")
    bottom.set_ylabel("candidates per bin")
    bottom.grid(alpha=0.3)
    return _save(fig, path)


# ------------------------------------------------------------------------- cutouts


def _zscale_norm(plane):
    finite = plane[np.isfinite(plane)]
    if finite.size == 0:
        vmin, vmax = 0.0, 1.0
    else:
        vmin, vmax = (float(v) for v in ZScaleInterval().get_limits(finite))
        if not vmax > vmin:
            # A flat stamp: any range around its value shows it as mid-grey.
            half = max(abs(vmin) * 0.1, 1.0)
            vmin, vmax = vmin - half, vmax + half
    # clip=True would fill masked (NaN) pixels; out-of-range ones get the colormap's
    # end colours anyway.
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=LinearStretch(), clip=False)


def gallery_titles(p_real, mags=None, ids=None):
    """Titles for :func:`plot_gallery`: P(real), then the magnitude on a second line.

    Parameters
    ----------
    p_real : array-like of shape (n,)
        Probability of real of each cutout.
    mags : array-like of shape (n,), optional
        Magnitudes; NaN shows as ``mag ?``.
    ids : sequence of shape (n,), optional
        Candidate IDs, written on a first line.

    Returns
    -------
    list of str
    """
    p = _as_1d(p_real, "p_real")
    mags = None if mags is None else _as_1d(mags, "mags", len(p))
    if ids is not None and len(ids) != len(p):
        raise ValueError(f"ids must have one value per cutout ({len(p)}), got {len(ids)}")
    titles = []
    for i, value in enumerate(p):
        text = f"P(real)={value:.2f}"
        if mags is not None:
            text += f"\nmag {mags[i]:.1f}" if math.isfinite(mags[i]) else "\nmag ?"
        if ids is not None:
            text = f"{ids[i]}\n{text}"
        titles.append(text)
    return titles


def check_gallery_inputs(images, titles=None, channel_names=None, name="images"):
    """Check stamps drawn in a gallery and their labels; return them as (n, H, W, C).

    Parameters
    ----------
    images : array-like of shape (n, H, W, C) or (n, H, W)
    titles : sequence of str, optional
        One per stamp.
    channel_names : sequence of str, optional
        One per channel.
    name : str, default "images"
        The argument's name, for error messages.

    Returns
    -------
    ndarray of shape (n, H, W, C), float64
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4:
        raise ValueError(
            f"{name} must have shape (n, H, W, C) or (n, H, W), got shape {images.shape}"
        )
    n, n_channels = images.shape[0], images.shape[3]
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have one entry per cutout ({n}), got {len(titles)}")
    if channel_names is not None and len(channel_names) != n_channels:
        raise ValueError(
            f"channel_names must have one entry per channel ({n_channels}), "
            f"got {len(channel_names)}"
        )
    return images


def plot_gallery(images, path, *, titles=None, channel_names=None, ncols=None, title=None):
    """Draw a grid of cutouts, each channel side by side.

    Each channel of each cutout is scaled on its own with the zscale algorithm
    (:class:`~astropy.visualization.ZScaleInterval`) on its finite pixels, in grey
    levels; NaN and infinite pixels are shown in magenta, and the figure says so.

    Parameters
    ----------
    images : array-like of shape (n, H, W, C) or (n, H, W)
        The cutouts; C channels (1 or 3 typically: science, reference, difference).
    path : str or path-like
        Output file.
    titles : sequence of str, optional
        One title per cutout, e.g. from :func:`gallery_titles`.
    channel_names : sequence of str, optional
        One name per channel, shown above each panel (e.g. ``("SCI", "REF", "DIFF")``).
    ncols : int, optional
        Cutouts per row; by default as many as fit in ten panels (10 for one channel,
        3 for three).
    title : str, optional
        Figure title; by default the number of cutouts.

    Returns
    -------
    pathlib.Path or None
        The file written, or None (and no file) when ``images`` holds no cutout.

    Notes
    -----
    Every cutout gets its own panels, so keep galleries to about a hundred cutouts;
    draw a random selection of larger sets.
    """
    images = check_gallery_inputs(images, titles, channel_names)
    n, _, _, n_channels = images.shape
    if n == 0:
        return None
    if ncols is None:
        ncols = max(1, min(n, 10 // n_channels))
    elif int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = int(min(ncols, n))
    nrows = math.ceil(n / ncols)
    panel = 1.3
    title_lines = 0 if titles is None else max(str(t).count("\n") + 1 for t in titles)
    cell_height = panel + 0.17 * title_lines + (0.2 if channel_names is not None else 0)
    has_nan = not np.isfinite(images).all()
    fig = _figure(
        max(ncols * n_channels * panel + 0.3, 4.0),
        nrows * cell_height + 0.5 + (0.3 if has_nan else 0),
    )
    cmap = colormaps["gray"].with_extremes(bad=_NAN_COLOUR)
    cells = fig.subfigures(nrows, ncols, squeeze=False).ravel()
    for k, cell in enumerate(cells[:n]):
        axes = cell.subplots(1, n_channels, squeeze=False)[0]
        for j, ax in enumerate(axes):
            plane = images[k, :, :, j]
            ax.imshow(
                np.ma.masked_invalid(plane),
                cmap=cmap,
                norm=_zscale_norm(plane),
                origin="lower",
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if channel_names is not None:
                ax.set_title(str(channel_names[j]), fontsize=7, pad=2)
        if titles is not None:
            cell.suptitle(str(titles[k]), fontsize=7.5)
    fig.suptitle(title or f"{n} cutout{'s' if n > 1 else ''} (zscale, linear)", fontsize=11)
    if has_nan:
        fig.supxlabel(f"{_NAN_COLOUR_NAME}: NaN or infinite pixels", fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------- injected sources


def _check_limits(limits, name, low=-math.inf, high=math.inf):
    limits = np.atleast_1d(np.asarray(limits, dtype=np.float64))
    if (
        limits.ndim != 1
        or len(limits) == 0
        or not np.isfinite(limits).all()
        or not (np.diff(limits) > 0).all()
        or limits[0] <= low
        or limits[-1] >= high
    ):
        bounds = f" strictly between {low:g} and {high:g}" if math.isfinite(low) else ""
        bounds = f" above {low:g}" if math.isfinite(low) and not math.isfinite(high) else bounds
        raise ValueError(
            f"{name} must be increasing finite numbers{bounds}, got {limits.tolist()!r}"
        )
    return limits


def _check_not_empty(n, what):
    if n == 0:
        raise ValueError(f"there is no {what} to plot")


def plot_probability_by_magnitude(p_real_sim, mag_sim, path, maglim=(12, 18, 21), threshold=0.5):
    """Histograms of P(real) of the simulated sources, one per magnitude bin.

    Shows how the classifier's confidence in injected (hence real) sources falls
    towards faint magnitudes. Bins are cut at the ``maglim`` magnitudes: below the
    first, between consecutive ones and above the last; empty bins are left out.

    Parameters
    ----------
    p_real_sim : array-like of shape (n,)
        P(real) of the simulated sources.
    mag_sim : array-like of shape (n,)
        Their injected magnitudes; NaN (unknown) are left out and counted.
    path : str or path-like
        Output file.
    maglim : sequence of float, default (12, 18, 21)
        Magnitudes cutting the bins, increasing.
    threshold : float, default 0.5
        Decision threshold: the legend gives the fraction of each bin called real.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    p = _as_probabilities(p_real_sim, "p_real_sim")
    mags = _as_1d(mag_sim, "mag_sim", len(p))
    _check_not_empty(len(p), "simulated source")
    threshold = _check_threshold(threshold)
    edges = np.concatenate([[-np.inf], _check_limits(maglim, "maglim"), [np.inf]])
    decimals = _decimals(edges)
    bins = [b for b in _bins(mags, edges) if b[2].any()]
    fig = _figure(7.2, 5.6)
    ax = fig.add_subplot()
    for colour, (low, high, mask, _) in zip(_ordered_colours(len(bins)), bins, strict=True):
        called = float(np.mean(p[mask] >= threshold))
        label = (
            f"{_range_label(low, high, 'mag', decimals)} "
            f"(n={int(mask.sum())}; {called:.0%} called real)"
        )
        ax.hist(p[mask], bins=_P_BINS, histtype="step", linewidth=1.8, color=colour, label=label)
    ax.axvline(threshold, color=_MARK, linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(real)")
    ax.set_ylabel(f"simulated sources per bin (bin width {_P_BINS[1]:.3f})")
    ax.set_title("P(real) of simulated sources by injected magnitude")
    ax.grid(alpha=0.3)
    _add_legend(ax, _missing_note(mags, "magnitude"), below=True)
    return _save(fig, path)


def plot_probability_sim_vs_nonsim(p_all, is_sim, path, threshold=0.5):
    """Compare P(real) of the simulated sources with that of the other candidates.

    Left: candidates per bin of P(real) (log scale) for all candidates, the simulated
    sources and the other candidates (detections in the images: mostly bogus, plus
    genuine variable sources). Right: the same as fractions of each sample, to
    compare their shapes whatever their sizes.

    Parameters
    ----------
    p_all : array-like of shape (n,)
        P(real) of every scored candidate.
    is_sim : array-like of bool, shape (n,)
        True for the simulated sources (see
        :func:`~otrain.diagnostics.match_simulated`).
    path : str or path-like
        Output file.
    threshold : float, default 0.5
        Decision threshold, marked; the legend gives the fraction called real.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    p = _as_probabilities(p_all, "p_all")
    is_sim = np.asarray(is_sim)
    if is_sim.shape != p.shape or is_sim.dtype != bool:
        raise ValueError(
            f"is_sim must be a boolean array of shape {p.shape}, "
            f"got {is_sim.dtype} of shape {is_sim.shape}"
        )
    _check_not_empty(len(p), "candidate")
    threshold = _check_threshold(threshold)
    samples = [
        ("all candidates", p, "grey", dict(histtype="stepfilled", alpha=0.35)),
        ("simulated", p[is_sim], _SIM, dict(histtype="step", linewidth=1.8)),
        ("not simulated", p[~is_sim], _NONSIM, dict(histtype="step", linewidth=1.8)),
    ]
    fig = _figure(11.0, 5.0)
    left, right = fig.subplots(1, 2, sharex=True)
    for name, values, colour, style in samples:
        if len(values) == 0:
            continue
        called = float(np.mean(values >= threshold))
        label = f"{name} (n={len(values)}; {called:.0%} called real)"
        left.hist(values, bins=_P_BINS, color=colour, label=label, **style)
        weights = np.full(len(values), 1.0 / len(values))
        right.hist(values, bins=_P_BINS, weights=weights, color=colour, label=label, **style)
    for ax in (left, right):
        ax.axvline(threshold, color=_MARK, linestyle="--", label=f"threshold {threshold:.2f}")
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel("P(real)")
        ax.grid(alpha=0.3)
    left.set_ylabel(f"candidates per bin (bin width {_P_BINS[1]:.3f})")
    left.set_title("Counts")
    right.set_ylabel("fraction of the sample per bin")
    right.set_title("Fractions of each sample")
    _add_legend(left, below=True, ncols=4)
    fig.suptitle("P(real) of simulated and other candidates")
    return _save(fig, path)


def _probability_classes(problim):
    edges = np.concatenate([[0.0], _check_limits(problim, "problim", 0.0, 1.0), [1.0]])
    labels = []
    for i in range(len(edges) - 1):
        if i == 0:
            labels.append(f"P(real) < {edges[1]:.2f}")
        elif i == len(edges) - 2:
            labels.append(f"P(real) ≥ {edges[i]:.2f}")
        else:
            labels.append(f"{edges[i]:.2f} ≤ P(real) < {edges[i + 1]:.2f}")
    return edges, labels


def plot_fraction_per_probability_bin(
    p_real_sim, mag_sim, path, problim=(0.1, 0.5, 0.7), *, mag_edges=None
):
    """Fraction of the simulated sources in each range of P(real), per magnitude bin.

    One stacked bar per magnitude bin, the most confident range (highest P(real)) at
    the bottom, so that its height reads directly as the recovery rate of injected
    sources at that magnitude; the number of sources is written above each bar.

    Parameters
    ----------
    p_real_sim : array-like of shape (n,)
        P(real) of the simulated sources.
    mag_sim : array-like of shape (n,)
        Their injected magnitudes; NaN (unknown) are left out and counted.
    path : str or path-like
        Output file.
    problim : sequence of float, default (0.1, 0.5, 0.7)
        Probabilities cutting the ranges of P(real), increasing, strictly between
        0 and 1.
    mag_edges : array-like, optional
        Magnitude bin edges; by default whole-magnitude bins
        (``magnitude_bins(mag_sim, width=1.0)``). Empty bins are left out.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    p = _as_probabilities(p_real_sim, "p_real_sim")
    mags = _as_1d(mag_sim, "mag_sim", len(p))
    _check_not_empty(len(p), "simulated source")
    prob_edges, prob_labels = _probability_classes(problim)
    if mag_edges is None:
        mag_edges = magnitude_bins(mags, width=1.0)
    else:
        mag_edges = magnitude_bins(mags, mag_edges)
    if len(mag_edges) == 0:
        raise ValueError("mag_sim holds no finite magnitude; there is nothing to bin")
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    colours = colormaps["RdYlGn"](np.linspace(0.05, 0.95, len(prob_labels)))
    # Column k: the fractions of magnitude bin k in each P(real) range.
    centres, widths, counts, fractions = [], [], [], []
    for low, high, mask, _ in _bins(mags, mag_edges):
        count = int(mask.sum())
        if count == 0:
            continue
        in_range = [m for _, _, m, _ in _bins(p[mask], prob_edges)]
        centres.append((low + high) / 2)
        widths.append(0.85 * (high - low))
        counts.append(count)
        fractions.append([m.mean() for m in in_range])
    fractions = np.array(fractions).T
    bottom = np.zeros(len(centres))
    handles = []
    for i in reversed(range(len(prob_labels))):
        bars = ax.bar(
            centres,
            fractions[i],
            width=widths,
            bottom=bottom,
            color=colours[i],
            edgecolor="white",
            linewidth=0.5,
            label=prob_labels[i],
        )
        handles.append(bars)
        bottom += fractions[i]
    for x, count in zip(centres, counts, strict=True):
        ax.text(x, 1.01, f"{count}", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_xlim(mag_edges[0], mag_edges[-1])
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("injected magnitude [mag]")
    ax.set_ylabel("fraction of simulated sources")
    ax.grid(axis="y", alpha=0.3)
    # Legend top to bottom as the stack: lowest P(real) (top of the bars) first.
    notes = [_note("numbers: sources per bin")]
    notes += [_note(t) for t in _missing_note(mags, "magnitude")]
    fig.legend(
        handles=handles[::-1] + notes,
        loc="outside right center",
        fontsize=8,
        title="P(real) range",
        title_fontsize=8,
    )
    fig.suptitle("P(real) of simulated sources per magnitude bin")
    return _save(fig, path)


def plot_fwhm_ratio(
    fwhm, fwhmpsf, p_real, path, problim=0.5, ratio_bounds=(0.5, 4.2), *, title=None
):
    """Distributions of FWHM / FWHM_PSF, split by range of P(real).

    Point sources have a ratio near 1; much smaller values point to cosmic rays or hot
    pixels, much larger ones to extended residuals of a bad subtraction. The ratio
    bounds that a selection would keep are marked, and the legend gives the fraction
    of each range inside them. The ratio axis is logarithmic.

    Parameters
    ----------
    fwhm : array-like of shape (n,)
        FWHM of each candidate, in pixels.
    fwhmpsf : array-like of shape (n,)
        FWHM of the image's PSF, in pixels. Candidates with an unknown or
        non-positive FWHM or FWHM_PSF are left out and counted.
    p_real : array-like of shape (n,)
        Probability of real.
    path : str or path-like
        Output file.
    problim : float or sequence of float, default 0.5
        Probabilities cutting the ranges of P(real).
    ratio_bounds : (float, float), default (0.5, 4.2)
        Lower and upper bounds of FWHM / FWHM_PSF, marked.
    title : str, optional
        Figure title (default: a generic one); name the sample shown.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    p = _as_probabilities(p_real, "p_real")
    fwhm = _as_1d(fwhm, "fwhm", len(p))
    fwhmpsf = _as_1d(fwhmpsf, "fwhmpsf", len(p))
    if len(np.atleast_1d(ratio_bounds)) != 2:
        raise ValueError(f"ratio_bounds must be two numbers (lower, upper), got {ratio_bounds!r}")
    lower, upper = _check_limits(ratio_bounds, "ratio_bounds", 0.0)
    prob_edges, prob_labels = _probability_classes(problim)
    known = np.isfinite(fwhm) & np.isfinite(fwhmpsf) & (fwhm > 0) & (fwhmpsf > 0)
    if not known.any():
        raise ValueError("no candidate has a known, positive FWHM and FWHM_PSF; nothing to plot")
    ratio = np.full(len(p), np.nan)
    ratio[known] = fwhm[known] / fwhmpsf[known]
    low = min(np.nanmin(ratio), lower) / 1.2
    high = max(np.nanmax(ratio), upper) * 1.2
    bins = np.geomspace(low, high, 50)
    colours = colormaps["RdYlGn"](np.linspace(0.05, 0.95, len(prob_labels)))
    fig = _figure(7.6, 5.8)
    ax = fig.add_subplot()
    for colour, label, (_, _, mask, _) in zip(
        colours, prob_labels, _bins(p, prob_edges), strict=True
    ):
        values = ratio[mask & known]
        if len(values) == 0:
            continue
        inside = float(np.mean((values >= lower) & (values <= upper)))
        ax.hist(
            values,
            bins=bins,
            histtype="step",
            linewidth=1.8,
            color=colour,
            label=f"{label} (n={len(values)}; {inside:.0%} within the bounds)",
        )
    ax.axvspan(lower, upper, color="grey", alpha=0.08)
    ax.axvline(lower, color=_MARK, linestyle="--")
    ax.axvline(upper, color=_MARK, linestyle="--", label=f"ratio bounds {lower:g} – {upper:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Plain numbers (0.2, 0.5, 1, 2, 5) read better than overlapping 3x10^-1 labels.
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(low, high)
    ax.set_xlabel("FWHM / FWHM_PSF (both in pixels)")
    ax.set_ylabel("candidates per bin (log-spaced bins)")
    ax.set_title(title or "Candidate FWHM relative to the PSF, by P(real)")
    ax.grid(alpha=0.3)
    missing = int(np.count_nonzero(~known))
    notes = [f"unknown FWHM or FWHM_PSF: {missing} left out"] if missing else []
    _add_legend(ax, notes, below=True)
    return _save(fig, path)


# ------------------------------------------------------------ training-set size


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
    return _save(fig, path)


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
    return _save(fig, path)
