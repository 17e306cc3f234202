"""Scoring candidates: cutout files in, a table of probabilities out.

The result table keeps O'TRAIN's columns (``filename, RA, Dec, originalFile, Xpos,
Ypos, mag, magerr, FWHM, FWHMPSF, cand_ID, label0, label1``; ``label0`` = P(false),
``label1`` = P(true)), then ``label``: 1 where ``label1 >= threshold`` (the model's
stored threshold, 0.5 if it stores none), else 0; and, with Monte-Carlo dropout
(``mc_samples``), ``label1`` is the mean P(true) over the dropout draws and
``label1_std`` its standard deviation. The table is written twice beside the candidates: as
``infer_results.dat`` (ASCII with a commented header, as O'TRAIN wrote it) and as
``infer_results.ecsv`` (with units, the model's name and otrain's version in its
metadata). Each file is read once, for pixels and keywords together, in chunks, so
memory stays bounded however many candidates there are.
"""

from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from ._atomic import atomic_output
from ._version import __version__
from .cutouts import load_cutouts

__all__ = ["RESULT_COLUMNS", "score_files", "write_results", "RESULT_NAME"]

#: Base name of the result files written beside the candidates.
RESULT_NAME = "infer_results"

# O'TRAIN's result column -> keyword column of otrain.cutouts.
_FROM_KEYWORDS = {
    "filename": "path",
    "RA": "ra",
    "Dec": "dec",
    "originalFile": "file",
    "Xpos": "xpos",
    "Ypos": "ypos",
    "mag": "mag",
    "magerr": "magerr",
    "FWHM": "fwhm",
    "FWHMPSF": "fwhmpsf",
    "cand_ID": "candid",
}

#: Columns of the result table: O'TRAIN's, in its order, then the 0/1 call.
RESULT_COLUMNS = (*_FROM_KEYWORDS, "label0", "label1", "label")

# Files read and scored per chunk: ~4096 x 64 x 64 x 3 float32 = 200 MB at most.
_CHUNK = 4096


def score_files(
    classifier,
    paths,
    *,
    n_jobs=None,
    chunk_size=_CHUNK,
    progress=None,
    threshold=None,
    mc_samples=None,
    random_state=None,
    first_chunk=0,
):
    """Score cutout files with a fitted classifier.

    Files are read with the classifier's channels (``channels_``) and centre-cropped
    to its stamp size when larger. Cutouts flagged ``EDGE='True'`` and unreadable
    files are skipped and reported. Probabilities are calibrated when the classifier
    is (``calibration_``).

    Parameters
    ----------
    classifier : CutoutClassifier
        A fitted or loaded classifier (see :func:`otrain.model_files.load_model`).
    paths : iterable of str or path-like
        Cutout files; consumed lazily, chunk by chunk.
    n_jobs : int or None, default None
        Worker processes for reading.
    chunk_size : int, default 4096
        Files read and scored at a time.
    progress : callable, optional
        Called as ``progress(n_done)`` after each chunk.
    threshold : float, optional
        Candidates with ``label1 >= threshold`` get ``label`` 1. Default: the
        classifier's ``threshold_`` (stored in its model file), else 0.5.
    mc_samples : int, optional
        Monte-Carlo dropout draws (see ``CutoutClassifier.predict_proba_mc``):
        ``label0``/``label1`` are then the means and ``label1_std`` is added.
    random_state : int, optional
        Seed of the Monte-Carlo dropout draws: chunk ``k`` of the files (counted from
        ``first_chunk``) is drawn with the seed ``[random_state, k]``.
    first_chunk : int, default 0
        Number of the first chunk, for those seeds: scoring chunk ``k`` of a long list
        alone with ``first_chunk=k`` gives the draws of the whole run (this is how
        :func:`otrain.cluster.score_files_distributed` scores chunks on workers).

    Returns
    -------
    table : astropy.table.Table
        One row per scored cutout, :data:`RESULT_COLUMNS` (and ``label1_std``); the
        threshold used is in ``table.meta["threshold"]``.
    summary : dict
        ``n_files``, ``n_scored``, ``n_edge``, ``skipped`` (list of (path, reason))
        and ``threshold``.
    """
    from .diagnostics import _check_threshold
    from .thresholds import DEFAULT_THRESHOLD

    if threshold is None:
        threshold = getattr(classifier, "threshold_", None)
    threshold = _check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
    if mc_samples is not None and int(mc_samples) < 2:
        raise ValueError(f"mc_samples must be at least 2, got {mc_samples}")
    scoring = {
        "threshold": threshold,
        "mc_samples": mc_samples,
        "random_state": random_state,
        "chunk": int(first_chunk),
    }
    input_shape = tuple(int(s) for s in classifier.model_.input_shape[1:])
    channels = getattr(classifier, "channels_", None) or ("DIFF",)
    tables, skipped = [], []
    n_files = n_edge = 0
    chunk = []
    for path in _iterate(paths):
        chunk.append(path)
        if len(chunk) == chunk_size:
            n_edge += _score_chunk(
                classifier, chunk, channels, input_shape, n_jobs, tables, skipped, scoring
            )
            n_files += len(chunk)
            chunk = []
            if progress is not None:
                progress(n_files)
    if chunk:
        n_edge += _score_chunk(
            classifier, chunk, channels, input_shape, n_jobs, tables, skipped, scoring
        )
        n_files += len(chunk)
        if progress is not None:
            progress(n_files)
    table = (
        vstack(tables, metadata_conflicts="silent")
        if tables
        else _empty_results(mc=mc_samples is not None)
    )
    table.meta["threshold"] = threshold
    summary = {
        "n_files": n_files,
        "n_scored": len(table),
        "n_edge": n_edge,
        "skipped": skipped,
        "threshold": threshold,
    }
    return table, summary


def _iterate(paths):
    for path in paths:
        yield str(path)


def _score_chunk(classifier, chunk, channels, input_shape, n_jobs, tables, skipped, scoring):
    cube, keywords, bad = load_cutouts(
        chunk,
        channels=channels,
        cutout_size=input_shape[0] if input_shape[0] == input_shape[1] else -1,
        n_jobs=n_jobs,
        on_error="skip",
        shape=input_shape,
    )
    skipped.extend(bad)
    edge = np.asarray(keywords["edge"], dtype=bool)
    if edge.any():
        cube, keywords = cube[~edge], keywords[~edge]
    if len(cube):
        std = None
        if scoring["mc_samples"] is None:
            proba = classifier.predict_proba(cube)
        else:
            # Each chunk gets its own, reproducible seed: one seed for all chunks
            # would repeat the same dropout masks chunk after chunk. The seed follows
            # the chunk's position in the file list, so chunks scored apart (on Dask
            # workers) draw what one run draws.
            seed = scoring["random_state"]
            seed = None if seed is None else [int(seed), scoring["chunk"]]
            proba, std = classifier.predict_proba_mc(
                cube, scoring["mc_samples"], random_state=seed
            )
        tables.append(_result_table(keywords, proba, scoring["threshold"], std))
    scoring["chunk"] += 1
    return int(edge.sum())


def _result_table(keywords, proba, threshold, std=None):
    table = Table()
    for column, source in _FROM_KEYWORDS.items():
        table[column] = keywords[source]
    table["label0"] = proba[:, 0].astype(np.float64)
    table["label1"] = proba[:, 1].astype(np.float64)
    table["label"] = (table["label1"] >= threshold).astype(np.int64)
    if std is not None:
        table["label1_std"] = std[:, 1].astype(np.float64)
    return table


def _empty_results(mc=False):
    table = Table()
    for column in (*RESULT_COLUMNS, *(("label1_std",) if mc else ())):
        if column in ("filename", "originalFile", "cand_ID"):
            kind = str
        elif column == "label":
            kind = np.int64
        else:
            kind = np.float64
        table[column] = np.array([], dtype=kind)
    return table


def write_results(table, folder, *, model_name, extra_meta=None):
    """Write the result table as ``infer_results.dat`` and ``infer_results.ecsv``.

    Parameters
    ----------
    table : astropy.table.Table
        From :func:`score_files`.
    folder : str or path-like
        Where to write (O'TRAIN wrote beside the candidates).
    model_name : str
        Stored in the ECSV metadata.
    extra_meta : dict, optional
        More metadata for the ECSV file (threshold, channels...).

    Returns
    -------
    tuple of pathlib.Path
        The ``.dat`` and ``.ecsv`` files, each written atomically.
    """
    folder = Path(folder)
    table = table.copy(copy_data=False)
    table.meta.update(
        {"model": str(model_name), "otrain_version": __version__, **(extra_meta or {})}
    )
    dat = folder / f"{RESULT_NAME}.dat"
    ecsv = folder / f"{RESULT_NAME}.ecsv"
    with atomic_output(dat) as tmp:
        plain = Table(table, copy=False)
        plain.meta.clear()
        plain.write(tmp, format="ascii.commented_header", overwrite=True)
    with atomic_output(ecsv) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return dat, ecsv
