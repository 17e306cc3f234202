"""Figures of cutouts: galleries in ZScale (NaN pixels in magenta), and stamps with their
Grad-CAM heat maps.
"""

import math

import numpy as np
from astropy.visualization import ImageNormalize, LinearStretch, ZScaleInterval
from matplotlib import colormaps

from . import _common
from ._common import (
    _NAN_COLOUR,
    _NAN_COLOUR_NAME,
    _as_1d,
    _figure,
)

__all__ = [
    "gallery_titles",
    "check_gallery_inputs",
    "plot_gallery",
    "plot_grad_cam",
]


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
    return _common._save(fig, path)


# Colour map of heat maps: dark (no evidence) to bright yellow (strongest).
_HEAT_CMAP = "inferno"
# Level of the heat map drawn as a contour on every channel.
_CONTOUR_LEVEL = 0.5
_CONTOUR_COLOUR = "#00e5ff"
# No contour when more than this fraction of the stamp is above the level.
_DIFFUSE = 0.5


def plot_grad_cam(
    stamps, heatmaps, path, *, titles=None, channel_names=None, ncols=None, title=None
):
    """Draw stamps with their Grad-CAM heat maps.

    Each stamp gets one panel per channel, scaled with zscale in grey levels as in
    :func:`otrain.plots.plot_gallery` (NaN pixels in magenta), with the heat map's
    half-maximum drawn as a cyan contour on each, and a last panel with the heat map
    itself (0 to 1, dark to bright) over the last channel.

    Parameters
    ----------
    stamps : array-like of shape (n, H, W, C) or (n, H, W)
        The stamps, raw (as given to the classifier).
    heatmaps : array-like of shape (n, H, W)
        Their heat maps in [0, 1], from :func:`grad_cam`.
    path : str or path-like
        Output file, written atomically.
    titles : sequence of str, optional
        One title per stamp (e.g. from :func:`otrain.plots.gallery_titles`).
    channel_names : sequence of str, optional
        One name per channel, shown above its panels (e.g. ``("SCI", "REF", "DIFF")``).
    ncols : int, optional
        Stamps per row; by default as many as fit in about twelve panels.
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path or None
        The file written, or None (and no file) when there is no stamp.
    """
    images = check_gallery_inputs(stamps, titles, channel_names, name="stamps")
    heat = np.asarray(heatmaps, dtype=np.float64)
    n, height, width, n_channels = images.shape
    if heat.shape != (n, height, width):
        raise ValueError(
            f"heatmaps must have shape (n, H, W) = {(n, height, width)}, one per stamp, "
            f"got shape {heat.shape}"
        )
    if n == 0:
        return None
    per_stamp = n_channels + 1
    if ncols is None:
        ncols = max(1, min(n, 12 // per_stamp))
    elif int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = int(min(ncols, n))
    nrows = math.ceil(n / ncols)
    panel = 1.3
    title_lines = 0 if titles is None else max(str(t).count("\n") + 1 for t in titles)
    cell_height = panel + 0.17 * title_lines + 0.2
    has_nan = not np.isfinite(images).all()
    fig = _figure(max(ncols * per_stamp * panel + 0.3, 5.0), nrows * cell_height + 1.0)
    grey = colormaps["gray"].with_extremes(bad=_NAN_COLOUR)
    hot = colormaps[_HEAT_CMAP]
    names = list(channel_names) if channel_names is not None else [""] * n_channels
    cells = fig.subfigures(nrows, ncols, squeeze=False).ravel()
    for k, cell in enumerate(cells[:n]):
        axes = cell.subplots(1, per_stamp, squeeze=False)[0]
        for j in range(n_channels):
            plane = images[k, :, :, j]
            _draw_channel(axes[j], plane, grey)
            _draw_contour(axes[j], heat[k])
            axes[j].set_title(str(names[j]), fontsize=7, pad=2)
        last = images[k, :, :, -1]
        _draw_channel(axes[-1], last, grey)
        axes[-1].imshow(
            heat[k],
            cmap=hot,
            vmin=0.0,
            vmax=1.0,
            alpha=0.6,
            origin="lower",
            interpolation="nearest",
        )
        axes[-1].set_title("Grad-CAM", fontsize=7, pad=2)
        if not heat[k].max() > 0:
            axes[-1].text(
                0.5,
                0.5,
                "map all zero:\nno evidence for\nthis class here",
                transform=axes[-1].transAxes,
                ha="center",
                va="center",
                fontsize=6.5,
                color="white",
            )
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        if titles is not None:
            cell.suptitle(str(titles[k]), fontsize=7.5)
    fig.suptitle(title or f"Grad-CAM heat maps of {n} stamp{'s' if n > 1 else ''}", fontsize=11)
    note = (
        f"cyan contour: heat map at {_CONTOUR_LEVEL:g} of its maximum (none for diffuse "
        "maps); last panel: heat map "
        f"(0 dark to 1 bright) over {names[-1] or 'the last channel'}; stamps in zscale"
    )
    if has_nan:
        note += f"; {_NAN_COLOUR_NAME}: NaN or infinite pixels"
    fig.supxlabel(note, fontsize=8)
    return _common._save(fig, path)


def _draw_channel(ax, plane, cmap):
    ax.imshow(
        np.ma.masked_invalid(plane),
        cmap=cmap,
        norm=_zscale_norm(plane),
        origin="lower",
        interpolation="nearest",
    )


def _draw_contour(ax, heat):
    # A diffuse map (most of the stamp above the level) would only trace the border.
    hot = np.mean(heat >= _CONTOUR_LEVEL)
    if 0 < hot <= _DIFFUSE and heat.min() < _CONTOUR_LEVEL:
        ax.contour(
            heat,
            levels=[_CONTOUR_LEVEL],
            colors=_CONTOUR_COLOUR,
            linewidths=0.8,
            origin="lower",
        )
