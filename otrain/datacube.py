"""Datacubes: labelled cutouts of a training set in one ``.npz`` file.

A training set is a folder with a ``true/`` sub-folder (cutouts of real transients,
label 1) and a ``false/`` sub-folder (bogus detections, label 0). Its datacube holds
the stamps, the labels and the keywords, under the keys O'TRAIN used (``cube``,
``labels``, ``mags``, ``errmags``, ``filters``, ``fwhms``, ``candids``) plus the file
paths, the channel names and the other O'TRAIN keywords, so cubes written by the
original O'TRAIN load too, and otrain's cubes keep everything a diagnostic needs.
"""

import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from ._atomic import atomic_output
from ._validation import as_float, check_channels
from ._version import __version__
from .alerts import ALERT_SUFFIXES, iter_references
from .cutouts import DEFAULT_CHANNELS, KEYWORD_COLUMNS, load_cutouts
from .exceptions import DatacubeError

__all__ = [
    "Datacube",
    "build_datacube",
    "load_datacube",
    "find_cutouts",
    "iter_cutouts",
    "CUTOUT_SUFFIXES",
]

#: File name endings taken as cutouts when a folder is scanned (any case): every FITS
#: file :func:`otrain.cutouts.read_cutout` reads (plain, gzip, bzip2, tile-compressed
#: ``.fz``) and the alert files of :mod:`otrain.alerts`. The one list for every scan.
CUTOUT_SUFFIXES = (
    ".fits", ".fit", ".fts",
    ".fits.gz", ".fit.gz", ".fts.gz",
    ".fits.fz", ".fit.fz", ".fz",
    ".fits.bz2",
    *ALERT_SUFFIXES,
)  # fmt: skip

# Keyword column -> key in the .npz file. The first six are O'TRAIN's names.
_NPZ_KEYS = {
    "mag": "mags",
    "magerr": "errmags",
    "filter": "filters",
    "fwhm": "fwhms",
    "candid": "candids",
    "path": "paths",
    "ra": "ras",
    "dec": "decs",
    "fwhmpsf": "fwhmpsfs",
    "file": "files",
    "xpos": "xposs",
    "ypos": "yposs",
    "edge": "edges",
}


@dataclass
class Datacube:
    """Labelled cutouts and their keywords.

    Parameters
    ----------
    cube : ndarray of shape (n, H, W, C), float32
        The stamps (non-finite pixels kept, see :mod:`otrain.cutouts`).
    labels : ndarray of shape (n,), int
        1 for real (``true/``), 0 for bogus (``false/``).
    keywords : astropy.table.Table
        One row per stamp, columns :data:`otrain.cutouts.KEYWORD_COLUMNS`.
    channels : tuple of str
        Names of the channels of ``cube`` (EXTNAMEs), in order.
    summary : dict
        What building the cube found and left out (counts, skipped files).
    channels_named : bool, default True
        False for a cube whose file names no channels (O'TRAIN's own cubes):
        ``channels`` are then placeholders (``("DIFF",)`` for one channel, ``C0,
        C1...`` for more), taken in order by :meth:`select_channels`.
    """

    cube: np.ndarray
    labels: np.ndarray
    keywords: Table
    channels: tuple = DEFAULT_CHANNELS
    summary: dict = field(default_factory=dict)
    channels_named: bool = True

    def __len__(self):
        return len(self.labels)

    @property
    def n_true(self):
        """Number of real (label 1) cutouts."""
        return int(np.sum(self.labels == 1))

    @property
    def n_false(self):
        """Number of bogus (label 0) cutouts."""
        return int(np.sum(self.labels == 0))

    def select_channels(self, channels, *, name="the datacube"):
        """The cube with ``channels`` only, in that order (what a model takes).

        Parameters
        ----------
        channels : sequence of str
            Channel names, e.g. a model's ``channels_``.
        name : str, default "the datacube"
            How to name the cube in an error (its file, say).

        Returns
        -------
        Datacube
            ``self`` when the channels are already those; a cube whose file names no
            channels is taken as it is when it has as many channels.

        Raises
        ------
        DatacubeError
            If a channel is missing (the error names those the cube holds).
        """
        channels = check_channels(channels)
        if tuple(self.channels) == channels:
            return self
        if not self.channels_named:
            if self.cube.shape[-1] == len(channels):
                return Datacube(self.cube, self.labels, self.keywords, channels, self.summary)
            missing = channels
        else:
            missing = [c for c in channels if c not in self.channels]
        if missing:
            raise DatacubeError(
                f"{name} holds the channels {','.join(self.channels)} "
                f"({self.cube.shape[-1]} images) but channels {','.join(channels)} are "
                f"needed; build it with channels={','.join(channels)}"
            )
        index = [self.channels.index(c) for c in channels]
        return Datacube(self.cube[..., index], self.labels, self.keywords, channels, self.summary)

    def save(self, path):
        """Write the datacube to ``path`` (``.npz``), atomically.

        Parameters
        ----------
        path : str or path-like
            Output file; ``.npz`` is appended when missing.

        Returns
        -------
        pathlib.Path
            The file written.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        arrays = {
            "cube": self.cube,
            "labels": np.asarray(self.labels, dtype=np.int64),
            "otrain_version": np.array(__version__),
        }
        if self.channels_named:
            arrays["channels"] = np.array(self.channels, dtype=str)
        for column, key in _NPZ_KEYS.items():
            if column in self.keywords.colnames:
                arrays[key] = np.asarray(self.keywords[column])
        with atomic_output(path) as tmp:
            # Uncompressed: stamps of noise compress badly, and reading stays fast.
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
        return path

    def summary_text(self):
        """A short human-readable account of the cube and of what was left out."""
        s = self.summary
        shape = "x".join(map(str, self.cube.shape[1:]))
        lines = [
            f"{len(self)} cutouts of {shape} ({', '.join(self.channels)}): "
            f"{self.n_true} true, {self.n_false} false"
        ]
        if s:
            lines.append(
                f"found {s['found_true']} true and {s['found_false']} false files; "
                f"left out {s['edge_true'] + s['edge_false']} EDGE cutouts, "
                f"{len(s['skipped'])} unreadable files, "
                f"{s['undersampled_true'] + s['undersampled_false']} by frac_true"
            )
            for path, reason in s["skipped"][:10]:
                lines.append(
                    f"  skipped {reason}" if path in reason else f"  skipped {path}: {reason}"
                )
            if len(s["skipped"]) > 10:
                lines.append(f"  ... and {len(s['skipped']) - 10} more skipped files")
        return "\n".join(lines)

    def undersampling_text(self, name="frac_true"):
        """One line saying what ``frac_true`` threw away, or ``None`` if nothing.

        Undersampling to a fraction of real cutouts drops labelled stamps silently
        otherwise: copying ``--frac_true 0.5`` from an example can cost a third of the
        real ones.

        Parameters
        ----------
        name : str, default "frac_true"
            How to name the setting: ``"--frac_true"`` for the command's flag.

        Returns
        -------
        str or None
            E.g. ``"--frac_true 0.5: kept 23 of 40 real stamps, dropped 17 to reach 50%
            real (leave --frac_true out to keep every stamp)"``.
        """
        s = self.summary or {}
        frac_true = s.get("frac_true")
        dropped = {"real": s.get("undersampled_true", 0), "bogus": s.get("undersampled_false", 0)}
        if frac_true is None or not any(dropped.values()):
            return None
        kept = {"real": self.n_true, "bogus": self.n_false}
        setting = f"{name} {frac_true:g}" if name.startswith("-") else f"{name}={frac_true:g}"
        parts = [
            f"kept {kept[c]} of {kept[c] + dropped[c]} {c} stamps, dropped {dropped[c]}"
            for c in ("real", "bogus")
            if dropped[c]
        ]
        return (
            f"{setting}: {'; '.join(parts)} to reach {100 * frac_true:.3g}% real (leave "
            f"{name} out to keep every stamp)"
        )


def find_cutouts(folder):
    """List the cutout files of ``folder`` (sorted), by :data:`CUTOUT_SUFFIXES`.

    Alert files holding several alerts give one reference per alert (see
    :func:`iter_cutouts`); the list is sorted as text.

    Parameters
    ----------
    folder : str or path-like

    Returns
    -------
    list of str
        The files of :func:`iter_cutouts`, sorted.

    Raises
    ------
    DatacubeError
        If the folder does not exist.
    """
    return sorted(iter_cutouts(folder))


def iter_cutouts(folder):
    """Yield the cutout files of ``folder`` one by one, in the folder's own order.

    The folder is read lazily (``os.scandir``), so a folder of millions of files is
    never listed in memory at once: give the iterator to
    :func:`otrain.cluster.score_files_distributed` or
    :func:`otrain.inference.score_files` to stream it. The order is the file
    system's, not sorted (:func:`find_cutouts` sorts).

    Parameters
    ----------
    folder : str or path-like

    Returns
    -------
    iterator of str
        ``folder / name`` for each file whose name ends with one of
        :data:`CUTOUT_SUFFIXES` (any case); sub-folders are not entered. An alert
        file holding several alerts gives one reference ``folder / name#id`` per
        alert (see :mod:`otrain.alerts`).

    Raises
    ------
    DatacubeError
        If the folder does not exist (raised at once, not on the first file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatacubeError(f"{folder}: no such folder; check the path")
    return _scan(folder)


def _scan(folder):
    # Paths as str(folder / name) writes them, without a Path for each file (a folder
    # of alert packets is scanned at tens of microseconds a file).
    base = "" if str(folder) == "." else str(folder)
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name.lower()
            if name.endswith(CUTOUT_SUFFIXES) and entry.is_file():
                path = os.path.join(base, entry.name)
                if name.endswith(ALERT_SUFFIXES):
                    yield from iter_references(path)
                else:
                    yield path


def _undersample(n_true, n_false, frac_true):
    """Largest (n_true_kept, n_false_kept) with n_true_kept / total = frac_true."""
    if frac_true is None:
        return n_true, n_false
    # The small epsilon keeps 40 * 0.2 / 0.8 from flooring to 9.
    keep_true = min(n_true, math.floor(n_false * frac_true / (1 - frac_true) + 1e-9))
    keep_false = min(n_false, math.floor(n_true * (1 - frac_true) / frac_true + 1e-9))
    return keep_true, keep_false


def build_datacube(
    folder,
    *,
    channels=DEFAULT_CHANNELS,
    cutout_size=-1,
    frac_true=None,
    random_state=0,
    n_jobs=None,
    on_error="skip_unreadable",
):
    """Build a datacube from a folder holding ``true/`` and ``false/`` sub-folders.

    Parameters
    ----------
    folder : str or path-like
        Folder with ``true/`` (real, label 1) and ``false/`` (bogus, label 0).
    channels : tuple of str, default ("DIFF",)
        EXTNAMEs of the images to stack (see :func:`otrain.cutouts.read_cutout`).
    cutout_size : int, default -1
        Side of the centred square crop; -1 keeps the native size.
    frac_true : float in (0, 1), optional
        Fraction of true cutouts in the cube, as in O'TRAIN: the larger class is
        randomly undersampled (seeded by ``random_state``) to reach it. By default
        every cutout is kept.
    random_state : int, default 0
        Seed of the undersampling.
    n_jobs : int or None, default None
        Worker processes for reading (None = 1, -1 = all cores).
    on_error : {"skip_unreadable", "raise"}, default "skip_unreadable"
        Unreadable files are left out and listed in ``summary["skipped"]`` (a few
        corrupt files among thousands should not stop a conversion); cutouts of
        another size always raise (set ``cutout_size``). ``"raise"`` stops at the
        first unreadable file.

    Returns
    -------
    Datacube
        With ``summary`` counting what was found and left out: EDGE='True' cutouts,
        unreadable files and the undersampled ones.

    Raises
    ------
    DatacubeError
        If a sub-folder is missing or holds no usable cutout.
    """
    if frac_true is not None and not 0 < frac_true < 1:
        raise ValueError(f"frac_true must lie strictly between 0 and 1, got {frac_true}")
    channels = check_channels(channels)
    folder = Path(folder)
    lists = {}
    for name in ("true", "false"):
        sub = folder / name
        if not sub.is_dir():
            raise DatacubeError(
                f"{sub}: no such folder; put real cutouts in {folder / 'true'} and bogus "
                f"ones in {folder / 'false'}"
            )
        lists[name] = find_cutouts(sub)
        if not lists[name]:
            raise DatacubeError(
                f"{sub}: holds no cutout (*{', *'.join(CUTOUT_SUFFIXES)}); a training set "
                "needs cutouts in both true/ and false/"
            )
    paths = lists["true"] + lists["false"]
    is_true = np.zeros(len(paths), dtype=bool)
    is_true[: len(lists["true"])] = True

    cube, keywords, skipped = load_cutouts(
        paths, channels=channels, cutout_size=cutout_size, n_jobs=n_jobs, on_error=on_error
    )
    if skipped:
        bad = {p for p, _ in skipped}
        is_true = np.array([t for p, t in zip(paths, is_true, strict=True) if p not in bad])
    edge = np.asarray(keywords["edge"], dtype=bool)
    usable_true = np.flatnonzero(is_true & ~edge)
    usable_false = np.flatnonzero(~is_true & ~edge)
    for name, usable in (("true", usable_true), ("false", usable_false)):
        if len(usable) == 0:
            raise DatacubeError(
                f"{folder / name}: no usable cutout (all unreadable or flagged EDGE='True'); "
                "check the files"
            )
    keep_true, keep_false = _undersample(len(usable_true), len(usable_false), frac_true)
    rng = np.random.default_rng(random_state)
    chosen_true = np.sort(rng.choice(usable_true, keep_true, replace=False))
    chosen_false = np.sort(rng.choice(usable_false, keep_false, replace=False))
    keep = np.concatenate([chosen_true, chosen_false])
    # Compact in place: rows only move towards the front, so no second cube is made.
    for target, source in enumerate(keep):
        if target != source:
            cube[target] = cube[source]
    cube = cube[: len(keep)]
    labels = np.concatenate([np.ones(keep_true, np.int64), np.zeros(keep_false, np.int64)])
    summary = {
        "found_true": len(lists["true"]),
        "found_false": len(lists["false"]),
        "edge_true": int(np.sum(is_true & edge)),
        "edge_false": int(np.sum(~is_true & edge)),
        "skipped": skipped,
        "undersampled_true": len(usable_true) - keep_true,
        "undersampled_false": len(usable_false) - keep_false,
        "frac_true": frac_true,
    }
    return Datacube(cube, labels, keywords[keep], channels, summary)


def load_datacube(path):
    """Read a datacube written by otrain or by the original O'TRAIN.

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file.

    Returns
    -------
    Datacube
        Missing keywords (O'TRAIN cubes lack paths, RA...) are NaN or ''.

    Raises
    ------
    DatacubeError
        If the file is missing, not an ``.npz`` archive, or not a datacube.
    """
    path = Path(path)
    if not path.is_file():
        raise DatacubeError(f"{path}: no such datacube; build one with otrain-convert")
    try:
        # Our own handle: np.load leaves its file open when the archive is corrupt.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:
            if "cube" not in npz.files or "labels" not in npz.files:
                raise DatacubeError(
                    f"{path}: not a datacube (it has no 'cube' and 'labels' arrays); "
                    "build one with otrain-convert"
                )
            arrays = {key: npz[key] for key in npz.files}
    except DatacubeError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DatacubeError(
            f"{path}: not a readable datacube ({_first_line(err)}); "
            "build it again with otrain-convert"
        ) from err
    cube = arrays["cube"]
    labels = arrays["labels"]
    if labels.ndim == 2 and labels.shape[1] == 2 and len(labels) == len(cube):
        # O'TRAIN's validation cubes stored one-hot labels [P(false), P(true)].
        labels = labels.argmax(axis=1)
    if cube.ndim == 3:
        cube = cube[..., np.newaxis]
    if cube.ndim != 4 or labels.ndim != 1 or len(labels) != len(cube):
        raise DatacubeError(
            f"{path}: 'cube' of shape {cube.shape} and 'labels' of shape {labels.shape} "
            "do not describe n stamps (n, H, W, C) with n labels; "
            "build it again with otrain-convert"
        )
    try:
        labels = labels.astype(np.int64)
    except ValueError as err:
        raise DatacubeError(f"{path}: labels are not 0/1 integers; build it again") from err
    if not np.isin(labels, (0, 1)).all():
        raise DatacubeError(
            f"{path}: labels must be 0 (bogus) or 1 (real), found {sorted(set(labels.tolist()))}"
        )
    channels = tuple(arrays["channels"].tolist()) if "channels" in arrays else ()
    named = len(channels) == cube.shape[-1]
    if not named:
        # O'TRAIN's cubes name no channels: placeholders, matched by position.
        n = cube.shape[-1]
        channels = DEFAULT_CHANNELS if n == 1 else tuple(f"C{i}" for i in range(n))
    return Datacube(
        cube.astype(np.float32, copy=False),
        labels,
        _keywords(arrays, len(labels)),
        channels,
        channels_named=named,
    )


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _keywords(arrays, n):

    table = Table()
    for column in KEYWORD_COLUMNS:
        key = _NPZ_KEYS[column]
        values = arrays.get(key)
        if values is not None and len(values) != n:
            values = None
        if column in ("candid", "filter", "file", "path"):
            table[column] = np.array(
                [] if n == 0 else ([""] * n if values is None else values), dtype=str
            )
        elif column == "edge":
            table[column] = np.zeros(n, bool) if values is None else values.astype(bool)
        else:
            # O'TRAIN stored '-99.0' strings for missing numbers: read them as NaN.
            table[column] = (
                np.full(n, np.nan)
                if values is None
                else np.array([as_float(v, column) for v in values.tolist()], dtype=np.float64)
            )
    if n and "candid" in table.colnames and not any(table["candid"]):
        table["candid"] = [str(i) for i in range(n)]
    return table


def keyword_column(keywords, name, *, numeric=True):
    """A keyword column of a cube or of read cutouts, or None when it tells nothing.

    Parameters
    ----------
    keywords : astropy.table.Table or None
        A :class:`Datacube`'s ``keywords`` (or :func:`otrain.cutouts.load_cutouts`').
    name : str
        A column of :data:`otrain.cutouts.KEYWORD_COLUMNS` (``mag``, ``candid``...).
    numeric : bool, default True
        Floats (None when no value is finite) or strings (None when all are empty).

    Returns
    -------
    ndarray or None
    """
    if keywords is None or name not in keywords.colnames:
        return None
    if not numeric:
        values = np.asarray(keywords[name]).astype(str)
        return values if any(values) else None
    values = np.asarray(keywords[name], dtype=np.float64)
    return values if np.isfinite(values).any() else None
