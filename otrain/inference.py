"""Scoring candidates: cutout files in, a table of probabilities out.

The result table keeps O'TRAIN's columns (``filename, RA, Dec, originalFile, Xpos,
Ypos, mag, magerr, FWHM, FWHMPSF, cand_ID, label0, label1``; ``label0`` = P(bogus),
``label1`` = P(real)), then ``label``: 1 where ``label1 >= threshold`` (the model's
stored threshold, 0.5 if it stores none), else 0; and, with Monte-Carlo dropout
(``mc_samples``), ``label1`` is the mean P(real) over the dropout draws and
``label1_std`` its standard deviation.

Every candidate is accounted for. With ``every_input=True`` the table has one row per
input file, in the order given, with a ``status`` (:data:`STATUSES`: ``scored``,
``edge`` for stamps flagged ``EDGE`` and not scored, ``unreadable``, ``wrong_size``)
and a ``reason``; probabilities are empty (masked) where a file was not scored. The
table is written twice beside the candidates (:func:`write_results`):
``infer_results.dat`` (ASCII with a commented header, as O'TRAIN wrote it: its columns,
scored candidates only) and ``infer_results.ecsv`` (every input, with each column's
description and unit, and the model file, channels, normalisation, threshold and
precision in its header). Each file is read once, for pixels and keywords together,
in chunks, so memory stays bounded however many candidates there are.
"""

import itertools
import os
import re
from pathlib import Path

import numpy as np
from astropy.table import Column, MaskedColumn, Table, vstack

from ._atomic import atomic_output, printable
from ._version import __version__
from .cutouts import load_cutouts

__all__ = [
    "RESULT_COLUMNS",
    "OPTIONAL_COLUMNS",
    "COLUMN_DESCRIPTIONS",
    "STATUSES",
    "score_files",
    "write_results",
    "RESULT_NAME",
]

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

#: What became of each input (the ``status`` column of a table with every input).
STATUSES = {
    "scored": "scored by the network",
    "edge": "flagged EDGE='True' (the stamp touches the image edge); not scored "
    "(otrain-infer --score-edge scores it)",
    "unreadable": "not a readable cutout (corrupt, truncated, foreign or missing channel)",
    "wrong_size": "a stamp of another size or channel count than the model takes",
}

#: Keyword columns written to the ECSV table after the result columns, when the
#: keyword table read with the stamps has them: result column -> (keyword column,
#: description). Readers of other inputs (alerts) add theirs here.
OPTIONAL_COLUMNS = {
    "filter": ("filter", "photometric filter (FILTER keyword)"),
    "edge": ("edge", "EDGE keyword: the stamp touches the image edge and is NaN-padded"),
    "warning": ("warning", "what astropy warned about reading the file (values as it reads)"),
    # Alert packets (otrain.alerts): the object and the survey's own scores, beside P(real).
    "objectId": ("objectId", "the survey's object id (ZTF objectId, Rubin diaObjectId)"),
    "isdiffpos": ("isdiffpos", "t for a positive subtraction, f for a negative one (alert)"),
    "rb": ("rb", "ZTF's own real/bogus score rb (random forest), from the alert"),
    "drb": ("drb", "ZTF's own deep real/bogus score drb (braai), from the alert"),
    "reliability": ("reliability", "Rubin's own real/bogus score, from the alert"),
}

#: Description of each column, written in the ECSV header.
COLUMN_DESCRIPTIONS = {
    "filename": "cutout file",
    "RA": "right ascension of the candidate (RA keyword)",
    "Dec": "declination of the candidate (DEC keyword)",
    "originalFile": "image the candidate was found in (FILE keyword)",
    "Xpos": "x position in that image (XPOS keyword)",
    "Ypos": "y position in that image (YPOS keyword)",
    "mag": "magnitude of the candidate (MAG or MAG_CALIB keyword)",
    "magerr": "magnitude error (MAGERR or MAGERR_CALIB keyword)",
    "FWHM": "FWHM of the candidate (FWHM keyword)",
    "FWHMPSF": "FWHM of the image PSF (FWHMPSF keyword)",
    "cand_ID": "candidate identifier (CANDID or NAME keyword, else the file name)",
    "label0": "P(bogus) = 1 - P(real)",
    "label1": "P(real), the network's probability that the candidate is real",
    "label": "1 where P(real) >= the threshold (real), else 0",
    "label1_std": "standard deviation of P(real) over the Monte-Carlo dropout draws",
    "label1_ensemble_std": "standard deviation of P(real) over the networks of the ensemble",
    "status": "what became of the file: " + ", ".join(STATUSES),
    "reason": "why the file was not scored (empty when scored)",
    **{column: description for column, (_, description) in OPTIONAL_COLUMNS.items()},
}

# Files read and scored per chunk: 1024 x 64 x 64 x 3 float32 = 50 MB; small enough
# for reading and scoring to overlap from the second chunk on.
_CHUNK = 1024
# The first chunk of a run is this long, the next ones twice as long each time up to
# the chunk size: nothing overlaps the reading of the first chunk, so it is kept short
# and the network starts on the first stamps sooner.
_FIRST_CHUNK = 128


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
    every_input=False,
    score_edge=False,
):
    """Score cutout files with a fitted classifier.

    Files are read with the classifier's channels (``channels_``) and centre-cropped
    to its stamp size when larger. Cutouts flagged ``EDGE='True'`` (unless
    ``score_edge``) and unreadable files are not scored, and reported. Probabilities
    are calibrated when the classifier is (``calibration_``). Files are read in
    chunks, each chunk read by a background thread while the network scores the one
    before; the first chunks are shorter (128 files, then twice as many each time up
    to ``chunk_size``), so that the network starts sooner, except with
    ``mc_samples`` (whose draws are seeded chunk by chunk).

    Parameters
    ----------
    classifier : CutoutClassifier
        A fitted or loaded classifier (see :func:`otrain.model_files.load_model`).
    paths : iterable of str or path-like
        Cutout files; consumed lazily, chunk by chunk.
    n_jobs : int or None, default None
        Processes reading files beside the network, at most (joblib convention:
        None = 1, -1 = all cores): started where the network leaves two cores or
        more free (it runs on a GPU, or its TensorFlow threads leave them) and the
        run has 2,000 files a process, kept between runs, writing the stamps into
        shared memory; the first chunks are read in this process while they start.
        Otherwise one thread reads beside the network.
    chunk_size : int, default 1024
        Files read and scored at a time (the first chunks are shorter, see above).
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
    every_input : bool, default False
        One row per input file, in order, with the ``status`` and ``reason`` columns
        and the :data:`OPTIONAL_COLUMNS` (probabilities masked where not scored);
        by default, one row per scored cutout.
    score_edge : bool, default False
        Score the cutouts flagged ``EDGE='True'`` too (they are NaN-padded; the
        network's NaN policy handles them).

    Returns
    -------
    table : astropy.table.Table
        :data:`RESULT_COLUMNS` (and ``label1_std``), one row per scored cutout or,
        with ``every_input``, per file; the threshold used is in
        ``table.meta["threshold"]``.
    summary : dict
        ``n_files``, ``n_scored``, ``n_edge`` (EDGE stamps not scored),
        ``skipped`` (list of (path, reason) of the files that could not be read or
        have another size), ``not_scored`` (list of (path, status, reason) of every
        file not scored, EDGE stamps included), ``threshold``, ``precision`` (the one
        used) and ``precision_note`` (why).
    """
    from concurrent.futures import ThreadPoolExecutor

    from ._validation import check_threshold
    from .precision import choose_precision
    from .thresholds import DEFAULT_THRESHOLD

    if threshold is None:
        threshold = getattr(classifier, "threshold_", None)
    threshold = check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
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
        "every_input": bool(every_input),
        "input_shape": tuple(int(s) for s in classifier.model_.input_shape[1:]),
    }
    input_shape = scoring["input_shape"]
    channels = getattr(classifier, "channels_", None) or ("DIFF",)
    tables, skipped, not_scored = [], [], []
    n_files = n_edge = n_scored = 0

    # Reader processes, for runs long enough to pay their start (a second or so,
    # taken while the first chunks are read here and scored): they read beside the
    # network on every core, where one thread reads about 2,000 alerts a second.
    readers = _readers_for_run(n_jobs, paths)

    def read(chunk):
        return chunk, _read_chunk(chunk, channels, input_shape, readers, score_edge)

    # One reader thread: the next chunk is read while the network (which releases
    # the GIL) scores this one, and at most two chunks are in memory.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="otrain-reader") as reader:
        pending = None
        # A final None scores the last chunk read.
        # Monte-Carlo draws are seeded per chunk of chunk_size (see first_chunk).
        first = chunk_size if mc_samples is not None else _FIRST_CHUNK
        for chunk in itertools.chain(_chunks(paths, chunk_size, first), [None]):
            upcoming = None if chunk is None else reader.submit(read, chunk)
            if pending is not None:
                table = _score_read(scorer, pending.result(), scoring)
                n_files += len(table)
                scored = table["status"] == "scored"
                n_scored += int(scored.sum())
                for row in table[~scored]:
                    path, status, reason = row["filename"], row["status"], row["reason"]
                    not_scored.append((path, status, reason))
                    if status == "edge":
                        n_edge += 1
                    else:
                        skipped.append((path, f"{path}: {reason}"))
                if not every_input:
                    table = _scored_only(table)
                if len(table):
                    tables.append(table)
                if progress is not None:
                    progress(n_files)
            pending = upcoming
    if tables:
        table = vstack(tables, metadata_conflicts="silent")
        tables.clear()  # the chunks' copies go now, not when the function returns
    else:
        table = _empty_results(mc=mc_samples is not None, every_input=every_input)
    table.meta["threshold"] = threshold
    summary = {
        "n_files": n_files,
        "n_scored": n_scored,
        "n_edge": n_edge,
        "skipped": skipped,
        "not_scored": not_scored,
        "threshold": threshold,
        "precision": used,
        "precision_note": note,
    }
    return table, summary


# Files a run needs per reader process to start them (see _readers_for_run).
_FILES_PER_READER = 2000


def _readers_for_run(n_jobs, paths):
    """Start reader processes for a run of ``paths`` (a list, or a stream taken as long)
    where ``n_jobs`` asks for them, the network leaves cores free (see
    :func:`_cores_for_reading`) and the run has ``_FILES_PER_READER`` files for two at
    least; returns ``n_jobs`` to read with, or 1."""
    from .cutouts import _can_fork, _effective_jobs, _start_readers

    if _can_fork():
        return n_jobs  # no TensorFlow here: load_cutouts forks its readers in milliseconds
    n_files = len(paths) if hasattr(paths, "__len__") else 1 << 62
    n_workers = _effective_jobs(n_jobs, n_files, _FILES_PER_READER)
    if n_workers > 1:
        n_workers = min(n_workers, _cores_for_reading())
    return _start_readers(n_workers) if n_workers > 1 else 1


def _cores_for_reading():
    """Cores the network leaves to reading: every core where it runs on a GPU, else
    those its TensorFlow threads leave (none by default, they take every core).

    On a CPU, reader processes beside a network on every core only add their own
    overhead (about 0.1 ms of CPU a ZTF packet): braai scored 4,000 packets at
    0.79-1.04 of a datacube's rate with them, 0.85-1.00 with one reader thread (2
    cores, three runs). Where the network costs the CPU nothing, they read 1.2-1.6x
    faster than the thread on 2 cores (benchmarks/alerts.py).
    """
    import sys

    cpus = os.cpu_count() or 1
    if "tensorflow" not in sys.modules:
        return cpus  # no TensorFlow network to leave room for
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return cpus
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    if not threads:
        try:
            threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0)
        except ValueError:
            threads = 0
    return max(0, cpus - threads) if threads > 0 else 0


def _chunks(paths, size, first):
    """Lists of ``paths``: ``first`` of them (at most ``size``), then twice as many
    each time, up to ``size``."""
    length = min(first, size)
    chunk = []
    for path in paths:
        chunk.append(str(path))
        if len(chunk) == length:
            yield chunk
            chunk = []
            length = min(2 * length, size)
    if chunk:
        yield chunk


def _read_chunk(chunk, channels, input_shape, n_jobs, score_edge=False):
    """Read one chunk: (cube of the stamps to score, their keywords, every file's row)."""
    cube, keywords, bad = load_cutouts(
        chunk,
        channels=channels,
        cutout_size=input_shape[0] if input_shape[0] == input_shape[1] else -1,
        n_jobs=n_jobs,
        on_error="skip",
        shape=input_shape,
    )
    edge = np.asarray(keywords["edge"], dtype=bool)
    status = np.where(edge & (not score_edge), "edge", "scored")
    # Where each file went: its row of `keywords`, or its (status, reason).
    # A file listed twice is reported twice: reasons queue per path, in order.
    problems = {}
    for path, reason in bad:
        problems.setdefault(path, []).append(reason)
    read_rows = iter(range(len(keywords)))
    fates = []
    for path in chunk:
        if problems.get(path):
            reason = _for_scoring(problems[path].pop(0), path, input_shape)
            fates.append((_status_of(reason), reason))
        else:
            fates.append(next(read_rows))
    keep = status == "scored"
    if not keep.all():
        cube = cube[keep]
    return cube, keywords, status, fates


_EDGE_REASON = "EDGE='True': the stamp touches the image edge (--score-edge scores it)"


def _status_of(reason):
    """``wrong_size`` for a readable stamp of another shape, else ``unreadable``."""
    # The phrases of otrain.cutouts' size errors (_size_message, _centre_crop).
    size = (
        "pixels but the other cutouts are",
        "pixels after cropping, expected",
        "channels where",
        "smaller than the cutout size",
        "stamps the model takes",
    )
    return "wrong_size" if any(phrase in reason for phrase in size) else "unreadable"


def _for_scoring(reason, path, input_shape):
    """A reader's message, worded for scoring: the file name and options out."""
    prefix = f"{path}: "
    reason = reason[len(prefix) :] if reason.startswith(prefix) else reason
    crop = re.match(r"the cutout is (\d+)x(\d+) pixels, smaller than the cutout size", reason)
    if crop:
        # The reader suggests otrain-convert's --cutout-size, which scoring has not:
        # the stamp size is the model's.
        reason = (
            f"the cutout is {crop[1]}x{crop[2]} pixels, smaller than the "
            f"{input_shape[0]}x{input_shape[1]} stamps the model takes; score it with a "
            "model trained on stamps of its size"
        )
    return reason


def _score_read(classifier, read, scoring):
    """Score one chunk read by :func:`_read_chunk`; its table, one row per file."""
    chunk, (cube, keywords, status, fates) = read
    proba = std = spread = None
    ensemble = classifier.n_networks_ > 1
    if len(cube):
        if ensemble:
            # One pass through the networks gives both the ensemble's P(real) and
            # their disagreement.
            each = classifier.predict_proba_networks(cube)
            proba = classifier.combine_networks(each)
            if getattr(classifier, "calibration_", None) is not None:
                each = classifier.calibration_.apply(each)
            spread = each.std(axis=1)
        if scoring["mc_samples"] is None:
            proba = classifier.predict_proba(cube) if proba is None else proba
        else:
            # Each chunk gets its own, reproducible seed: one seed for all chunks
            # would repeat the same dropout masks chunk after chunk.
            seed = scoring["random_state"]
            seed = None if seed is None else [int(seed), scoring["chunk"]]
            proba, std = classifier.predict_proba_mc(cube, scoring["mc_samples"], random_state=seed)
    scoring["chunk"] += 1
    table = _result_table(chunk, keywords, status, fates, proba, std, scoring)
    if ensemble:
        column = _masked_scores(spread, table["status"] == "scored")
        table.add_column(column, name="label1_ensemble_std", index=table.index_column("status"))
    return table


def _masked_scores(values, scored):
    """A column of ``values`` at the ``scored`` rows, masked (blank) elsewhere."""
    full = np.full(len(scored), np.nan)
    if values is not None:
        full[np.asarray(scored)] = values
    return MaskedColumn(full, mask=~np.asarray(scored))


def _result_table(chunk, keywords, status, fates, proba, std, scoring):
    """One row per file of ``chunk``: keywords where read, P(real) where scored."""
    row_of = np.array([f if isinstance(f, int) else -1 for f in fates], dtype=np.int64)
    read = row_of >= 0
    file_status = np.array([status[f] if isinstance(f, int) else f[0] for f in fates], dtype="U10")
    scored = file_status == "scored"
    table = Table()
    table["filename"] = np.array(chunk, dtype=str)
    optional = {c: k for c, (k, _) in OPTIONAL_COLUMNS.items() if k in keywords.colnames}
    for column, source in [*list(_FROM_KEYWORDS.items())[1:], *optional.items()]:
        table[column] = _spread(keywords[source], row_of, read)
    if not read.all():
        # An unreadable file has no keywords; its name still identifies it.
        ids = np.asarray(table["cand_ID"], dtype=object)
        ids[~read] = [Path(chunk[i]).stem for i in np.flatnonzero(~read)]
        table["cand_ID"] = ids.astype(str)

    def masked(values):
        return _masked_scores(values, scored)

    table["label0"] = masked(None if proba is None else proba[:, 0])
    table["label1"] = masked(None if proba is None else proba[:, 1])
    called = np.nan_to_num(table["label1"].data.data, nan=-1.0) >= scoring["threshold"]
    table["label"] = MaskedColumn(called.astype(np.int64), mask=~scored)
    if scoring["mc_samples"] is not None:
        table["label1_std"] = masked(None if std is None else std[:, 1])
    table["status"] = file_status
    reasons = ["" if isinstance(f, int) else f[1] for f in fates]
    table["reason"] = np.array(
        [_EDGE_REASON if s == "edge" else r for s, r in zip(file_status, reasons, strict=True)],
        dtype=str,
    )
    # The optional columns go last, after the ones every table has.
    return table[[c for c in table.colnames if c not in optional] + list(optional)]


def _spread(values, row_of, read):
    """``values`` (one per file read) at their files' rows; blank where unread."""
    n = len(row_of)
    kind = values.dtype.kind
    if kind in "US":
        full = np.full(n, "", dtype=values.dtype)
    elif kind == "b":
        full = np.zeros(n, dtype=bool)
    else:
        full = np.full(n, np.nan, dtype=np.float64)
    full[read] = np.asarray(values)[row_of[read]]
    column = Column(full)
    column.unit = values.unit
    return column


def _scored_only(table):
    """The scored rows, with the columns of O'TRAIN's table (and ``label1_std``)."""
    table = table[table["status"] == "scored"]
    keep = [c for c in (*RESULT_COLUMNS, *_SPREADS) if c in table.colnames]
    table = table[keep]
    for column in ("label0", "label1", "label", *_SPREADS):
        # Scored rows have every value: plain columns, as O'TRAIN's table had.
        if column in table.colnames and hasattr(table[column], "filled"):
            table[column] = Column(table[column].filled(), description=table[column].description)
    return table


# Spreads of P(real) the .dat keeps after O'TRAIN's columns, when they were measured.
_SPREADS = ("label1_std", "label1_ensemble_std")


def _empty_results(mc=False, every_input=False):
    table = Table()
    columns = (*RESULT_COLUMNS, *(("label1_std",) if mc else ()))
    if every_input:
        columns = (*columns, "status", "reason")
    for column in columns:
        if column in ("filename", "originalFile", "cand_ID", "status", "reason"):
            kind = str
        elif column == "label":
            kind = np.int64
        else:
            kind = np.float64
        table[column] = np.array([], dtype=kind)
    return table


def _is_utf8(column):
    try:
        "".join(np.asarray(column).tolist()).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def result_paths(folder):
    """The ``.dat`` and ``.ecsv`` files :func:`write_results` writes in ``folder``."""
    folder = Path(folder)
    return folder / f"{RESULT_NAME}.dat", folder / f"{RESULT_NAME}.ecsv"


def write_results(table, folder, *, model_name, extra_meta=None):
    """Write the result table as ``infer_results.dat`` and ``infer_results.ecsv``.

    The ``.dat`` file holds O'TRAIN's columns (and ``label1_std``) for the scored
    candidates; the ``.ecsv`` file holds every row and column of ``table``, each
    column with its description (:data:`COLUMN_DESCRIPTIONS`) and unit, and the
    metadata. File names that are not valid UTF-8 are written with ``\\xNN``
    escapes of their bytes.

    Parameters
    ----------
    table : astropy.table.Table
        From :func:`score_files` (scored rows, or every input with its ``status``).
    folder : str or path-like
        Where to write (O'TRAIN wrote beside the candidates).
    model_name : str
        The model file, stored in the ECSV metadata.
    extra_meta : dict, optional
        More metadata for the ECSV file (threshold, channels, normalisation,
        precision...).

    Returns
    -------
    tuple of pathlib.Path
        The ``.dat`` and ``.ecsv`` files, each written atomically.
    """
    dat, ecsv = result_paths(folder)
    # New columns over the same data (a table of every input can be large): only the
    # text columns holding names that are not valid UTF-8 are copied, escaped.
    table = Table(table, copy=False)
    for column in list(table.itercols()):
        if column.dtype.kind == "U" and not _is_utf8(column):
            table[column.name] = np.array([printable(v) for v in column], dtype=str)
        table[column.name].description = COLUMN_DESCRIPTIONS.get(column.name)
    table.meta.update(
        {
            "model": printable(model_name),
            "otrain_version": __version__,
            "P(real)": "label1; label0 = 1 - label1 = P(bogus)",
            **(extra_meta or {}),
        }
    )
    if "status" in table.colnames:
        table.meta["status"] = dict(STATUSES)
    with atomic_output(dat) as tmp:
        plain = _scored_only(table) if "status" in table.colnames else Table(table, copy=False)
        plain.meta.clear()
        plain.write(tmp, format="ascii.commented_header", overwrite=True)
    with atomic_output(ecsv) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return dat, ecsv
