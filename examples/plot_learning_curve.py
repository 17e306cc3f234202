"""
Learning curve: how many labelled cutouts are enough?
=====================================================

Labelling cutouts by eye is the expensive part of a real/bogus classifier. A
learning curve says whether labelling more will pay: the network is trained on
growing subsets of the datacube and scored on cutouts it never saw, with
stratified k-fold cross-validation. Where the validation score flattens, more
cutouts of the same kind no longer help.

:func:`otrain.dataset_size.dataset_size_curve` is the library behind
``otrain-optimise-dataset-size``: every training subset keeps the class balance of
the cube, larger subsets contain the smaller ones, and each point is the mean over
folds with its spread. :func:`otrain.dataset_size.smallest_sufficient_size` picks
the smallest size whose validation MCC is within a tolerance of the best.

The cutouts are synthetic (:func:`otrain.datasets.make_training_set`), turned into a
datacube with :func:`otrain.build_datacube` as ``otrain-convert`` does.

``OTRAIN_EXAMPLES_FAST=1`` runs fewer, smaller trainings;
``OTRAIN_EXAMPLES_OUTDIR`` says where the figure goes (default: ``otrain-examples/``).
"""

import os
import tempfile
from pathlib import Path

from otrain import CutoutClassifier, build_datacube
from otrain.dataset_size import (
    dataset_size_answer,
    dataset_size_curve,
    dataset_size_notes,
    smallest_sufficient_size,
)
from otrain.datasets import make_training_set
from otrain.plots import plot_learning_curve

FAST = os.environ.get("OTRAIN_EXAMPLES_FAST") == "1"
OUTDIR = Path(os.environ.get("OTRAIN_EXAMPLES_OUTDIR", "otrain-examples"))
OUTDIR.mkdir(parents=True, exist_ok=True)
SIZE = 32 if FAST else 48  # stamp side, in pixels
tmp = tempfile.TemporaryDirectory(prefix="otrain_learning_curve_")
work = Path(tmp.name)

# %%
# A datacube of labelled cutouts
# ------------------------------

n_per_class = 60 if FAST else 150
make_training_set(work / "training", n_real=n_per_class, n_bogus=n_per_class, size=SIZE)
cube = build_datacube(work / "training")
print(cube.summary_text())

# %%
# The curve
# ---------
# ``n_sections`` sizes times ``folds`` folds: that many trainings. Each one stops
# early on 15 % of its training subset; ``epochs`` is the upper limit.

table = dataset_size_curve(
    cube,
    estimator=CutoutClassifier(network="vgg6", epochs=1 if FAST else 4, random_state=0),
    n_sections=2 if FAST else 4,
    folds=2 if FAST else 3,
    random_state=0,
)
print(table["size", "n_real", "valid_mcc_mean", "valid_mcc_std", "fit_time_mean"])

# %%
# Reading it
# ----------
# The training curve sits above the validation curve; the gap between them
# shrinks as the set grows. The bands are one standard deviation over folds: two
# sizes whose bands overlap are not told apart by this run.

enough = smallest_sufficient_size(table, tolerance=0.02)
plot_learning_curve(
    table["size"],
    table["train_mcc"],
    table["valid_mcc"],
    OUTDIR / "learning_curve.png",
    metric="MCC",
    chosen_size=enough,
)

# %%
# Before trusting the answer
# --------------------------
# :func:`~otrain.dataset_size.dataset_size_notes` says when it should not be taken
# at face value: folds that disagree by more than the tolerance, or trainings that
# all ran to the epoch limit (the networks may not have finished learning, and
# larger sets then win partly by getting more optimisation steps).

for note in dataset_size_notes(table, tolerance=0.02):
    print(f"note: {note}")

# %%
# Key result
# ----------
print(f"learning curve: {dataset_size_answer(table, tolerance=0.02)}")
print(f"figure in {OUTDIR / 'learning_curve.png'}")
tmp.cleanup()
