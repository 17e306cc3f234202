"""Check a classifier on simulated sources: the plots and numbers of ``otrain-checkinfer``.

To see how well a model recovers real transients, artificial point sources of known
magnitude are injected into the images before the transient search (e.g. by gmadet's
simulation); the candidates found are scored (``otrain-infer``) and the scores of the
candidates that are injected sources are compared with those of the others. Two
tables come in:

- ``crossmatch.dat``, one row per injected source, with ``closest_candID`` (the
  candidate the source produced) and ``mag`` (its injected magnitude);
- ``infer_results.dat``, one row per scored candidate, with ``cand_ID`` and
  ``label1`` (P(real)), and optionally ``FWHM`` and ``FWHMPSF`` (pixels).

:func:`read_crossmatch` and :func:`read_infer_results` read them (the folder holding
the file or the file itself), :func:`check_inference` draws the plots and counts the
recovered sources, :func:`format_summary` lays the counts out as text.

Only numpy, astropy and matplotlib are needed, never TensorFlow: checking scores
already written needs no network.
"""

import math
import os
from pathlib import Path

import numpy as np
from astropy.io import ascii
from astropy.table import Table

from . import plots
from ._atomic import ensure_folder
from ._validation import check_increasing, check_threshold
from .diagnostics import magnitude_bins, match_simulated
from .exceptions import CheckInferError
from .inference import RESULT_NAME

__all__ = [
    "CROSSMATCH_NAME",
    "INFER_RESULTS_NAME",
    "PLOT_NAMES",
    "read_crossmatch",
    "read_infer_results",
    "check_inference",
    "format_summary",
]

#: File name of the crossmatch of the injected sources with the candidates.
CROSSMATCH_NAME = "crossmatch.dat"

#: File name of the scores written by ``otrain-infer``.
INFER_RESULTS_NAME = f"{RESULT_NAME}.dat"

#: The plots of :func:`check_inference`, in the order they are drawn. Names that
#: O'TRAIN used are kept where the figure shows what O'TRAIN's did (or more).
PLOT_NAMES = (
    "distrib_CNN_prob_sim.png",
    "distrib_CNNprob_all_and_sim.png",
    "fraction_per_probability_bin.png",
    "distrib_FWHM_simulation.png",
    "distrib_FWHM_not_simulated.png",
)

_INFER_REQUIRED = ("cand_ID", "label1")
_CROSSMATCH_REQUIRED = ("closest_candID", "mag")


# ---------------------------------------------------------------------------- reading


def _resolve(path, name, fix):
    """``path`` itself, or ``path / name`` when ``path`` is a folder."""
    path = Path(path)
    if not path.exists():
        raise CheckInferError(f"{path}: no such file or folder; {fix}", path)
    if path.is_dir():
        path = path / name
    if not path.exists():
        raise CheckInferError(f"{path}: no such file; {fix}", path)
    if not path.is_file():
        raise CheckInferError(f"{path}: not a regular file; {fix}", path)
    return path


def _read_ascii(path, required, row_name):
    """Read an ASCII table; ``commented_header`` first, then astropy's guesses.

    gmadet and ``otrain-infer`` write ``ascii.commented_header`` tables. Read as such
    first, without guessing: guessing can take the first data row of such a file for
    its header. Other layouts astropy recognises (a plain header line, CSV, ECSV) are
    accepted when they hold the required columns.
    """
    layout = (
        f"write it as an ASCII table with a '# {' '.join(required)} ...' header line "
        f"and one {row_name} per row (astropy's ascii.commented_header)"
    )

    # The text is read here and handed to astropy as a string: given a path, its fast
    # C reader leaves the file open when it fails (a ResourceWarning).
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CheckInferError(
            f"{path}: not a text file (it holds bytes that are not UTF-8 text); {layout}", path
        ) from None
    except OSError as err:
        raise CheckInferError(
            f"{path}: cannot be read: {err.strerror or err}; check that the file is readable",
            path,
        ) from err
    if not text.strip():
        raise CheckInferError(f"{path}: the file is empty; {layout}", path)
    if "\n" not in text and "\r" not in text:
        # A string without a line break would be taken for a file name.
        text += "\n"

    def attempt(**kwargs):
        try:
            return ascii.read(text, **kwargs), None
        except (ValueError, IndexError) as err:
            return None, err

    table, first_error = attempt(format="commented_header", guess=False)
    if table is None or not set(required) <= set(table.colnames):
        guessed, _ = attempt()
        if guessed is not None and set(required) <= set(guessed.colnames):
            table = guessed
    if table is None:
        if isinstance(first_error, UnicodeDecodeError):
            reason = "astropy recognises no table layout in it"
        else:
            reason = " ".join(str(first_error).split()) or type(first_error).__name__
        raise CheckInferError(
            f"{path}: cannot be read as an ASCII table ({reason}); {layout}", path
        )
    missing = [name for name in required if name not in table.colnames]
    if missing:
        present = ", ".join(table.colnames) or "none"
        raise CheckInferError(
            f"{path}: no column {', '.join(missing)} (columns: {present}); {layout}", path
        )
    table.meta["path"] = str(path)
    return table


def read_infer_results(path):
    """Read the scores written by ``otrain-infer``.

    Parameters
    ----------
    path : str or path-like
        ``infer_results.dat`` (or ``infer_results.ecsv``, whose unscored inputs are
        left out), or the folder holding it.

    Returns
    -------
    astropy.table.Table
        One row per scored candidate, with at least ``cand_ID`` and ``label1``
        (P(real)); ``meta["path"]`` is the file read.

    Raises
    ------
    CheckInferError
        If the file is missing, cannot be read as an ASCII table, or lacks a
        required column.
    """
    path = _resolve(
        path,
        INFER_RESULTS_NAME,
        f"run otrain-infer to write it, or give the folder holding {INFER_RESULTS_NAME} "
        "(or the file itself)",
    )
    table = _read_ascii(path, _INFER_REQUIRED, "scored candidate")
    if "status" in table.colnames:
        # infer_results.ecsv lists every input; only the scored ones have a P(real).
        table = table[np.asarray(table["status"]).astype(str) == "scored"]
    return table


def read_crossmatch(path):
    """Read the crossmatch of the simulated (injected) sources with the candidates.

    Parameters
    ----------
    path : str or path-like
        ``crossmatch.dat``, or the folder holding it.

    Returns
    -------
    astropy.table.Table
        One row per injected source, with at least ``closest_candID`` and ``mag``;
        ``meta["path"]`` is the file read.

    Raises
    ------
    CheckInferError
        If the file is missing, cannot be read as an ASCII table, or lacks a
        required column.
    """
    path = _resolve(
        path,
        CROSSMATCH_NAME,
        f"give the folder holding {CROSSMATCH_NAME} (or the file itself), the list of the "
        "sources injected into the images and the candidates they produced",
    )
    return _read_ascii(path, _CROSSMATCH_REQUIRED, "injected source")


def _as_table(table, reader):
    if isinstance(table, str | os.PathLike):
        return reader(table)
    if not isinstance(table, Table):
        raise TypeError(f"expected an astropy Table or a path, got {type(table).__name__}")
    return table


def _source(table, default):
    return table.meta.get("path", default)


def _float_column(table, name, source):
    """Column ``name`` as floats, NaN where masked; a one-line error for non-numbers."""
    column = table[name]
    if column.dtype.kind in "biuf":
        return np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)
    mask = np.ma.getmaskarray(column)
    values = np.full(len(column), np.nan)
    for i, (value, masked) in enumerate(zip(np.ma.getdata(column), mask, strict=True)):
        if masked:
            continue
        try:
            values[i] = float(value)
        except (TypeError, ValueError):
            raise CheckInferError(
                f"{source}: column {name} must hold numbers, found {str(value)!r} in data "
                f"row {i + 1}; write unknown values as nan",
                source,
            ) from None
    return values


# ------------------------------------------------------------------------- settings


def _check_ratio_bounds(fwhm_ratio):
    try:
        lower, upper = (float(v) for v in fwhm_ratio)
    except (TypeError, ValueError):
        lower = upper = math.nan
    if not (0 < lower < upper < math.inf):
        raise CheckInferError(
            f"fwhm_ratio (--fwhm-ratio-lower, --fwhm-ratio-upper) must be two numbers with "
            f"0 < lower < upper, got {fwhm_ratio!r}; e.g. 0.5 and 4.2"
        )
    return lower, upper


# ------------------------------------------------------------------------- the check


def _fwhm_reason(fwhm, fwhmpsf, sample):
    """Why no FWHM ratio can be plotted for ``sample`` (a plural noun), or None."""
    n = len(fwhmpsf)
    if n == 0:
        return f"there are no {sample}"
    known_psf = np.isfinite(fwhmpsf) & (fwhmpsf > 0)
    known_fwhm = np.isfinite(fwhm) & (fwhm > 0)
    if not known_psf.any():
        return f"FWHMPSF is unknown (NaN or not positive) for all {n} {sample}"
    if not known_fwhm.any():
        return f"FWHM is unknown (NaN or not positive) for all {n} {sample}"
    if not (known_psf & known_fwhm).any():
        return f"none of the {n} {sample} has both a known FWHM and a known FWHMPSF"
    return None


def _recovery_table(p_sim, mag_sim, maglim, problim):
    """Fraction of the simulated sources with P(real) >= each limit, per magnitude bin."""
    edges = magnitude_bins(mag_sim, np.concatenate([[-np.inf], maglim, [np.inf]]))
    rows = []
    for i in range(len(edges) - 1):
        low, high = edges[i], edges[i + 1]
        if i == 0:
            label = f"mag < {high:g}"
        elif i == len(edges) - 2:
            label = f"mag >= {low:g}"
        else:
            label = f"{low:g} <= mag < {high:g}"
        rows.append((label, low, high, (mag_sim >= low) & (mag_sim < high)))
    unknown = ~np.isfinite(mag_sim)
    if unknown.any():
        rows.append(("unknown mag", np.nan, np.nan, unknown))
    rows.append(("all", np.nan, np.nan, np.ones(len(p_sim), dtype=bool)))
    table = Table(
        meta={
            "description": "fraction of the simulated sources with P(real) >= each limit",
        }
    )
    table["mag_bin"] = [row[0] for row in rows]
    table["mag_min"] = [row[1] for row in rows]
    table["mag_max"] = [row[2] for row in rows]
    table["n"] = [int(row[3].sum()) for row in rows]
    for limit in problim:
        fractions = []
        for *_, mask in rows:
            count = int(mask.sum())
            fractions.append(float(np.mean(p_sim[mask] >= limit)) if count else math.nan)
        table[f"p_real>={limit:g}"] = fractions
    return table


def check_inference(
    infer_table,
    crossmatch_table,
    outdir,
    *,
    maglim=(12, 18, 21),
    problim=(0.1, 0.5, 0.7),
    fwhm_ratio=(0.5, 4.2),
    threshold=0.5,
):
    """Draw O'TRAIN's check-inference plots and count the recovered simulated sources.

    A scored candidate is a simulated source when a row of the crossmatch names it
    as its ``closest_candID`` (see :func:`~otrain.diagnostics.match_simulated`).
    Candidates without a score (``label1`` NaN) are left out and counted. The plots,
    in ``outdir`` (see :data:`PLOT_NAMES` and ``docs/checkinfer.md``):

    - ``distrib_CNN_prob_sim.png``: P(real) of the simulated sources, one histogram
      per magnitude bin cut at ``maglim``;
    - ``distrib_CNNprob_all_and_sim.png``: P(real) of all, simulated and other
      candidates, as counts and as fractions of each sample;
    - ``fraction_per_probability_bin.png``: per whole-magnitude bin, the fraction of
      the simulated sources in each range of P(real) cut at ``problim``;
    - ``distrib_FWHM_simulation.png`` and ``distrib_FWHM_not_simulated.png``:
      FWHM / FWHMPSF of the simulated and of the other candidates, split by range
      of P(real), with the ``fwhm_ratio`` bounds marked.

    A plot whose inputs are missing (no simulated source matched, no known
    magnitude, no FWHMPSF...) is skipped and the reason returned; a file of that
    name left by an earlier run is removed, so that the folder shows this run only.
    Everything is checked before the first file is written, and every file is
    written atomically.

    Parameters
    ----------
    infer_table : astropy.table.Table or path-like
        The scores (:func:`read_infer_results`, or a path it accepts).
    crossmatch_table : astropy.table.Table or path-like
        The injected sources (:func:`read_crossmatch`, or a path it accepts).
    outdir : str or path-like
        Folder receiving the plots, created if needed.
    maglim : sequence of float, default (12, 18, 21)
        Magnitudes cutting the bins of the P(real) histograms and of the recovery
        table: below the first, between consecutive ones, above the last.
    problim : sequence of float, default (0.1, 0.5, 0.7)
        Probabilities cutting the ranges of P(real), strictly between 0 and 1; the
        recovery table gives the fraction at or above each.
    fwhm_ratio : (float, float), default (0.5, 4.2)
        Lower and upper bounds of FWHM / FWHMPSF, marked on the FWHM plots.
    threshold : float, default 0.5
        Decision threshold marked on the P(real) histograms ("called real" when
        P(real) >= threshold).

    Returns
    -------
    dict
        - ``"outdir"`` : :class:`pathlib.Path`, the folder of the plots;
        - ``"written"`` : list of :class:`pathlib.Path`, the plots written;
        - ``"skipped"`` : dict, file name -> why that plot was not drawn;
        - ``"summary"`` : dict with ``n_candidates`` (rows of the scores),
          ``n_unscored`` (rows without a score, left out), ``n_injected`` (rows of
          the crossmatch), ``n_injected_matched`` (those naming a scored
          candidate), ``n_simulated`` (scored candidates that are simulated
          sources), ``n_simulated_unknown_mag``, ``maglim``, ``problim``,
          ``threshold`` and ``recovery``: an :class:`~astropy.table.Table` with one
          row per magnitude bin (then ``unknown mag`` when some are, and ``all``):
          ``mag_bin``, ``mag_min``, ``mag_max``, ``n`` and one column
          ``p_real>=LIMIT`` per limit, the fraction of those sources with P(real) at
          or above it (NaN for an empty bin).

    Raises
    ------
    CheckInferError
        If a table lacks a column, ``label1`` holds values outside [0, 1], there is
        no scored candidate, or a setting is invalid.
    OutputError
        If ``outdir`` cannot be created or written to.

    Examples
    --------
    >>> from otrain.checkinfer import check_inference, format_summary
    >>> result = check_inference("candidates", ".", "plots/CheckInfer")  # doctest: +SKIP
    >>> print(format_summary(result))  # doctest: +SKIP
    """
    infer_table = _as_table(infer_table, read_infer_results)
    crossmatch_table = _as_table(crossmatch_table, read_crossmatch)
    infer_source = _source(infer_table, "the inference table")
    crossmatch_source = _source(crossmatch_table, "the crossmatch table")
    maglim = check_increasing(
        maglim, "maglim (--maglim)", example="12 18 21", error=CheckInferError
    )
    problim = check_increasing(
        problim,
        "problim (--cnn-problim)",
        low=0.0,
        high=1.0,
        example="0.1 0.5 0.7",
        error=CheckInferError,
    )
    fwhm_ratio = _check_ratio_bounds(fwhm_ratio)
    threshold = check_threshold(threshold, error=CheckInferError)
    for table, required, source in (
        (infer_table, _INFER_REQUIRED, infer_source),
        (crossmatch_table, _CROSSMATCH_REQUIRED, crossmatch_source),
    ):
        missing = [name for name in required if name not in table.colnames]
        if missing:
            raise CheckInferError(
                f"{source}: no column {', '.join(missing)} "
                f"(columns: {', '.join(table.colnames) or 'none'})",
                source,
            )

    n_candidates = len(infer_table)
    if n_candidates == 0:
        raise CheckInferError(
            f"{infer_source}: holds no candidate; run otrain-infer on a folder of candidates",
            infer_source,
        )
    p_all = _float_column(infer_table, "label1", infer_source)
    bad = np.isfinite(p_all) & ((p_all < 0) | (p_all > 1))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise CheckInferError(
            f"{infer_source}: label1 must be P(real), between 0 and 1; {int(bad.sum())} values "
            f"are not (first: {float(p_all[first])!r} in data row {first + 1}); give the table "
            "written by otrain-infer",
            infer_source,
        )
    scored = np.isfinite(p_all)
    if not scored.any():
        raise CheckInferError(
            f"{infer_source}: no candidate has a score (label1 is NaN in all "
            f"{n_candidates} rows); score the candidates again with otrain-infer",
            infer_source,
        )
    mag_column = _float_column(crossmatch_table, "mag", crossmatch_source)
    crossmatch = Table({"closest_candID": crossmatch_table["closest_candID"], "mag": mag_column})
    scores = infer_table[scored]
    p = p_all[scored]
    is_sim, mag_sim = match_simulated(scores, crossmatch)
    # The same matching, seen from the crossmatch: which injected sources name a
    # scored candidate (the magnitudes are not used).
    named = Table({"closest_candID": scores["cand_ID"], "mag": np.zeros(len(scores))})
    injected_matched, _ = match_simulated(crossmatch, named, id_column="closest_candID")
    p_sim = p[is_sim]

    def optional(name):
        if name in infer_table.colnames:
            return _float_column(infer_table, name, infer_source)[scored]
        return None

    fwhm, fwhmpsf = optional("FWHM"), optional("FWHMPSF")

    # Every input is checked: only now is anything written.
    outdir = ensure_folder(outdir)
    xmatch_name = Path(crossmatch_source).name
    infer_name = Path(infer_source).name
    if len(crossmatch) == 0:
        no_sim = f"{xmatch_name} lists no simulated source"
    elif not is_sim.any():
        no_sim = (
            f"no scored candidate is a simulated source: none of the closest_candID of "
            f"{xmatch_name} is a cand_ID of {infer_name}; check that both come from the "
            "same images"
        )
    elif not np.isfinite(mag_sim).any():
        no_sim = f"no simulated source has a known magnitude (mag is NaN in {xmatch_name})"
    else:
        no_sim = None

    def fwhm_reason(mask, sample):
        missing = [name for name, v in (("FWHM", fwhm), ("FWHMPSF", fwhmpsf)) if v is None]
        if missing:
            return f"{infer_name} has no {' or '.join(missing)} column"
        return _fwhm_reason(fwhm[mask], fwhmpsf[mask], sample)

    plans = [
        (
            "distrib_CNN_prob_sim.png",
            no_sim,
            lambda path: plots.plot_probability_by_magnitude(
                p_sim, mag_sim, path, maglim=maglim, threshold=threshold
            ),
        ),
        (
            "distrib_CNNprob_all_and_sim.png",
            None,
            lambda path: plots.plot_probability_sim_vs_nonsim(p, is_sim, path, threshold=threshold),
        ),
        (
            "fraction_per_probability_bin.png",
            no_sim,
            lambda path: plots.plot_fraction_per_probability_bin(
                p_sim, mag_sim, path, problim=problim
            ),
        ),
        (
            "distrib_FWHM_simulation.png",
            (no_sim if not is_sim.any() else None) or fwhm_reason(is_sim, "simulated sources"),
            lambda path: plots.plot_fwhm_ratio(
                fwhm[is_sim],
                fwhmpsf[is_sim],
                p_sim,
                path,
                problim,
                fwhm_ratio,
                title="Simulated sources: FWHM relative to the PSF, by P(real)",
            ),
        ),
        (
            "distrib_FWHM_not_simulated.png",
            fwhm_reason(~is_sim, "other candidates"),
            lambda path: plots.plot_fwhm_ratio(
                fwhm[~is_sim],
                fwhmpsf[~is_sim],
                p[~is_sim],
                path,
                problim,
                fwhm_ratio,
                title="Other candidates: FWHM relative to the PSF, by P(real)",
            ),
        ),
    ]
    written, skipped = [], {}
    for name, reason, draw in plans:
        path = outdir / name
        if reason is None:
            written.append(draw(path))
            continue
        if path.is_file():
            path.unlink()
            reason += f" (the {name} of an earlier run was removed)"
        skipped[name] = reason

    summary = {
        "n_candidates": n_candidates,
        "n_unscored": int(np.count_nonzero(~scored)),
        "n_injected": len(crossmatch),
        "n_injected_matched": int(np.count_nonzero(injected_matched)),
        "n_simulated": int(np.count_nonzero(is_sim)),
        "n_simulated_unknown_mag": int(np.count_nonzero(~np.isfinite(mag_sim))),
        "maglim": maglim.tolist(),
        "problim": problim.tolist(),
        "threshold": threshold,
        "recovery": _recovery_table(p_sim, mag_sim, maglim, problim),
    }
    return {"outdir": outdir, "written": written, "skipped": skipped, "summary": summary}


def format_summary(result):
    """Lay out the result of :func:`check_inference` as a few lines of plain text.

    Parameters
    ----------
    result : dict
        As returned by :func:`check_inference`.

    Returns
    -------
    str
        The counts, the recovery table (one row per magnitude bin, one column per
        probability limit) and where the plots are; ASCII only, without a trailing
        newline.
    """
    s = result["summary"]
    unscored = f" ({s['n_unscored']} without a score, left out)" if s["n_unscored"] else ""
    lines = [
        f"candidates scored: {s['n_candidates'] - s['n_unscored']}{unscored}",
        f"simulated sources: {s['n_injected']} injected, {s['n_injected_matched']} matched to "
        f"a scored candidate; {s['n_simulated']} scored candidates are simulated sources",
    ]
    recovery = s["recovery"]
    if s["n_simulated"]:
        limits = [name for name in recovery.colnames if name.startswith("p_real>=")]
        headers = ["magnitude", "n"] + [f"P>={name.split('>=')[1]}" for name in limits]
        cells = [
            [str(row["mag_bin"]), str(row["n"])]
            + ["-" if math.isnan(row[name]) else f"{row[name]:.2f}" for name in limits]
            for row in recovery
        ]
        widths = [max(len(r[i]) for r in [headers, *cells]) for i in range(len(headers))]

        def layout(row):
            first = f"{row[0]:<{widths[0]}}"
            return "  " + "  ".join(
                [first] + [f"{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True)]
            )

        lines.append("fraction of the simulated sources recovered, P(real) >= limit:")
        lines += [layout(headers)] + [layout(row) for row in cells]
    n_written, n_skipped = len(result["written"]), len(result["skipped"])
    skipped = f", {n_skipped} skipped" if n_skipped else ""
    lines.append(f"plots in {result['outdir']}: {n_written} written{skipped}")
    return "\n".join(lines)
