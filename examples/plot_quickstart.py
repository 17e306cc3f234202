"""
Quickstart: from cutout files to P(real)
========================================

The smallest complete use of otrain from Python: a folder of labelled cutout files
(``true/`` for real transients, ``false/`` for bogus detections, the layout
``otrain-convert`` reads), a scikit-learn pipeline that reads the files
(:class:`otrain.CutoutLoader`) and classifies the stamps
(:class:`otrain.CutoutClassifier`), scores on cutouts the network never saw, and a
model file that scores new candidates later.

The cutouts here are synthetic (:mod:`otrain.datasets`), written to a temporary
folder; replace ``training`` below with your own folder of ``true/`` and ``false/``.
The ``vgg6`` network and few epochs keep the run to a minute on a laptop CPU.

Set ``OTRAIN_EXAMPLES_FAST=1`` for a smaller, faster run (the tests do), and
``OTRAIN_EXAMPLES_OUTDIR`` to choose where the figures go (default:
``otrain-examples/`` in the current folder).
"""

import os
import tempfile
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from otrain import CutoutClassifier, CutoutLoader, load_model, save_model
from otrain.datacube import find_cutouts
from otrain.datasets import make_training_set
from otrain.diagnostics import binary_diagnostics, format_diagnostics
from otrain.plots import plot_probability_distribution

FAST = os.environ.get("OTRAIN_EXAMPLES_FAST") == "1"
OUTDIR = Path(os.environ.get("OTRAIN_EXAMPLES_OUTDIR", "otrain-examples"))
OUTDIR.mkdir(parents=True, exist_ok=True)
SIZE = 32 if FAST else 48  # stamp side, in pixels
tmp = tempfile.TemporaryDirectory(prefix="otrain_quickstart_")
work = Path(tmp.name)

# %%
# Labelled cutouts on disk
# ------------------------
# One FITS file per candidate: here the difference image only, ``SIZE`` pixels a
# side, with O'TRAIN's keywords (``CANDID``, ``MAG``, ``EDGE``...) in the header.

n_per_class = 60 if FAST else 250
make_training_set(work / "training", n_real=n_per_class, n_bogus=n_per_class, size=SIZE)

real = find_cutouts(work / "training" / "true")
bogus = find_cutouts(work / "training" / "false")
paths = np.array([str(p) for p in real + bogus])
labels = np.array([1] * len(real) + [0] * len(bogus))
print(f"{len(real)} real and {len(bogus)} bogus cutouts in {work / 'training'}")

# %%
# A pipeline fed with file paths
# ------------------------------
# ``CutoutLoader`` turns paths into an array of stamps (n, SIZE, SIZE, 1);
# ``CutoutClassifier`` normalises each stamp, trains the network with random
# rotations and flips, and stops early on a held-out 15 % of the training set.
# A quarter of the cutouts are kept aside to judge the model.

train_paths, test_paths, y_train, y_test = train_test_split(
    paths, labels, test_size=0.25, stratify=labels, random_state=0
)
model = make_pipeline(
    CutoutLoader(channels=("DIFF",)),
    CutoutClassifier(network="vgg6", epochs=1 if FAST else 10, random_state=0),
)
model.fit(train_paths, y_train)
classifier = model[-1]
print(f"trained for {len(classifier.history_['loss'])} epochs")

# %%
# Scores on cutouts the network never saw
# ---------------------------------------
# ``predict_proba`` has two columns, [P(bogus), P(real)]; a candidate is called real
# when P(real) >= 0.5 (see ``plot_threshold_choice.py`` to choose another
# threshold).

p_real = model.predict_proba(test_paths)[:, 1]
diag = binary_diagnostics(y_test, p_real, threshold=0.5)
print(format_diagnostics(diag))
plot_probability_distribution(y_test, p_real, OUTDIR / "quickstart_probabilities.png")

# %%
# Save the model, score new candidates later
# ------------------------------------------
# The file holds the network with its normalisation, the channels read by the
# loader and the class order: ``load_model`` needs nothing else to score. Cutouts
# are then read with the stored channels.

model_file = save_model(model, work / "quickstart.keras")
loaded = load_model(model_file)
stamps = CutoutLoader(channels=loaded.channels_).transform(test_paths)
p_again = loaded.predict_proba(stamps)[:, 1]
print(f"model saved to {model_file.name}; channels {loaded.channels_}")
print(f"same scores after loading: {np.allclose(p_again, p_real, atol=1e-5)}")

# %%
# Key result
# ----------
print(
    f"quickstart: ROC AUC {diag['roc_auc']:.3f}, MCC {diag['mcc']:.3f} on "
    f"{diag['n']} test cutouts; figure in {OUTDIR / 'quickstart_probabilities.png'}"
)
tmp.cleanup()
