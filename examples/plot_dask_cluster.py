"""
Dask: scoring and cross-validation on a cluster
===============================================

When a night's candidates or a grid search outgrow one machine, otrain runs on a
Dask cluster. This script starts a ``LocalCluster`` (two worker processes on this
machine, the laptop case); the same code runs against a SLURM allocation
(``examples/slurm_cluster.py``) or any running scheduler: only the ``Client``
changes.

Two kinds of work spread over the workers:

- bulk scoring, :func:`otrain.cluster.score_files_distributed`: the files are cut
  into chunks scored on the workers, each loading the model once; the table is
  the one :func:`otrain.inference.score_files` gives locally;
- cross-validation (and grid searches, learning curves): scikit-learn fits
  through joblib, and ``joblib.parallel_config(backend="dask")`` sends the fits
  to the workers. One training stays on one worker.

:func:`otrain.cluster.prepare_workers` limits TensorFlow on each worker to the
worker's own threads and keeps trainings reproducible there.

Dask starts its worker processes by importing this script again, so the work sits
in functions and runs under ``if __name__ == "__main__":``, as in any script that
starts a ``LocalCluster``.

``OTRAIN_EXAMPLES_FAST=1`` uses fewer, smaller cutouts and epochs;
``OTRAIN_EXAMPLES_OUTDIR`` says where the figure goes (default: ``otrain-examples/``).
"""

import os
import tempfile
import time
from pathlib import Path

FAST = os.environ.get("OTRAIN_EXAMPLES_FAST") == "1"
OUTDIR = Path(os.environ.get("OTRAIN_EXAMPLES_OUTDIR", "otrain-examples"))
SIZE = 32 if FAST else 48  # stamp side, in pixels

# %%
# Candidates and a model
# ----------------------
# Unlabelled candidates on disk (the workers read them by path: on a real
# cluster they live on a shared file system) and a small model trained on
# labelled stamps, saved to a file the workers load.


def make_data(work):
    from otrain import CutoutClassifier, save_model
    from otrain.datasets import make_candidates, make_stamps

    make_candidates(work, n=300 if FAST else 2000, size=SIZE, random_state=1)
    X, y, _ = make_stamps(100, 100, size=SIZE, random_state=0)
    model = CutoutClassifier(network="vgg6", epochs=1 if FAST else 4, random_state=0)
    return save_model(model.fit(X, y), work / "model.keras"), X, y


# %%
# Bulk scoring on the workers
# ---------------------------
# The file list is streamed (a generator of millions of paths works), a few
# chunks per worker are in flight at a time, and the results come back chunk by
# chunk, in the order of the list.


def score(client, model, folder):
    from otrain import load_model
    from otrain.cluster import score_files_distributed
    from otrain.datacube import find_cutouts
    from otrain.inference import score_files

    paths = find_cutouts(folder)
    start = time.perf_counter()
    table, summary = score_files_distributed(model, paths, client, chunk_size=100)
    took = time.perf_counter() - start
    local, _ = score_files(load_model(model), paths, chunk_size=100)
    same = list(table["filename"]) == list(local["filename"]) and bool(
        abs(table["label1"] - local["label1"]).max() < 1e-6
    )
    print(f"{summary['n_scored']} of {summary['n_files']} files scored in {took:.1f} s")
    return table, same


# %%
# Cross-validation on the workers
# -------------------------------
# Inside ``parallel_config(backend="dask")`` scikit-learn's fits run on the
# cluster: one fold per worker at a time. The estimator (and its network, a name
# or a module-level function) is pickled to the workers.


def cross_validated_mcc(client, X, y):
    from joblib import parallel_config
    from sklearn.metrics import make_scorer, matthews_corrcoef
    from sklearn.model_selection import StratifiedKFold, cross_validate

    from otrain import CutoutClassifier

    estimator = CutoutClassifier(network="vgg6", epochs=1 if FAST else 4, random_state=0)
    folds = StratifiedKFold(n_splits=2 if FAST else 4, shuffle=True, random_state=0)
    with parallel_config(backend="dask", client=client):
        scores = cross_validate(estimator, X, y, cv=folds, scoring=make_scorer(matthews_corrcoef))
    return scores["test_score"]


# %%
# The figure
# ----------


def plot(table, mcc):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.hist(table["label1"], bins=20, color="C0")
    left.set_xlabel("P(real), scored on the workers")
    left.set_ylabel("candidates")
    folds = [f"fold {k + 1}" for k in range(len(mcc))]
    bars = right.bar(folds, mcc, color="C1")
    right.bar_label(bars, fmt="%.2f")
    right.axhline(0, color="0.5", lw=0.8)
    right.set_ylim(min(0.0, *mcc) - 0.05, 1.05)
    right.set_xlabel("cross-validation fold (each trained on a worker)")
    right.set_ylabel("validation MCC")
    fig.tight_layout()
    OUTDIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUTDIR / "dask_cluster.png", dpi=100)


# %%
# Key result
# ----------
# The ``LocalCluster`` is the laptop case; on a cluster, pass the scheduler's
# address or scheduler file to :func:`otrain.cluster.connect` instead.

if __name__ == "__main__":
    from distributed import Client, LocalCluster

    from otrain.cluster import prepare_workers

    tmp = tempfile.TemporaryDirectory(prefix="otrain_dask_")
    work = Path(tmp.name)
    model, X, y = make_data(work)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        for address, settings in prepare_workers(client).items():
            print(f"worker {address}: TensorFlow threads {settings['TF_NUM_INTRAOP_THREADS']}")
        table, same = score(client, model, work / "candidates")
        mcc = cross_validated_mcc(client, X, y)
    plot(table, mcc)
    tmp.cleanup()
    print(
        f"dask: {len(table)} candidates scored on 2 workers, same table as local: {same}; "
        f"cross-validated MCC {mcc.mean():.3f} ± {mcc.std():.3f}"
    )
