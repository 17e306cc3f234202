"""From the command line's settings to a ready session: scan, store, scores, order."""

import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_output
from ..exceptions import LabellingError
from ._session import LabellingSession
from ._store import LabelStore, candidate_name

__all__ = ["find_candidates", "open_session", "SCORES_NAME"]

#: Name of the score cache, beside ``labels.csv``.
SCORES_NAME = "label_scores.ecsv"


def find_candidates(cutouts, out=None):
    """The candidates of ``cutouts``, as ``otrain-infer`` scans them.

    Parameters
    ----------
    cutouts : str or path-like
        The candidate folder (its files; sub-folders are not entered, so ``true/`` and
        ``false/`` inside it are never candidates).
    out : str or path-like, optional
        The training folder: refused when it is the candidates' own ``true/`` or
        ``false/`` source (labelling the copies again).

    Returns
    -------
    list of str

    Raises
    ------
    LabellingError
        If the folder holds no cutout, or ``cutouts`` is ``out``'s ``true/``/``false/``.
    """
    from ..datacube import find_cutouts

    cutouts = Path(cutouts)
    if out is not None:
        resolved = cutouts.resolve()
        for sub in ("true", "false"):
            if resolved == (Path(out) / sub).resolve():
                raise LabellingError(
                    f"--cutouts {cutouts} is the {sub}/ folder of --out {out}: the "
                    "candidates would be filed onto themselves; give the folder of "
                    "unlabelled candidates"
                )
    references = find_cutouts(cutouts)
    if not references:
        raise LabellingError(
            f"{cutouts}: holds no cutout (*.fits and the other cutout suffixes); check the folder"
        )
    return references


def _model_stamp(model):
    stat = os.stat(model)
    return {"model": str(Path(model).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_cache(path, stamp, mc):
    from astropy.table import Table

    if not path.exists():
        return {}
    try:
        table = Table.read(path, format="ascii.ecsv")
    except (OSError, ValueError):
        return {}
    meta = table.meta
    if any(meta.get(k) != v for k, v in stamp.items()) or (mc and meta.get("mc_samples") != mc):
        return {}
    std = table["p_real_std"] if "p_real_std" in table.colnames else [np.nan] * len(table)
    return {
        str(name): (float(p), float(s))
        for name, p, s in zip(table["candidate"], table["p_real"], std, strict=True)
    }


def _write_cache(path, stamp, mc, scores):
    from astropy.table import Table

    names = sorted(scores)
    table = Table(
        {
            "candidate": names,
            "p_real": [scores[n][0] for n in names],
            "p_real_std": [scores[n][1] for n in names],
        }
    )
    table.meta.update(stamp)
    table.meta["mc_samples"] = mc
    with atomic_output(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)


def _scores(
    references, out, model, *, order, mc_samples, channels, normalisation, say, random_state
):
    """P(real) (and spread) for every candidate, from the cache or the model."""
    from ..active_learning import rank_candidates
    from ..model_files import load_model

    mc = mc_samples if order == "mc-dropout" else None
    cache_path = Path(out) / SCORES_NAME
    stamp = _model_stamp(model)
    cached = _read_cache(cache_path, stamp, mc)
    names = [candidate_name(r) for r in references]
    missing = [r for r, n in zip(references, names, strict=True) if n not in cached]
    say(f"loading model {model} ...")
    classifier = load_model(model, channels=channels, normalisation=normalisation)
    threshold = classifier.threshold_ if classifier.threshold_ is not None else 0.5
    if missing:
        what = f"{mc} Monte-Carlo dropout draws" if mc else "one pass"
        say(f"scoring {len(missing)} candidates ({what}; {len(cached)} from {SCORES_NAME}) ...")
        step = max(1, len(missing) // 10)
        shown = [0]

        def progress(done):
            if done - shown[0] >= step or done == len(missing):
                shown[0] = done
                say(f"  scored {done} / {len(missing)}")

        ranking = rank_candidates(
            classifier,
            missing,
            strategy="mc-dropout" if mc else "score",
            mc_samples=mc,
            random_state=random_state,
            progress=progress,
        )
        for i, reference in enumerate(missing):
            std = np.nan if ranking.p_real_std is None else ranking.p_real_std[i]
            cached[candidate_name(reference)] = (float(ranking.p_real[i]), float(std))
        _write_cache(cache_path, stamp, mc, cached)
    else:
        say(f"scores of all {len(references)} candidates read from {cache_path}")
    p_real = np.array([cached[n][0] for n in names])
    p_std = np.array([cached[n][1] for n in names]) if mc else None
    return p_real, p_std, threshold


def open_session(
    cutouts,
    out,
    *,
    model=None,
    order=None,
    mc_samples=20,
    channels=None,
    model_channels=None,
    normalisation=None,
    link=False,
    user=None,
    grid_size=30,
    random_state=0,
    say=print,
):
    """Everything ``otrain-label`` needs before it serves the page.

    Parameters
    ----------
    cutouts, out : str or path-like
        The candidates, and the training folder (``labels.csv``, ``true/``, ``false/``).
    model : str or path-like, optional
        Model file: its scores are shown and order the candidates.
    order : {"random", "name", "uncertainty", "mc-dropout", "score"}, optional
        Default: ``uncertainty`` with a model, ``random`` without.
    mc_samples : int, default 20
        Monte-Carlo dropout draws for the ``mc-dropout`` order.
    channels : sequence of str, optional
        Channels shown; every image of each file by default.
    model_channels, normalisation : optional
        Channels and normalisation of a legacy model (see
        :func:`otrain.model_files.load_model`).
    link, user : optional
        See :class:`LabelStore`.
    grid_size : int, default 30
        Candidates per grid page.
    random_state : int, default 0
        Seed of the random order and of the dropout draws.
    say : callable, default print
        Progress lines.

    Returns
    -------
    LabellingSession
    """
    from ..active_learning import order_by_scores

    order = order or ("uncertainty" if model else "random")
    if order in ("uncertainty", "mc-dropout", "score") and model is None:
        raise LabellingError(f"--order {order} needs a model: give --model, or use --order random")
    references = find_candidates(cutouts, out)
    store = LabelStore(out, link=link, user=user)
    for problem in store.sync_all(references):
        say(f"warning: {problem}")
    if store.n_bad_rows:
        say(f"warning: {store.n_bad_rows} unreadable rows of {store.path} left out")
    p_real = p_std = None
    threshold = 0.5
    if model is not None:
        p_real, p_std, threshold = _scores(
            references,
            out,
            model,
            order=order,
            mc_samples=mc_samples,
            channels=model_channels,
            normalisation=normalisation,
            say=say,
            random_state=random_state,
        )
    ranked = order_by_scores(
        order,
        len(references),
        p_real=p_real,
        p_real_std=p_std,
        threshold=threshold,
        random_state=random_state,
    )
    description = f"order: {order}"
    if model is not None:
        description += f" · model {Path(model).name} (threshold {threshold:.3g})"
    return LabellingSession(
        references,
        store,
        order=ranked,
        p_real=p_real,
        p_real_std=p_std,
        channels=channels,
        grid_size=grid_size,
        description=description,
    )
