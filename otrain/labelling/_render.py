"""One candidate as the page shows it: ZScale PNG stamps and its keywords.

The stamps are drawn as otrain's galleries draw them (astropy's ``ZScaleInterval``,
linear stretch, grey levels, as in :func:`otrain.plots.plot_gallery`) but without
matplotlib: a stamp is a
few thousand pixels, and a small PNG encoder (a palette of 255 greys plus one colour
for non-finite pixels, zlib from the standard library) turns it into a file in well
under a millisecond, where a matplotlib figure takes tens.
"""

import base64
import math
import struct
import zlib

import numpy as np

from ..alerts import is_alert_file
from ..cutouts import read_cutout
from ..exceptions import CutoutError

__all__ = ["encode_png", "stamp_png", "read_candidate", "channel_names", "MIN_SIDE"]

#: Smallest side, in screen pixels, of a stamp on the page (nearest-pixel upscaling).
MIN_SIDE = 200

# Palette: 0-254 grey levels, 255 the colour of NaN / inf pixels (magenta, absent
# from any grey stamp, so a masked pixel is never read as a dark or bright one).
_NAN_INDEX = 255
_PALETTE = bytes(
    np.concatenate(
        [np.repeat(np.linspace(0, 255, 255).round().astype(np.uint8), 3), [255, 0, 255]]
    ).astype(np.uint8)
)


def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_png(indices, palette=_PALETTE):
    """Encode a 2-D array of palette indices as an 8-bit palette PNG.

    Parameters
    ----------
    indices : ndarray of shape (H, W), uint8
        Palette index of each pixel, first row at the top.
    palette : bytes, optional
        RGB triplets (at most 256); by default 255 greys and magenta.

    Returns
    -------
    bytes
        The PNG file.
    """
    indices = np.ascontiguousarray(indices, dtype=np.uint8)
    height, width = indices.shape
    # Each row starts with its filter byte (0: none).
    raw = np.zeros((height, width + 1), dtype=np.uint8)
    raw[:, 1:] = indices
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"PLTE", palette),
            _chunk(b"IDAT", zlib.compress(raw.tobytes(), 3)),
            _chunk(b"IEND", b""),
        ]
    )


def _limits(finite_pixels):
    """ZScale limits, widened for a flat stamp, as otrain's galleries take them."""
    from astropy.visualization import ZScaleInterval

    if finite_pixels.size == 0:
        return 0.0, 1.0
    vmin, vmax = (float(v) for v in ZScaleInterval().get_limits(finite_pixels))
    if not vmax > vmin:
        # A flat stamp: any range around its value shows it as mid-grey.
        half = max(abs(vmin) * 0.1, 1.0)
        vmin, vmax = vmin - half, vmax + half
    return vmin, vmax


def stamp_png(plane, *, min_side=MIN_SIDE):
    """Draw one channel as a PNG: ZScale grey levels, NaN in magenta, upscaled.

    Parameters
    ----------
    plane : ndarray of shape (H, W)
        The pixels, row 0 at the bottom (FITS order), non-finite values allowed.
    min_side : int, default 200
        The image is enlarged by a whole factor (nearest pixel) to at least this side.

    Returns
    -------
    png : bytes
    limits : tuple of float
        The ZScale (vmin, vmax) used.
    """
    plane = np.asarray(plane, dtype=np.float64)
    finite = np.isfinite(plane) & (np.abs(plane) < 1e30)
    vmin, vmax = _limits(plane[finite])
    scaled = (np.where(finite, plane, vmin) - vmin) / (vmax - vmin)
    indices = np.clip(np.round(scaled * 254), 0, 254).astype(np.uint8)
    indices[~finite] = _NAN_INDEX
    # FITS rows go bottom-up; the page draws top-down, as the galleries do (origin lower).
    indices = indices[::-1]
    factor = max(1, math.ceil(min_side / max(1, min(indices.shape))))
    indices = np.repeat(np.repeat(indices, factor, axis=0), factor, axis=1)
    return encode_png(indices), (vmin, vmax)


def channel_names(reference):
    """The image channels of a candidate file, in file order.

    Parameters
    ----------
    reference : str
        A cutout file (single-HDU or multi-extension), or ``path#record``.

    Returns
    -------
    tuple of str
        The ``EXTNAME`` of each image extension; ``("IMAGE",)`` for a single-HDU
        file; ``("SCI", "REF", "DIFF")`` for a record of a multi-record file.

    Raises
    ------
    CutoutError
        If the file cannot be read as FITS.
    """
    if is_alert_file(reference):
        return ("SCI", "REF", "DIFF")
    import warnings

    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    try:
        # The handle is ours, so that it is closed whatever astropy raises.
        with open(reference, "rb") as handle, warnings.catch_warnings():
            # astropy only warns about a truncated or padded file; here it is unreadable.
            warnings.simplefilter("error", AstropyUserWarning)
            with fits.open(handle, memmap=False) as hdul:
                names = [
                    hdu.name or f"HDU{i}"
                    for i, hdu in enumerate(hdul)
                    if i > 0 and hdu.is_image and hdu.header.get("NAXIS", 0) >= 2
                ]
                if not names and hdul[0].header.get("NAXIS", 0) >= 2:
                    names = ["IMAGE"]
    except (OSError, ValueError, TypeError, IndexError, KeyError, AstropyUserWarning) as err:
        raise CutoutError(
            f"{reference}: not a readable FITS file ({' '.join(str(err).split())}); it is skipped",
            reference,
        ) from err
    if not names:
        raise CutoutError(f"{reference}: holds no image; it is skipped", reference)
    return tuple(names)


def _number(value):
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def read_candidate(reference, channels=None, *, min_side=MIN_SIDE):
    """Everything the page shows of one candidate, as a JSON-ready dict.

    Parameters
    ----------
    reference : str
        The candidate (a file, or ``path#record``).
    channels : sequence of str, optional
        The channels to show; all the file's image channels by default.
    min_side : int, default 200
        Smallest side of each stamp image (see :func:`stamp_png`).

    Returns
    -------
    dict
        ``channels`` (names), ``images`` (PNG data URLs), ``shape``, ``nan_pixels``,
        and the keywords ``candid``, ``mag``, ``magerr``, ``fwhm``, ``ra``, ``dec``,
        ``filter``, ``edge``; or, for a file that cannot be read, ``error`` (one line).
    """
    try:
        names = tuple(channels) if channels else channel_names(reference)
        # A single-HDU file gives its one image whatever the name asked for.
        image, keywords = read_cutout(reference, channels=names)
    except CutoutError as err:
        return {"error": " ".join(str(err).split())}
    images = []
    for k in range(image.shape[-1]):
        png, _ = stamp_png(image[..., k], min_side=min_side)
        images.append("data:image/png;base64," + base64.b64encode(png).decode("ascii"))
    return {
        "channels": list(names),
        "images": images,
        "shape": list(image.shape[:2]),
        "nan_pixels": int(np.sum(~np.isfinite(image))),
        "candid": keywords.get("candid", ""),
        "mag": _number(keywords.get("mag")),
        "magerr": _number(keywords.get("magerr")),
        "fwhm": _number(keywords.get("fwhm")),
        "ra": _number(keywords.get("ra")),
        "dec": _number(keywords.get("dec")),
        "filter": keywords.get("filter", ""),
        "edge": bool(keywords.get("edge", False)),
    }
