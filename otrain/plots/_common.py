"""What every figure shares: colours, saving, binning, legends."""

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._atomic import atomic_output
from ..diagnostics import (
    magnitude_bins,
)
from ..exceptions import OutputError

# Private: the pieces every figure module of otrain.plots shares.
__all__ = []


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
# A curve of a bin holding fewer stamps of a class than this says little (an AUC of
# 1.000 from two stamps): such bins are greyed, without a score, and say why.
MIN_PER_CLASS = 10
_GREYED = {"color": "0.7", "linewidth": 1.0, "linestyle": ":"}


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


def _count_axis(axis):
    """Plain numbers (1, 2, 5, 10, 20...) on a logarithmic axis of counts.

    Matplotlib labels the minor ticks of a log axis spanning less than a decade as
    ``2x10^0``; counts read better as they are.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


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


def _check_not_empty(n, what):
    if n == 0:
        raise ValueError(f"there is no {what} to plot")
