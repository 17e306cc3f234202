"""
Triplets or difference images?
==============================

A candidate can be shown to the network as the difference image alone (``DIFF``,
O'TRAIN's default) or as a triplet of science, reference and difference images
(``SCI,REF,DIFF``, as ZTF's braai does). The triplet shows what the difference
hides: whether a saturated star or a galaxy nucleus sits under the residual, or
whether the reference has a source that the science image lacks. It also costs
three times the pixels to store and read.

Both can be read from the same multi-extension FITS files: the channels are
picked by ``EXTNAME`` (:class:`otrain.CutoutLoader` ``channels=``), so one set of
files answers the question. Both pipelines are cross-validated on the same folds.

The data are synthetic (:func:`otrain.datasets.make_training_set` with
``triplets=True``), in a temporary folder. On synthetic stamps the answer depends
on how the generator draws artefacts; run the same comparison on your own
cutouts, and build the datacube with ``otrain-convert --channels SCI,REF,DIFF`` if
the triplets win.

``OTRAIN_EXAMPLES_FAST=1`` runs on fewer stamps and epochs;
``OTRAIN_EXAMPLES_OUTDIR`` says where the figure goes (default: ``otrain-examples/``).
"""

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import make_scorer, matthews_corrcoef
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline

from otrain import CutoutClassifier, CutoutLoader
from otrain.datasets import make_training_set

FAST = os.environ.get("OTRAIN_EXAMPLES_FAST") == "1"
OUTDIR = Path(os.environ.get("OTRAIN_EXAMPLES_OUTDIR", "otrain-examples"))
OUTDIR.mkdir(parents=True, exist_ok=True)
SIZE = 32 if FAST else 48  # stamp side, in pixels
tmp = tempfile.TemporaryDirectory(prefix="otrain_triplets_")
work = Path(tmp.name)

# %%
# Multi-extension cutouts
# -----------------------
# Each file holds three image HDUs named ``SCI``, ``REF`` and ``DIFF``, and the
# candidate's keywords in the primary header. ``EDGE`` cutouts (cut at the border
# of their image, partly NaN) are left out, as ``otrain-convert`` does.

n_per_class = 60 if FAST else 130
truth = make_training_set(
    work / "training", n_real=n_per_class, n_bogus=n_per_class, size=SIZE, triplets=True
)
truth = truth[~truth["edge"]]
paths = np.asarray(truth["path"])
labels = np.asarray(truth["label"])
print(f"{len(paths)} triplet cutouts, {labels.sum()} real; bogus kinds:")
print(", ".join(sorted(set(truth["kind"][labels == 0]))))

# %%
# Two pipelines, the same folds
# -----------------------------
# Only the loader differs: three channels, or the difference image alone. The
# network adapts its first layer to the number of channels.

channel_sets = {"SCI,REF,DIFF": ("SCI", "REF", "DIFF"), "DIFF": ("DIFF",)}
folds = StratifiedKFold(n_splits=2 if FAST else 3, shuffle=True, random_state=0)
scoring = {"mcc": make_scorer(matthews_corrcoef), "roc_auc": "roc_auc"}
scores = {}
for name, channels in channel_sets.items():
    model = make_pipeline(
        CutoutLoader(channels=channels),
        CutoutClassifier(network="vgg6", epochs=1 if FAST else 5, random_state=0),
    )
    scores[name] = cross_validate(model, paths, labels, cv=folds, scoring=scoring)
    s = scores[name]
    print(
        f"{name:>13}: MCC {s['test_mcc'].mean():.3f} ± {s['test_mcc'].std():.3f}, "
        f"ROC AUC {s['test_roc_auc'].mean():.3f} ± {s['test_roc_auc'].std():.3f}, "
        f"{s['fit_time'].mean():.1f} s per training"
    )

# %%
# Fold by fold
# ------------
# Each line joins the two scores of one fold: the folds hold the same cutouts, so
# the slope of each line is the effect of the channels, free of the luck of the
# split.

fig, ax = plt.subplots(figsize=(5, 4))
names = list(channel_sets)
per_fold = np.array([scores[name]["test_mcc"] for name in names])
for fold in range(per_fold.shape[1]):
    ax.plot(names, per_fold[:, fold], "o-", color="0.6", label="one fold" if fold == 0 else None)
ax.plot(names, per_fold.mean(axis=1), "s", color="C0", markersize=9, label="mean")
ax.set_ylabel("validation MCC")
ax.set_title("Triplets vs difference images (vgg6)")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(OUTDIR / "triplets_vs_difference.png", dpi=100)

# %%
# Key result
# ----------
gain = per_fold[0] - per_fold[1]
print(
    f"triplets vs difference: MCC {per_fold[0].mean():.3f} vs {per_fold[1].mean():.3f}, "
    f"difference {gain.mean():+.3f} ± {gain.std():.3f} over {len(gain)} folds; "
    f"figure in {OUTDIR / 'triplets_vs_difference.png'}"
)
tmp.cleanup()
