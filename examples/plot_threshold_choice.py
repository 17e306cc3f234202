"""
Choosing the decision threshold
===============================

The network gives each candidate a probability of being real, P(real); a
candidate is *called* real when P(real) >= a threshold. 0.5 is a default, not a
law: a follow-up programme that must not miss a kilonova wants high completeness
(recall) and accepts more bogus candidates to vet by eye; a fully automatic alert
stream wants high purity (precision).

The threshold is a choice made on **validation** data, cutouts the network was not
trained on, and judged on **test** data, cutouts used for neither training nor
choosing: a threshold tuned and measured on the same cutouts looks better than it
will be. :func:`otrain.diagnostics.threshold_scan` gives precision, recall, MCC and
the false positive rate at every threshold in one call.

Two rules are shown:

- the threshold of highest MCC (a balance of both kinds of mistakes);
- the highest threshold that keeps at least 95 % of the real candidates (a
  completeness target), which admits the fewest bogus candidates at that
  completeness.

The chosen threshold is stored in the model file, where ``otrain-diagnostics``
reads it.

``OTRAIN_EXAMPLES_FAST=1`` runs on fewer stamps and epochs;
``OTRAIN_EXAMPLES_OUTDIR`` says where the figure goes (default: ``otrain-examples/``).
"""

import os
import tempfile
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from otrain import CutoutClassifier, load_model, save_model
from otrain.datasets import make_stamps
from otrain.diagnostics import binary_diagnostics, threshold_scan
from otrain.plots import plot_threshold_scan

FAST = os.environ.get("OTRAIN_EXAMPLES_FAST") == "1"
OUTDIR = Path(os.environ.get("OTRAIN_EXAMPLES_OUTDIR", "otrain-examples"))
OUTDIR.mkdir(parents=True, exist_ok=True)
SIZE = 32 if FAST else 48  # stamp side, in pixels
tmp = tempfile.TemporaryDirectory(prefix="otrain_threshold_")
work = Path(tmp.name)

# %%
# Training, validation and test cutouts
# -------------------------------------
# Real candidates are the rarer class in a survey; here a quarter of the stamps.
# The class weights of :class:`otrain.CutoutClassifier` (``"balanced"``) make both
# classes count equally in training whatever the ratio.

n_real, n_bogus = (50, 150) if FAST else (150, 450)
X, y, meta = make_stamps(n_real, n_bogus, size=SIZE, random_state=0)
X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.5, stratify=y, random_state=0)
X_valid, X_test, y_valid, y_test = train_test_split(
    X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=0
)
print(f"training {len(y_train)}, validation {len(y_valid)}, test {len(y_test)} stamps")

classifier = CutoutClassifier(network="vgg6", epochs=1 if FAST else 10, random_state=0)
classifier.fit(X_train, y_train)

# %%
# The scan on validation data
# ---------------------------

p_valid = classifier.predict_proba(X_valid)[:, 1]
scan = threshold_scan(y_valid, p_valid)  # thresholds 0.01, 0.02, ..., 0.99
print(scan[::10])

best_mcc = scan["threshold"][np.nanargmax(scan["mcc"])]
complete = scan[scan["recall"] >= 0.95]
high_recall = complete["threshold"].max() if len(complete) else scan["threshold"].min()
print(f"threshold of highest MCC: {best_mcc:.2f}")
print(f"highest threshold with recall >= 0.95: {high_recall:.2f}")
plot_threshold_scan(y_valid, p_valid, OUTDIR / "threshold_scan.png", threshold=high_recall)

# %%
# Judged on test data
# -------------------
# The numbers that go into a paper or a proposal come from here, not from the scan.

p_test = classifier.predict_proba(X_test)[:, 1]
print(f"{'threshold':>24}  precision  recall    MCC   FPR")
for name, threshold in (
    ("default", 0.5),
    ("highest MCC", best_mcc),
    ("recall >= 0.95", high_recall),
):
    d = binary_diagnostics(y_test, p_test, threshold=threshold)
    print(
        f"{name:>15} ({threshold:.2f})  {d['precision']:9.3f}  {d['recall']:6.3f}  "
        f"{d['mcc']:5.3f}  {d['fpr']:.3f}"
    )

# %%
# Stored with the model
# ---------------------
# ``extra`` adds metadata to the model file; ``otrain-diagnostics`` and
# ``otrain-plot-results`` use a stored ``threshold`` when no ``--threshold`` is
# given.

path = save_model(classifier, work / "model.keras", extra={"threshold": float(high_recall)})
stored = load_model(path).model_file_record_["threshold"]

# %%
# Key result
# ----------
d = binary_diagnostics(y_test, p_test, threshold=high_recall)
print(
    f"threshold choice: {high_recall:.2f} (stored: {stored:.2f}) keeps recall "
    f"{d['recall']:.3f} on test data at precision {d['precision']:.3f}; "
    f"figure in {OUTDIR / 'threshold_scan.png'}"
)
tmp.cleanup()
