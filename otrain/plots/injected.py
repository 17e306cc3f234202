"""Figures of ``otrain-checkinfer``: how the scores of injected (simulated) sources
behave with magnitude, against the other candidates, per probability bin, and their
FWHM ratios.
"""

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import NullFormatter, ScalarFormatter

from .._validation import check_increasing, check_threshold
from ..diagnostics import (
    magnitude_bins,
)
from . import _common
from ._common import (
    _MARK,
    _NONSIM,
    _P_BINS,
    _SIM,
    _add_legend,
    _as_1d,
    _as_probabilities,
    _bins,
    _check_not_empty,
    _count_axis,
    _decimals,
    _figure,
    _missing_note,
    _note,
    _ordered_colours,
    _range_label,
)

__all__ = [
    "plot_probability_by_magnitude",
    "plot_probability_sim_vs_nonsim",
    "plot_fraction_per_probability_bin",
    "plot_fwhm_ratio",
]


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
    threshold = check_threshold(threshold)
    edges = np.concatenate([[-np.inf], check_increasing(maglim, "maglim"), [np.inf]])
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
    _count_axis(ax.yaxis)
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(real)")
    ax.set_ylabel(f"simulated sources per bin (bin width {_P_BINS[1]:.3f})")
    ax.set_title("P(real) of simulated sources by injected magnitude")
    ax.grid(alpha=0.3)
    _add_legend(ax, _missing_note(mags, "magnitude"), below=True)
    return _common._save(fig, path)


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
    threshold = check_threshold(threshold)
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
    _count_axis(left.yaxis)
    left.set_ylabel(f"candidates per bin (bin width {_P_BINS[1]:.3f})")
    left.set_title("Counts")
    right.set_ylabel("fraction of the sample per bin")
    right.set_title("Fractions of each sample")
    _add_legend(left, below=True, ncols=4)
    fig.suptitle("P(real) of simulated and other candidates")
    return _common._save(fig, path)


def _probability_classes(problim):
    edges = np.concatenate([[0.0], check_increasing(problim, "problim", low=0.0, high=1.0), [1.0]])
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
    return _common._save(fig, path)


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
    lower, upper = check_increasing(ratio_bounds, "ratio_bounds", low=0.0)
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
    return _common._save(fig, path)
