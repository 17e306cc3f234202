"""Diagnostic reports of a classifier on labelled cutouts: numbers, plots, galleries.

One function writes what ``otrain-train``, ``otrain-diagnostics`` and
``otrain-plot-results`` show, so they always agree: the printed diagnostics (also as
``diagnostics.txt`` and ``diagnostics.json``), ROC and precision-recall curves (all
candidates, by magnitude and by magnitude-error bins), F1/MCC vs threshold, the
probability distributions of true and false candidates, a reliability diagram, and
galleries of well and badly classified cutouts. No TensorFlow here: it takes
probabilities, not a model.
"""

import json
import shutil
from pathlib import Path

import numpy as np
from astropy.table import Table

from . import plots
from ._atomic import atomic_output, ensure_folder
from .datacube import keyword_column
from .diagnostics import binary_diagnostics, format_diagnostics

__all__ = ["write_report", "report_cautions", "PLOT_NAMES", "MIN_VALIDATION_PER_CLASS"]

#: The plots of a report, by file name.
PLOT_NAMES = (
    "roc.png",
    "roc_by_mag.png",
    "roc_by_magerr.png",
    "precision_recall.png",
    "precision_recall_by_mag.png",
    "precision_recall_by_magerr.png",
    "f1_mcc_vs_threshold.png",
    "probability_distribution.png",
    "reliability.png",
)

_GALLERIES = {
    "misclassified_true.png": ("real candidates called bogus", 1, False),
    "misclassified_false.png": ("bogus candidates called real", 0, False),
    "well_classified_true.png": ("real candidates called real", 1, True),
    "well_classified_false.png": ("bogus candidates called bogus", 0, True),
}


def write_report(
    y_true,
    p_real,
    outdir,
    *,
    threshold=0.5,
    keywords=None,
    stamps=None,
    channels=None,
    n_gallery=24,
    curves=True,
    copy_misclassified=False,
):
    """Write the diagnostics of scores ``p_real`` against labels ``y_true``.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        1 real, 0 bogus.
    p_real : array-like of shape (n,)
        P(real) of each candidate.
    outdir : str or path-like
        Folder for the report (created).
    threshold : float, default 0.5
        Candidates with ``p_real >= threshold`` are called real.
    keywords : astropy.table.Table, optional
        Keywords of the candidates (``mag``, ``magerr``, ``candid``, ``path``) for the
        binned curves, gallery titles and the list of misclassified candidates.
    stamps : ndarray of shape (n, H, W, C), optional
        The cutouts, for the galleries.
    channels : sequence of str, optional
        Channel names for the galleries.
    n_gallery : int, default 24
        Cutouts per gallery (the most confident mistakes and successes first).
    curves : bool, default True
        Draw the curves and distributions (ROC, precision-recall, F1/MCC,
        probabilities, reliability); galleries are drawn whenever ``stamps`` is given.
    copy_misclassified : bool, default False
        Copy the FITS files of misclassified candidates (when ``keywords`` has their
        ``path``) into ``misclassified/true_called_false`` and ``false_called_true``,
        as O'TRAIN's diagnostics did.

    Returns
    -------
    dict
        ``diagnostics`` (the numbers), ``text`` (formatted, cautions last),
        ``files`` (paths written), ``skipped`` (plots not drawn, with the reason) and
        ``cautions`` (see :func:`report_cautions`).
    """
    y_true = np.asarray(y_true, dtype=int)
    p_real = np.asarray(p_real, dtype=np.float64)
    outdir = ensure_folder(outdir)
    diag = binary_diagnostics(y_true, p_real, threshold=threshold)
    cautions = report_cautions(y_true, p_real, threshold)
    text = format_diagnostics(diag)
    if cautions:
        text += "\n\n" + "\n".join(f"caution: {c}" for c in cautions)
    files, skipped = [], []
    with atomic_output(outdir / "diagnostics.txt") as tmp:
        tmp.write_text(text + "\n")
    files.append(outdir / "diagnostics.txt")
    with atomic_output(outdir / "diagnostics.json") as tmp:
        tmp.write_text(json.dumps(_jsonable(diag), indent=1) + "\n")
    files.append(outdir / "diagnostics.json")

    called_real = p_real >= threshold
    wrong = called_real != (y_true == 1)
    files.append(_write_candidate_list(outdir, y_true, p_real, called_real, keywords))
    if curves:
        _write_curves(y_true, p_real, outdir, threshold, keywords, files, skipped)
    if stamps is not None:
        _write_galleries(
            y_true, p_real, wrong, stamps, outdir, keywords, channels, n_gallery, files, skipped
        )
    if copy_misclassified:
        files.extend(_copy_misclassified(outdir, y_true, wrong, keywords))
    return {
        "diagnostics": diag,
        "text": text,
        "files": files,
        "skipped": skipped,
        "cautions": cautions,
    }


#: Fewer stamps of a class than this in a validation set make its numbers too noisy
#: to trust (an MCC moves by tenths with one stamp).
MIN_VALIDATION_PER_CLASS = 30


def report_cautions(y_true, p_real, threshold=0.5):
    """Why the diagnostics of ``p_real`` against ``y_true`` may not be trusted.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        1 real, 0 bogus.
    p_real : array-like of shape (n,)
    threshold : float, default 0.5

    Returns
    -------
    list of str
        One sentence each: a class with fewer than :data:`MIN_VALIDATION_PER_CLASS`
        stamps, a model calling every candidate one class. Empty when none applies.
    """
    y_true = np.asarray(y_true, dtype=int)
    called_real = np.asarray(p_real, dtype=np.float64) >= threshold
    cautions = []
    for label, name in ((1, "real"), (0, "bogus")):
        count = int(np.sum(y_true == label))
        if count < MIN_VALIDATION_PER_CLASS:
            cautions.append(
                f"only {count} {name} candidates in the validation set (fewer than "
                f"{MIN_VALIDATION_PER_CLASS}): these numbers are noisy; validate on more"
            )
    if len(called_real) and (called_real.all() or not called_real.any()):
        which = "real" if called_real.all() else "bogus"
        cautions.append(
            f"the model calls every candidate {which} at threshold {threshold:g}: it has "
            "not learnt to separate the classes (train longer or on more stamps)"
        )
    return cautions


def _write_curves(y_true, p_real, outdir, threshold, keywords, files, skipped):
    mags = _column(keywords, "mag", len(y_true))
    magerrs = _column(keywords, "magerr", len(y_true))
    if len(np.unique(y_true)) < 2:
        skipped.append(("ROC and precision-recall curves", "the labels hold one class only"))
    else:
        files.append(plots.plot_roc(y_true, p_real, outdir / "roc.png"))
        files.append(plots.plot_precision_recall(y_true, p_real, outdir / "precision_recall.png"))
        for name, values, label in (("mag", mags, "mag"), ("magerr", magerrs, "mag error")):
            if np.isfinite(values).sum() < 2:
                skipped.append((f"curves by {label}", f"no {name} keyword in the cutouts"))
                continue
            groups = (values, None, label)
            files.append(
                plots.plot_roc(y_true, p_real, outdir / f"roc_by_{name}.png", groups=groups)
            )
            files.append(
                plots.plot_precision_recall(
                    y_true, p_real, outdir / f"precision_recall_by_{name}.png", groups=groups
                )
            )
        files.append(
            plots.plot_threshold_scan(
                y_true, p_real, outdir / "f1_mcc_vs_threshold.png", threshold=threshold
            )
        )
    files.append(
        plots.plot_probability_distribution(
            y_true, p_real, outdir / "probability_distribution.png", threshold=threshold
        )
    )
    files.append(plots.plot_reliability(y_true, p_real, outdir / "reliability.png"))


def _write_galleries(
    y_true, p_real, wrong, stamps, outdir, keywords, channels, n_gallery, files, skipped
):
    mags = _column(keywords, "mag", len(y_true))
    ids = keyword_column(keywords, "candid", numeric=False)
    for name, (title, label, right) in _GALLERIES.items():
        chosen = np.flatnonzero((y_true == label) & (wrong != right))
        # Most confident first: the worst mistakes, the clearest successes.
        confidence = np.abs(p_real[chosen] - 0.5)
        chosen = chosen[np.argsort(-confidence, kind="stable")][:n_gallery]
        if len(chosen) == 0:
            skipped.append((name, f"no {title}"))
            continue
        n_group = int(np.sum((y_true == label) & (wrong != right)))
        titles = plots.gallery_titles(
            p_real[chosen], mags[chosen], ids[chosen] if ids is not None else None
        )
        written = plots.plot_gallery(
            stamps[chosen],
            outdir / name,
            titles=titles,
            channel_names=channels,
            title=f"{title.capitalize()} ({len(chosen)} of {n_group})",
        )
        if written is not None:
            files.append(written)


def _column(keywords, name, n):
    values = keyword_column(keywords, name)
    return np.full(n, np.nan) if values is None else values


def _write_candidate_list(outdir, y_true, p_real, called_real, keywords):
    table = Table()
    if keywords is not None:
        for name in ("candid", "path", "mag", "magerr"):
            if name in keywords.colnames:
                table[name] = keywords[name]
    table["label"] = y_true
    table["p_real"] = p_real
    table["called_real"] = called_real.astype(int)
    table["correct"] = (called_real == (y_true == 1)).astype(int)
    path = outdir / "scores.ecsv"
    with atomic_output(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


def _copy_misclassified(outdir, y_true, wrong, keywords):
    if keywords is None or "path" not in keywords.colnames:
        return []
    written = []
    for label, folder in ((1, "true_called_false"), (0, "false_called_true")):
        target = outdir / "misclassified" / folder
        if target.exists():
            shutil.rmtree(target)
        chosen = np.flatnonzero((y_true == label) & wrong)
        for i in chosen:
            source = Path(str(keywords["path"][i]))
            if source.is_file():
                ensure_folder(target)
                written.append(Path(shutil.copy2(source, target / source.name)))
    return written


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value
