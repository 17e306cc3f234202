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

import itertools
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

# Files read and scored per chunk: 1024 x 64 x 64 x 3 float32 = 50 MB; small enough
# for reading and scoring to overlap from the second chunk on.
_CHUNK = 1024


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
    precision="auto",
    first_chunk=0,
):
    """Score cutout files with a fitted classifier.

    Files are read with the classifier's channels (``channels_``) and centre-cropped
    to its stamp size when larger. Cutouts flagged ``EDGE='True'`` and unreadable
    files are skipped and reported. Probabilities are calibrated when the classifier
    is (``calibration_``). Files are read in chunks, each chunk read by a background
    thread while the network scores the one before.

    Parameters
    ----------
    classifier : CutoutClassifier
        A fitted or loaded classifier (see :func:`otrain.model_files.load_model`).
    paths : iterable of str or path-like
        Cutout files; consumed lazily, chunk by chunk.
    n_jobs : int or None, default None
        Worker processes for reading (see :func:`otrain.cutouts.load_cutouts`).
    chunk_size : int, default 1024
        Files read and scored at a time.
    progress : callable, optional
        Called as ``progress(n_done)`` after each chunk.
    threshold : float, optional
        Candidates with ``label1 >= threshold`` get ``label`` 1. Default: the
        classifier's ``threshold_`` (stored in its model file), else 0.5.
    mc_samples : int, optional
        Monte-Carlo dropout draws (see ``CutoutClassifier.predict_proba_mc``):
        ``label0``/``label1`` are then the means and ``label1_std`` is added. Always
        in float32.
    random_state : int, optional
        Seed of the Monte-Carlo dropout draws.
    precision : {"auto", "float32", "bfloat16"}, default "auto"
        Precision of the forward pass; ``"auto"`` takes bfloat16 only where the
        hardware has it and the model's stored check allows it (see
        :mod:`otrain.precision`).
    first_chunk : int, default 0
        Number of the first chunk. Monte-Carlo draws of chunk ``k`` are seeded with
        ``[random_state, k]``, so that a task scoring chunk ``k`` of a longer list on
        its own (see :func:`otrain.cluster.score_files_distributed`) draws as the
        whole run would.

    Returns
    -------
    table : astropy.table.Table
        One row per scored cutout, :data:`RESULT_COLUMNS` (and ``label1_std``); the
        threshold used is in ``table.meta["threshold"]``.
    summary : dict
        ``n_files``, ``n_scored``, ``n_edge``, ``skipped`` (list of (path, reason)),
        ``threshold``, ``precision`` (the one used) and ``precision_note`` (why).
    """
    from concurrent.futures import ThreadPoolExecutor

    from .diagnostics import _check_threshold
    from .precision import choose_precision
    from .thresholds import DEFAULT_THRESHOLD

    if threshold is None:
        threshold = getattr(classifier, "threshold_", None)
    threshold = _check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
    if mc_samples is not None and int(mc_samples) < 2:
        raise ValueError(f"mc_samples must be at least 2, got {mc_samples}")
    if mc_samples is None:
        scorer, used, note = choose_precision(classifier, precision)
    else:
        scorer, used, note = classifier, "float32", "Monte-Carlo dropout scores in float32"
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

    def read(chunk):
        return chunk, _read_chunk(chunk, channels, input_shape, n_jobs)

    # One reader thread: the next chunk is read while the network (which releases
    # the GIL) scores this one, and at most two chunks are in memory.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="otrain-reader") as reader:
        pending = None
        # A final None scores the last chunk read.
        for chunk in itertools.chain(_chunks(paths, chunk_size), [None]):
            upcoming = None if chunk is None else reader.submit(read, chunk)
            if pending is not None:
                n_files, n_edge = _score_read(
                    scorer, pending.result(), tables, skipped, scoring, n_files, n_edge
                )
                if progress is not None:
                    progress(n_files)
            pending = upcoming
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
        "precision": used,
        "precision_note": note,
    }
    return table, summary


def _chunks(paths, size):
    chunk = []
    for path in paths:
        chunk.append(str(path))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_chunk(chunk, channels, input_shape, n_jobs):
    cube, keywords, bad = load_cutouts(
        chunk,
        channels=channels,
        cutout_size=input_shape[0] if input_shape[0] == input_shape[1] else -1,
        n_jobs=n_jobs,
        on_error="skip",
        shape=input_shape,
    )
    edge = np.asarray(keywords["edge"], dtype=bool)
    if edge.any():
        cube, keywords = cube[~edge], keywords[~edge]
    return cube, keywords, bad, int(edge.sum())


def _score_read(classifier, read, tables, skipped, scoring, n_files, n_edge):
    chunk, (cube, keywords, bad, edge) = read
    skipped.extend(bad)
    if len(cube):
        std = None
        if scoring["mc_samples"] is None:
            proba = classifier.predict_proba(cube)
        else:
            # Each chunk gets its own, reproducible seed: one seed for all chunks
            # would repeat the same dropout masks chunk after chunk.
            seed = scoring["random_state"]
            seed = None if seed is None else [int(seed), scoring["chunk"]]
            proba, std = classifier.predict_proba_mc(cube, scoring["mc_samples"], random_state=seed)
        tables.append(_result_table(keywords, proba, scoring["threshold"], std))
    scoring["chunk"] += 1
    return n_files + len(chunk), n_edge + edge


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
