"""Reading cutout FITS files: pixels and O'TRAIN keywords.

A cutout (stamp) is a small image around one candidate. Two layouts are read:

* single-HDU files: the image is in the primary HDU (O'TRAIN's layout); it is taken
  as the one channel asked for, whatever its EXTNAME;
* multi-extension files: each image HDU has an ``EXTNAME`` (``SCI``, ``REF``,
  ``DIFF``...) and the channels are picked by name, in the order asked.

NaN policy
----------
Non-finite pixels (NaN, +/-inf) are legal: real stamps have them at CCD edges and on
masked pixels, and some pipelines write a huge sentinel instead (ZTF: the float32
maximum, 3.4e38). Reading keeps them as they are (a datacube is a faithful copy of the
files). The classifier handles them in one place, its normalisation layer, for
training and scoring alike: NaN, inf and values beyond +/-1e30 are left out of the
statistics and set to 0, the background level after normalisation.
"""

import math
import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning
from sklearn.base import BaseEstimator, TransformerMixin

from .exceptions import CutoutError

__all__ = [
    "DEFAULT_CHANNELS",
    "KEYWORD_COLUMNS",
    "read_cutout",
    "load_cutouts",
    "keywords_table",
    "CutoutLoader",
]

#: The channel O'TRAIN used: the difference image.
DEFAULT_CHANNELS = ("DIFF",)

# Column name -> (FITS keywords tried in order, kind, unit). Numbers missing or
# unparseable are NaN; strings missing are ''.
_KEYWORDS = {
    "candid": (("CANDID", "NAME"), "str", None),
    "ra": (("RA",), "float", "deg"),
    "dec": (("DEC",), "float", "deg"),
    "mag": (("MAG", "MAG_CALIB"), "float", "mag"),
    "magerr": (("MAGERR", "MAGERR_CALIB"), "float", "mag"),
    "filter": (("FILTER",), "str", None),
    "fwhm": (("FWHM",), "float", "pix"),
    "fwhmpsf": (("FWHMPSF",), "float", "pix"),
    "edge": (("EDGE",), "bool", None),
    "file": (("FILE",), "str", None),
    "xpos": (("XPOS",), "float", "pix"),
    "ypos": (("YPOS",), "float", "pix"),
}

#: Columns of the keyword table, in order (``path`` first).
KEYWORD_COLUMNS = ("path", *_KEYWORDS)

# Pipelines write these for "unknown" (ZTF writes FWHM = -99).
_SENTINELS = (-99.0, -999.0, -9999.0, 99.0)
# Keywords where 99 is a legal value and must not be read as a sentinel.
_NO_99_SENTINEL = {"ra", "xpos", "ypos"}


def _lookup(headers, names):
    for header in headers:
        for name in names:
            if name in header:
                return header[name]
    return None


def _as_float(value, column):
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return math.nan
    if not math.isfinite(number):
        return math.nan
    sentinels = _SENTINELS[:-1] if column in _NO_99_SENTINEL else _SENTINELS
    if number in sentinels:
        return math.nan
    return number


def _as_bool(value):
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "t", "1", "yes")
    if isinstance(value, int | float):
        return bool(value)
    return False


def _parse_keywords(headers, path):
    """O'TRAIN keywords of one file, as a dict of plain Python values."""
    row = {"path": str(path)}
    for column, (names, kind, _unit) in _KEYWORDS.items():
        value = _lookup(headers, names)
        if kind == "float":
            row[column] = _as_float(value, column)
        elif kind == "bool":
            row[column] = _as_bool(value)
        else:
            row[column] = "" if value is None else str(value).strip()
    if not row["candid"]:
        row["candid"] = Path(path).stem
    return row


def _centre_crop(image, cutout_size, path):
    if cutout_size is None or cutout_size == -1:
        return image
    height, width = image.shape[:2]
    if cutout_size > min(height, width):
        raise _size_error(
            f"{path}: the cutout is {height}x{width} pixels, smaller than the "
            f"cutout size {cutout_size} asked for; use a cutout size of at most "
            f"{min(height, width)} or -1 to keep the native size",
            path,
        )
    top = (height - cutout_size) // 2
    left = (width - cutout_size) // 2
    return image[top : top + cutout_size, left : left + cutout_size]


def _check_cutout_size(cutout_size):
    if cutout_size is None or cutout_size == -1:
        return
    if not isinstance(cutout_size, int | np.integer) or cutout_size < 1:
        raise ValueError(f"cutout_size must be a positive integer or -1, got {cutout_size!r}")


def _check_channels(channels):
    if isinstance(channels, str):
        channels = tuple(c.strip() for c in channels.split(",") if c.strip())
    channels = tuple(str(c).upper() for c in channels)
    if not channels:
        raise ValueError("channels must name at least one image, e.g. ('DIFF',)")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channels must not repeat a name, got {channels}")
    return channels


def read_cutout(path, channels=DEFAULT_CHANNELS, cutout_size=-1):
    """Read one cutout FITS file.

    Parameters
    ----------
    path : str or path-like
        A single-HDU FITS file (image in the primary HDU) or a multi-extension file
        whose image HDUs are named by ``EXTNAME``.
    channels : sequence of str or str, default ("DIFF",)
        EXTNAMEs of the images to stack, in order, e.g. ``("SCI", "REF", "DIFF")``;
        a comma-separated string is accepted. A single-HDU file gives its one image
        for a single channel, whatever the name.
    cutout_size : int, default -1
        Side of the centred square crop, or -1 for the native size.

    Returns
    -------
    image : ndarray of shape (H, W, C), float32
        The pixels, non-finite values kept (see the module's NaN policy).
    keywords : dict
        The O'TRAIN keywords (see :data:`KEYWORD_COLUMNS`): numbers are floats, NaN
        when missing; strings are '' when missing; ``edge`` is a bool; ``candid``
        falls back to ``NAME`` and then to the file name.

    Raises
    ------
    CutoutError
        If the file is not a readable FITS file, lacks a channel, or its images do not
        fit the request.

    Examples
    --------
    >>> image, keywords = read_cutout("ZTF_1786104122615015005.fits",
    ...                               channels=("SCI", "REF", "DIFF"))  # doctest: +SKIP
    >>> image.shape, keywords["mag"]  # doctest: +SKIP
    ((63, 63, 3), 18.029...)
    """
    channels = _check_channels(channels)
    _check_cutout_size(cutout_size)
    return _read(path, channels, cutout_size)


def _read(path, channels, cutout_size):
    path = str(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, whatever astropy does
    except FileNotFoundError as err:
        raise CutoutError(f"{path}: no such file; check the path", path) from err
    except OSError as err:
        raise CutoutError(f"{path}: cannot be opened ({err.strerror}); check it", path) from err
    with handle, warnings.catch_warnings():
        # astropy only warns about truncated files; here they are unreadable.
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            with fits.open(handle, memmap=False, lazy_load_hdus=False) as hdul:
                images = _pick_images(hdul, channels, path)
                headers = [hdul[0].header] + [hdu.header for hdu, _ in images]
                planes = [np.asarray(data, dtype=np.float32) for _, data in images]
                keywords = _parse_keywords(headers, path)
        except CutoutError:
            raise
        except (OSError, ValueError, TypeError, IndexError, KeyError, AstropyUserWarning) as err:
            raise CutoutError(
                f"{path}: not a readable FITS file ({_short(err)}); remove it or write it again",
                path,
            ) from err
    shapes = {plane.shape for plane in planes}
    if len(shapes) != 1:
        raise CutoutError(
            f"{path}: the channels {', '.join(channels)} have different sizes "
            f"({', '.join('x'.join(map(str, s)) for s in sorted(shapes))}); "
            "write stamps of one size per file",
            path,
        )
    image = np.stack(planes, axis=-1) if len(planes) > 1 else planes[0][..., np.newaxis]
    return _centre_crop(image, cutout_size, path), keywords


def _short(err):
    text = str(err).strip().splitlines()
    return text[0] if text and text[0] else type(err).__name__


def _pick_images(hdul, channels, path):
    """Return [(hdu, data)] for the channels asked, in order."""
    image_hdus = [
        hdu
        for hdu in hdul
        if hdu.is_image and hdu.header.get("NAXIS", 0) >= 2 and hdu.data is not None
    ]
    if not image_hdus:
        raise CutoutError(f"{path}: holds no image; write the stamp as a 2-D image HDU", path)
    by_name = {}
    for hdu in image_hdus:
        by_name.setdefault(str(hdu.header.get("EXTNAME", "")).strip().upper(), hdu)
    if all(name in by_name for name in channels):
        chosen = [by_name[name] for name in channels]
    elif len(image_hdus) == 1 and len(channels) == 1:
        # O'TRAIN's single-HDU stamps: the one image is the channel asked for.
        chosen = image_hdus
    else:
        missing = [name for name in channels if name not in by_name]
        named = sorted(n for n in by_name if n) or ["none"]
        raise CutoutError(
            f"{path}: no image HDU named {', '.join(missing)} (EXTNAMEs present: "
            f"{', '.join(named)}); choose channels among those names",
            path,
        )
    result = []
    for hdu in chosen:
        data = hdu.data
        if data.ndim > 2:
            # (1, H, W) cubes written by some pipelines: drop the degenerate axes.
            data = np.squeeze(data)
        if data.ndim != 2:
            raise CutoutError(
                f"{path}: image HDU {hdu.name} has shape {hdu.data.shape}, not a 2-D stamp; "
                "write one 2-D image per channel",
                path,
            )
        result.append((hdu, data))
    return result


def keywords_table(rows):
    """Build the keyword :class:`~astropy.table.Table` from :func:`read_cutout` dicts.

    Parameters
    ----------
    rows : list of dict
        Keyword dicts, one per file, as returned by :func:`read_cutout`.

    Returns
    -------
    astropy.table.Table
        One row per file, columns :data:`KEYWORD_COLUMNS`, with units.
    """
    table = Table()
    for column in KEYWORD_COLUMNS:
        values = [row[column] for row in rows]
        if column == "path" or _KEYWORDS[column][1] == "str":
            table[column] = np.array(values, dtype=str) if values else np.array([], dtype=str)
        elif _KEYWORDS[column][1] == "bool":
            table[column] = np.array(values, dtype=bool)
        else:
            table[column] = np.array(values, dtype=np.float64)
            table[column].unit = _KEYWORDS[column][2]
    return table


def _read_chunk(paths, channels, cutout_size, shape, on_error):
    """Read a list of files into one array; worker of :func:`load_cutouts`."""
    out = np.empty((len(paths), *shape), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    rows, skipped = [], []
    for i, path in enumerate(paths):
        try:
            image, keywords = _read(path, channels, cutout_size)
            if image.shape != shape:
                raise _size_error(_size_message(path, image.shape, shape, cutout_size), path)
        except CutoutError as err:
            if on_error == "raise" or (on_error == "skip_unreadable" and err.size_mismatch):
                raise
            skipped.append((str(path), str(err)))
            continue
        out[i] = image
        ok[i] = True
        rows.append(keywords)
    return out, ok, rows, skipped


def _size_error(message, path):
    err = CutoutError(message, path)
    err.size_mismatch = True
    return err


def _size_message(path, got, expected, cutout_size):
    got_txt = "x".join(map(str, got[:2]))
    exp_txt = "x".join(map(str, expected[:2]))
    if got[2:] != expected[2:]:
        return f"{path}: has {got[2]} channels where {expected[2]} were expected"
    if cutout_size in (None, -1):
        return (
            f"{path}: is {got_txt} pixels but the other cutouts are {exp_txt}; "
            "set a cutout size (centre crop) to use stamps of mixed sizes"
        )
    return f"{path}: is {got_txt} pixels after cropping, expected {exp_txt}"


def load_cutouts(
    paths, *, channels=DEFAULT_CHANNELS, cutout_size=-1, n_jobs=None, on_error="raise", shape=None
):
    """Read many cutout files into one array, with their keywords.

    The output array is allocated once and filled in place.

    Parameters
    ----------
    paths : sequence of str or path-like
        The files, in the order of the output rows.
    channels : sequence of str, default ("DIFF",)
        EXTNAMEs to stack (see :func:`read_cutout`).
    cutout_size : int, default -1
        Side of the centred square crop; -1 keeps the native size, which must then
        be the same for every file.
    n_jobs : int or None, default None
        Worker processes for reading (joblib convention: None = 1, -1 = all cores).
        Parallel reading pays off from a few thousand files.
    on_error : {"raise", "skip", "skip_unreadable"}, default "raise"
        What to do with a file that cannot be read or has another size: raise a
        :class:`CutoutError`, or leave it out and report it in ``skipped``;
        ``"skip_unreadable"`` skips unreadable files but raises on a size mismatch
        (a training set of mixed sizes needs a cutout size, not silent losses).
    shape : tuple of int, optional
        The (H, W, C) every cutout must have (e.g. a model's input); by default the
        shape of the first readable file.

    Returns
    -------
    cube : ndarray of shape (n, H, W, C), float32
        The cutouts read, in the order of ``paths`` (skipped files left out).
    keywords : astropy.table.Table
        Their keywords, one row per cutout of ``cube`` (see :func:`keywords_table`).
    skipped : list of (str, str)
        ``(path, reason)`` for each file left out (only with ``on_error="skip"``).
    """
    if on_error not in ("raise", "skip", "skip_unreadable"):
        raise ValueError(f"on_error must be 'raise', 'skip' or 'skip_unreadable', got {on_error!r}")
    channels = _check_channels(channels)
    _check_cutout_size(cutout_size)
    paths = [os.fspath(p) for p in paths]
    skipped = []
    start = 0
    if shape is None:
        # The first readable file fixes the shape of the cube.
        while start < len(paths):
            try:
                first, _ = _read(paths[start], channels, cutout_size)
                shape = first.shape
                break
            except CutoutError as err:
                if on_error == "raise" or (on_error == "skip_unreadable" and err.size_mismatch):
                    raise
                skipped.append((paths[start], str(err)))
                start += 1
    if shape is None:
        return np.empty((0, 0, 0, len(channels)), np.float32), keywords_table([]), skipped
    shape = tuple(shape)
    todo = paths[start:]
    n_workers = _effective_jobs(n_jobs, len(todo))
    if n_workers == 1:
        parts = [_read_chunk(todo, channels, cutout_size, shape, on_error)]
    else:
        from joblib import Parallel, delayed

        size = math.ceil(len(todo) / (n_workers * 4))
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        parts = Parallel(n_jobs=n_workers)(
            delayed(_read_chunk)(chunk, channels, cutout_size, shape, on_error) for chunk in chunks
        )
    n_ok = sum(int(part[1].sum()) for part in parts)
    cube = np.empty((n_ok, *shape), dtype=np.float32)
    rows, filled = [], 0
    for out, ok, part_rows, part_skipped in parts:
        count = int(ok.sum())
        cube[filled : filled + count] = out[ok] if count != len(ok) else out
        filled += count
        rows.extend(part_rows)
        skipped.extend(part_skipped)
    return cube, keywords_table(rows), skipped


def _effective_jobs(n_jobs, n_files):
    if n_jobs in (None, 1) or n_files < 2000:
        return 1
    cpus = os.cpu_count() or 1
    wanted = cpus + 1 + n_jobs if n_jobs < 0 else n_jobs
    return max(1, min(wanted, cpus, n_files // 1000))


class CutoutLoader(TransformerMixin, BaseEstimator):
    """Turn a list of cutout file paths into an array of stamps.

    A stateless scikit-learn transformer, meant as the first step of a pipeline fed
    with file paths: ``make_pipeline(CutoutLoader(), CutoutClassifier())``.

    Parameters
    ----------
    channels : tuple of str, default ("DIFF",)
        EXTNAMEs of the images to stack as channels, in order (see
        :func:`read_cutout`).
    cutout_size : int, default -1
        Side of the centred square crop; -1 keeps the native size.
    n_jobs : int or None, default None
        Worker processes for reading (None = 1, -1 = all cores).

    Examples
    --------
    >>> from otrain import CutoutLoader
    >>> loader = CutoutLoader(channels=("SCI", "REF", "DIFF"))
    >>> X = loader.transform(paths)  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (264, 63, 63, 3)
    """

    def __init__(self, *, channels=DEFAULT_CHANNELS, cutout_size=-1, n_jobs=None):
        self.channels = channels
        self.cutout_size = cutout_size
        self.n_jobs = n_jobs

    def fit(self, X=None, y=None):
        """Do nothing: the loader learns nothing from data.

        Parameters
        ----------
        X : ignored
        y : ignored

        Returns
        -------
        self : CutoutLoader
        """
        _check_channels(self.channels)
        _check_cutout_size(self.cutout_size)
        return self

    def transform(self, X):
        """Read the files.

        Parameters
        ----------
        X : sequence of str or path-like
            Paths of cutout files (a 1-D array or a column vector of paths).

        Returns
        -------
        ndarray of shape (n_files, H, W, C), float32
        """
        return self.load(X)[0]

    def load(self, X):
        """Read the files and their keywords.

        Parameters
        ----------
        X : sequence of str or path-like
            Paths of cutout files.

        Returns
        -------
        cube : ndarray of shape (n_files, H, W, C), float32
        keywords : astropy.table.Table
            One row per file (see :func:`keywords_table`).
        """
        cube, keywords, _ = load_cutouts(
            _as_paths(X),
            channels=self.channels,
            cutout_size=self.cutout_size,
            n_jobs=self.n_jobs,
        )
        return cube, keywords

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


def _as_paths(X):
    array = np.asarray(X, dtype=object)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"CutoutLoader expects a 1-D list of file paths, got an array of shape {array.shape}"
        )
    return [os.fspath(p) for p in array]
