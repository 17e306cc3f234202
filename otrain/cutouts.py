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

import functools
import math
import os
import re
import warnings
from concurrent.futures import BrokenExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyWarning

from ._validation import as_float, check_channels, check_cutout_size
from .alerts import ALERT_COLUMNS, is_alert_file
from .alerts import _read_reference as _read_alert
from .exceptions import CutoutError

__all__ = [
    "DEFAULT_CHANNELS",
    "KEYWORD_COLUMNS",
    "read_cutout",
    "load_cutouts",
    "keywords_table",
    "CutoutLoader",  # noqa: F822 - served by __getattr__, below
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


def _lookup(headers, names):
    for header in headers:
        for name in names:
            if name in header:
                return header[name]
    return None


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
            row[column] = as_float(value, column)
        elif kind == "bool":
            row[column] = _as_bool(value)
        else:
            row[column] = "" if value is None else str(value).strip()
    if not row["candid"]:
        row["candid"] = Path(path).stem
    row["warning"] = ""
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


def read_cutout(path, channels=DEFAULT_CHANNELS, cutout_size=-1):
    """Read one cutout FITS file.

    Parameters
    ----------
    path : str or path-like
        A single-HDU FITS file (image in the primary HDU) or a multi-extension file
        whose image HDUs are named by ``EXTNAME``; or an alert packet: an ``.avro`` or
        ``.parquet`` file of one alert, or ``file#id`` for one alert of a file of
        several (see :mod:`otrain.alerts`; its stamps are the channels SCI, REF, DIFF).
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
    channels = check_channels(channels)
    check_cutout_size(cutout_size)
    return _read(path, channels, cutout_size)


def _read(path, channels, cutout_size):
    path = str(path)
    if is_alert_file(path):
        # An alert packet (file or file#id): see otrain.alerts.
        return _read_alert(path, channels, cutout_size)
    fast = _read_plain(path, channels)
    if fast is not None:
        planes, headers = fast
        return _stack(planes, channels, cutout_size, path), _parse_keywords(headers, path)
    return _read_astropy(path, channels, cutout_size)


def _read_astropy(path, channels, cutout_size):
    """Read a file with ``fits.open``: any FITS file, and every error message.

    Files that astropy reads with a warning (zero padding or bytes after the last
    HDU, a last block not padded to 2,880 bytes, a BLANK card on a floating-point
    image, a non-standard card) are read as ``astropy.io.fits.getdata`` reads them;
    the warnings are returned in the keywords (``warning``), for the caller to count,
    never printed. Files whose data is cut short fail.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, whatever astropy does
    except FileNotFoundError as err:
        raise CutoutError(f"{path}: no such file; check the path", path) from err
    except OSError as err:
        raise CutoutError(f"{path}: cannot be opened ({err.strerror}); check it", path) from err
    with handle, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(handle, memmap=False, lazy_load_hdus=False) as hdul:
                images = _pick_images(hdul, channels, path)
                headers = [hdul[0].header] + [hdu.header for hdu, _ in images]
                planes = [np.asarray(data, dtype=np.float32) for _, data in images]
                keywords = _parse_keywords(headers, path)
        except CutoutError:
            raise
        except (OSError, ValueError, TypeError, IndexError, KeyError) as err:
            repeated = _repeated_in_file(path)
            if repeated:
                raise CutoutError(
                    f"{path}: not a readable FITS file ({repeated[0]}, and astropy cannot "
                    f"read it: {_short(err)}); write each layout card once",
                    path,
                ) from err
            # astropy warns that a file is cut short, then fails on the missing bytes:
            # the warning is the reason worth reading.
            truncated = [_short(w.message) for w in caught if "truncated" in str(w.message)]
            raise CutoutError(
                f"{path}: not a readable FITS file ({(truncated or [_short(err)])[0]}); "
                "remove it or write it again",
                path,
            ) from err
    notes = [_short(w.message) for w in caught if issubclass(w.category, AstropyWarning)]
    # astropy reads a repeated layout card without a word (its choice of card decides
    # the pixels): say so too.
    notes = [*_repeated_in_file(path), *notes]
    keywords["warning"] = "; ".join(dict.fromkeys(notes))
    return _stack(planes, channels, cutout_size, path), keywords


def _repeated_in_file(path):
    """Notes on layout cards written twice, read from the raw cards.

    astropy drops scaling cards from a header once it has applied them, so the raw
    cards are the ones to count.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(_BLOCK * 40)
    except OSError:
        return []
    notes, seen = [], {}
    for position in range(0, len(data) - _CARD + 1, _CARD):
        key = data[position : position + 8].rstrip()
        if key == b"XTENSION":
            seen = {}
        if key in _LAYOUT_KEYS and key not in (b"SIMPLE", b"XTENSION"):
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 2:
                notes.append(f"{key.decode()} appears twice in a header")
    return notes


def _stack(planes, channels, cutout_size, path):
    shapes = {plane.shape for plane in planes}
    if len(shapes) != 1:
        raise CutoutError(
            f"{path}: the channels {', '.join(channels)} have different sizes "
            f"({', '.join('x'.join(map(str, s)) for s in sorted(shapes))}); "
            "write stamps of one size per file",
            path,
        )
    image = np.stack(planes, axis=-1) if len(planes) > 1 else planes[0][..., np.newaxis]
    return _centre_crop(image, cutout_size, path)


# The fast path. fits.open builds an HDU object per extension and parses every card
# of every header: about 0.5 ms for a one-image cutout, 1 ms for a SCI/REF/DIFF one,
# most of the time otrain-convert and otrain-infer spend reading. Cutouts are small
# plain files, so the fast path reads a file in one call, walks its headers card by
# card keeping only the cards it needs, has astropy parse their values (cached: most
# cards, BITPIX = -32 or EDGE = 'False', repeat from file to file) and takes the pixels
# straight from the bytes. Whatever it does not fully understand (compressed, scaled
# or blank-flagged images, random groups, long-string cards, data cubes, truncated or
# padded files, non-FITS files) it leaves to fits.open, which also words every error.

_BLOCK = 2880
_CARD = 80
_END = b"END     "
_DTYPES = {
    8: np.dtype("u1"),
    16: np.dtype(">i2"),
    32: np.dtype(">i4"),
    64: np.dtype(">i8"),
    -32: np.dtype(">f4"),
    -64: np.dtype(">f8"),
}
# Cards that describe the layout, or that make the fast path give up.
_LAYOUT = (
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT",
    "EXTNAME", "BSCALE", "BZERO", "BLANK", "GROUPS", "ZIMAGE", "CONTINUE",
)  # fmt: skip
_LAYOUT_KEYS = frozenset(name.encode("ascii") for name in _LAYOUT)
_NEEDED = frozenset(
    name.encode("ascii")
    for name in (*_LAYOUT, *(name for names, _, _ in _KEYWORDS.values() for name in names))
)


# A card value in one of the plain fixed forms nearly every cutout writes: an integer,
# a real, a quoted string holding no quote, or T/F, then an optional comment. These
# give what astropy gives (tests/test_cutouts.py checks it card by card) at a tenth of
# the cost; every other card is parsed by astropy.
_PLAIN_VALUE = re.compile(
    r"= +(?:"
    r"(?P<int>[-+]?\d+)"
    r"|(?P<real>[-+]?(?:\d+\.\d*|\.\d+)(?:E[-+]?\d+)?|[-+]?\d+E[-+]?\d+)"
    r"|'(?P<str>[^']*)'"
    r"|(?P<bool>[TF])"
    r") *(?:/.*)?"
)


@functools.lru_cache(maxsize=16384)
def _card_value(card):
    text = card.decode("ascii")
    match = _PLAIN_VALUE.fullmatch(text, 8)
    if match is None:
        return fits.Card.fromstring(text).value
    kind = match.lastgroup
    value = match[kind]
    if kind == "int":
        return int(value)
    if kind == "real":
        return float(value)
    if kind == "str":
        return value.rstrip()
    return value == "T"


class _Cards(dict):
    """The cards of one header kept by the fast path: keyword -> card, parsed on access.

    Only the first card of a keyword is kept, which is the one ``header[keyword]``
    gives.
    """

    def __getitem__(self, keyword):
        return _card_value(dict.__getitem__(self, keyword))

    def get(self, keyword, default=None):
        return self[keyword] if keyword in self else default


def _read_plain(path, channels):
    """Pixels and headers of a plain FITS file, or None to leave it to fits.open."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    if not data.startswith(b"SIMPLE  ="):
        return None
    with warnings.catch_warnings():
        # A card astropy warns about is an unusual file: fits.open's business.
        warnings.simplefilter("error")
        try:
            return _decode_plain(data, channels)
        except (Warning, ValueError, TypeError, KeyError, IndexError, fits.VerifyError):
            return None


def _decode_plain(data, channels):
    size = len(data)
    offset = 0
    primary = None
    images = []
    while offset < size:
        cards = _Cards()
        position = offset
        while True:
            key = data[position : position + 8]
            if len(key) < 8:
                return None  # no END card: truncated
            if key == _END:
                break
            key = key.rstrip().upper()
            if key == b"HIERARCH":
                # ESO's long keywords (gmadet writes "HIERARCH mag_calib"): astropy
                # names them, and header["MAG_CALIB"] finds them.
                card = data[position : position + _CARD].decode("ascii")
                key = fits.Card.fromstring(card).keyword.upper().encode("ascii")
            if key in _NEEDED:
                name = key.decode("ascii")
                if name in cards and key in _LAYOUT_KEYS:
                    # A layout card written twice: which one counts is astropy's call.
                    return None
                cards.setdefault(name, data[position : position + _CARD])
            position += _CARD
        start = offset + -(-(position + _CARD - offset) // _BLOCK) * _BLOCK
        if primary is None:
            if cards.get("SIMPLE") is not True:
                return None
            primary = cards
        elif not isinstance(cards.get("XTENSION"), str):
            return None
        if "CONTINUE" in cards or "ZIMAGE" in cards or "GROUPS" in cards:
            return None
        bitpix, naxis = cards.get("BITPIX"), cards.get("NAXIS")
        if bitpix not in _DTYPES or type(naxis) is not int or not 0 <= naxis <= 2:
            return None
        dims = [cards.get(f"NAXIS{axis}") for axis in range(1, naxis + 1)]
        if any(type(n) is not int or n < 0 for n in dims):
            return None
        pcount, gcount = cards.get("PCOUNT", 0), cards.get("GCOUNT", 1)
        if type(pcount) is not int or type(gcount) is not int:
            return None
        nbytes = abs(bitpix) // 8 * gcount * (pcount + math.prod(dims)) if naxis else 0
        end = start + -(-nbytes // _BLOCK) * _BLOCK
        if end > size:
            return None  # truncated
        is_image = cards is primary or cards.get("XTENSION").strip() == "IMAGE"
        if is_image and naxis == 2 and min(dims) > 0:
            if cards.get("BSCALE", 1) != 1 or cards.get("BZERO", 0) != 0 or "BLANK" in cards:
                return None
            images.append((cards, start, dims, _DTYPES[bitpix]))
        offset = end
        if offset < size and not data.startswith(b"XTENSION", offset):
            return None  # trailing bytes that are not an extension
    chosen = _choose_plain(images, channels)
    if chosen is None:
        return None
    planes = [
        np.frombuffer(data, dtype, count=width * height, offset=start)
        .reshape(height, width)
        .astype(np.float32)
        for _, start, (width, height), dtype in chosen
    ]
    return planes, [primary, *(cards for cards, *_ in chosen)]


def _choose_plain(images, channels):
    """The images of the channels asked, as :func:`_pick_images` chooses them."""
    by_name = {}
    for image in images:
        by_name.setdefault(str(image[0].get("EXTNAME", "")).strip().upper(), image)
    if all(name in by_name for name in channels):
        return [by_name[name] for name in channels]
    if len(images) == 1 and len(channels) == 1:
        return images
    return None


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


def image_names(path):
    """The EXTNAMEs of the 2-D images a cutout file holds, in file order.

    Unnamed images give ``""``; a file that cannot be read gives ``[]`` (reading it
    for real says why).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                return [
                    str(hdu.header.get("EXTNAME", "")).strip().upper()
                    for hdu in hdul
                    if hdu.is_image and hdu.header.get("NAXIS", 0) >= 2
                ]
    except (OSError, ValueError, TypeError, IndexError, KeyError):
        return []


def keywords_table(rows):
    """Build the keyword :class:`~astropy.table.Table` from :func:`read_cutout` dicts.

    Parameters
    ----------
    rows : list of dict
        Keyword dicts, one per file, as returned by :func:`read_cutout`.

    Returns
    -------
    astropy.table.Table
        One row per file, columns :data:`KEYWORD_COLUMNS`, with units; then, where
        some rows come from alert packets, the columns of
        :data:`otrain.alerts.ALERT_COLUMNS` (object id, the survey's scores).
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
    if any("objectId" in row for row in rows):
        # Alerts (otrain.alerts) carry the object id and the survey's own scores.
        for column, kind in ALERT_COLUMNS.items():
            missing = "" if kind == "str" else math.nan
            values = [row.get(column, missing) for row in rows]
            table[column] = np.array(values, dtype=str if kind == "str" else np.float64)
    # What astropy warned about while reading the file ('' when nothing): not a FITS
    # keyword, so not in KEYWORD_COLUMNS; callers count these files.
    notes = [row.get("warning", "") for row in rows]
    table["warning"] = np.array(notes, dtype=str) if notes else np.array([], dtype=str)
    return table


def _read_into(out, paths, channels, cutout_size, on_error):
    """Read files into the rows of ``out``; returns (ok, keyword rows, skipped)."""
    shape = out.shape[1:]
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
    return ok, rows, skipped


def _read_into_file(path, start, stop, shape, paths, channels, cutout_size, on_error):
    """Worker of the reader processes: read ``paths`` into rows ``start:stop`` of the
    array that :func:`_shared_file` made at ``path``; returns (ok, keyword rows, skipped)."""
    out = np.memmap(
        path,
        dtype=np.float32,
        mode="r+",
        offset=start * math.prod(shape) * 4,
        shape=(stop - start, *shape),
    )
    # The mapping closes when `out` goes, at the return: nothing else holds it.
    return _read_into(out, paths, channels, cutout_size, on_error)


def _shared_file(shape):
    """A float32 array in a new file that reader processes can open: (array, path).

    The file goes to /dev/shm (memory), else to the temporary folder, with its room
    reserved first (``posix_fallocate``): a full /dev/shm (64 MB in a default Docker
    container) is then a clean fall-back, not a SIGBUS while a reader writes. The
    caller unlinks the file once the readers are done; the array stays valid.
    Returns (None, None) where no folder has the room.
    """
    import mmap
    import tempfile

    nbytes = max(math.prod(shape) * 4, 1)
    for folder in ("/dev/shm", tempfile.gettempdir()):
        if not os.path.isdir(folder):
            continue
        _remove_stale(folder)
        try:
            fd, path = tempfile.mkstemp(prefix=f"{_SHARED_PREFIX}{os.getpid()}-", dir=folder)
        except OSError:
            continue
        try:
            os.posix_fallocate(fd, 0, nbytes)
            buffer = mmap.mmap(fd, nbytes)
        except OSError:
            os.unlink(path)
            continue
        finally:
            os.close(fd)
        count = math.prod(shape)
        return np.frombuffer(buffer, dtype=np.float32, count=count).reshape(shape), path
    return None, None


_SHARED_PREFIX = "otrain-cube-"


@functools.cache
def _remove_stale(folder):
    """Remove the shared files left by otrain processes that were killed (once a folder
    per process): a file lives only while a chunk is read, but a SIGKILL then leaves it."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(_SHARED_PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(_SHARED_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def _reader_pool(n_workers):
    """joblib's reusable loky processes: started once, kept between calls (and runs)."""
    from joblib.externals.loky import get_reusable_executor

    return get_reusable_executor(max_workers=n_workers)


# Futures of the reader processes' start (see _start_readers).
_STARTING = []


def _start_readers(n_jobs):
    """Start reader processes now, in the background, for the reads that follow.

    Once they have started (imports done), :func:`load_cutouts` hands them files from
    64 files a worker, instead of the tens of thousands that a process started for
    one call must get to pay for its start. For a process that runs TensorFlow and
    reads many chunks, such as :func:`otrain.inference.score_files`. Returns the
    number of reader processes (1: none started).
    """
    n_workers = _effective_jobs(n_jobs, 1 << 62, 1)
    if n_workers > 1:
        pool = _reader_pool(n_workers)
        _STARTING[:] = [pool.submit(_started) for _ in range(n_workers)]
    return n_workers


def _started():
    return os.getpid()


def _readers_ready():
    """Whether reader processes started by _start_readers are up."""
    return bool(_STARTING) and all(f.done() and f.exception() is None for f in _STARTING)


def _read_in_processes(out, path, paths, channels, cutout_size, on_error, n_workers):
    """Read with reader processes writing into the shared file of ``out``, in order."""
    shape = out.shape[1:]
    size = math.ceil(len(paths) / n_workers)
    pool = _reader_pool(n_workers)
    futures = [
        pool.submit(
            _read_into_file,
            path,
            i,
            min(i + size, len(paths)),
            shape,
            paths[i : i + size],
            channels,
            cutout_size,
            on_error,
        )
        for i in range(0, len(paths), size)
    ]
    try:
        # In order: the error raised is that of the first bad file.
        parts = [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()
    return _joined(parts)


def _joined(parts):
    """The (ok, keyword rows, skipped) of consecutive parts read by _read_into, as one."""
    ok = np.concatenate([part[0] for part in parts])
    rows = [row for part in parts for row in part[1]]
    skipped = [item for part in parts for item in part[2]]
    return ok, rows, skipped


# What the forked readers inherit from the process that forks them (see _read_forked).
_FORK_STATE = None


def _read_range(bounds):
    start, stop = bounds
    out, paths, channels, cutout_size, on_error = _FORK_STATE
    return _read_into(out[start:stop], paths[start:stop], channels, cutout_size, on_error)


def _read_forked(out, paths, channels, cutout_size, on_error, n_workers):
    """Read with forked processes writing straight into ``out`` (shared memory).

    Forked readers start in milliseconds with everything already imported, and
    write their rows in place: the cube is never copied or pickled.
    """
    import multiprocessing

    global _FORK_STATE
    size = math.ceil(len(paths) / (n_workers * 4))
    bounds = [(i, min(i + size, len(paths))) for i in range(0, len(paths), size)]
    _FORK_STATE = (out, paths, channels, cutout_size, on_error)
    try:
        with multiprocessing.get_context("fork").Pool(n_workers) as pool:
            # imap yields in order: the error raised is that of the first bad file.
            parts = list(pool.imap(_read_range, bounds))
    finally:
        _FORK_STATE = None
    return _joined(parts)


def _can_fork():
    """Whether forking this process is safe: Linux, one thread, no TensorFlow.

    A fork copies only the calling thread; a forked TensorFlow runtime (or any
    other threaded library) can deadlock in the child.
    """
    import sys
    import threading

    return (
        sys.platform == "linux"
        and threading.active_count() == 1
        and "tensorflow" not in sys.modules
    )


def _shared_array(shape):
    """A float32 array in anonymous shared memory, visible to forked children."""
    import mmap

    count = math.prod(shape)
    buffer = mmap.mmap(-1, max(count * 4, 1))
    return np.frombuffer(buffer, dtype=np.float32, count=count).reshape(shape)


def _compact(out, ok):
    """Move the rows kept (``ok``) to the front of ``out``, in place, in order."""
    kept = np.flatnonzero(ok)
    # Runs of consecutive kept rows move as blocks: few copies, no second array.
    breaks = np.flatnonzero(np.diff(kept) != 1) + 1
    filled = 0
    for run in np.split(kept, breaks):
        if len(run) and run[0] != filled:
            out[filled : filled + len(run)] = out[run[0] : run[-1] + 1]
        filled += len(run)
    return out[:filled]


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
        Worker processes for reading (joblib convention: None = 1, -1 = all cores),
        used from a thousand files per worker. Workers are forked (Linux, when
        TensorFlow is not loaded and no other thread runs) and write straight into
        the output; otherwise they are joblib's loky processes writing into shared
        memory, worth starting only from tens of thousands of files, and used from
        64 files a worker once running (:func:`otrain.inference.score_files` starts
        them for its chunks).
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
    channels = check_channels(channels)
    check_cutout_size(cutout_size)
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
    # The fast path reads ~10,000 plain cutouts a second: a forked reader (started in
    # milliseconds) pays off from about a thousand files, a loky one (a new
    # interpreter importing astropy, a second or so) from tens of thousands.
    forking = _can_fork()
    if forking:
        per_worker = 1000
    elif _readers_ready():
        per_worker = 64  # reader processes already running: only the hand-over to pay
    else:
        per_worker = 20000
    n_workers = _effective_jobs(n_jobs, len(todo), per_worker)
    if n_workers > 1 and forking:
        out = _shared_array((len(todo), *shape))
        ok, rows, more = _read_forked(out, todo, channels, cutout_size, on_error, n_workers)
    elif n_workers > 1 and (shared := _shared_file((len(todo), *shape)))[0] is not None:
        # TensorFlow (or another thread) runs here, so this process must not fork:
        # reader processes (started once, see _reader_pool) write into a shared file.
        out, path = shared
        try:
            ok, rows, more = _read_in_processes(
                out, path, todo, channels, cutout_size, on_error, n_workers
            )
        except BrokenExecutor as err:
            # A reader process died (killed, out of memory): this process reads the
            # files, and the readers are no longer counted as started.
            warnings.warn(
                f"a reader process stopped ({_short(err)}); reading in this process",
                RuntimeWarning,
                stacklevel=2,
            )
            _STARTING.clear()
            ok, rows, more = _read_into(out, todo, channels, cutout_size, on_error)
        finally:
            os.unlink(path)
    else:
        out = np.empty((len(todo), *shape), dtype=np.float32)
        ok, rows, more = _read_into(out, todo, channels, cutout_size, on_error)
    skipped.extend(more)
    cube = out if ok.all() else _compact(out, ok)
    return cube, keywords_table(rows), skipped


def _effective_jobs(n_jobs, n_files, files_per_worker):
    """Workers worth starting for ``n_files``: each must get ``files_per_worker``."""
    if n_jobs in (None, 1):
        return 1
    cpus = os.cpu_count() or 1
    wanted = cpus + 1 + n_jobs if n_jobs < 0 else n_jobs
    return max(1, min(wanted, cpus, n_files // files_per_worker))


def __getattr__(name):
    # CutoutLoader lives in otrain.loader (it needs scikit-learn, which
    # otrain-convert does not import). Pickles made by otrain 0.1.0 name it
    # otrain.cutouts.CutoutLoader: that name is served on first use.
    if name == "CutoutLoader":
        from .loader import CutoutLoader

        globals()[name] = CutoutLoader
        return CutoutLoader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
