"""
Grad-CAM: where does the network look?
======================================

A score says *what* the network decided, not *why*. Grad-CAM heat maps
(:mod:`otrain.gradcam`) show which region of each cutout the decision rests on: the
transient at the centre, as it should, or a neighbour's subtraction residual, a
masked region, the edge of the stamp.

A small network is trained on synthetic SCI/REF/DIFF triplets, then
:func:`otrain.gradcam.grad_cam_galleries` (what ``otrain-grad-cam`` runs) draws
four galleries of test cutouts: real and bogus candidates called right (at random)
and called wrong (the most confident mistakes first). Each cutout has one panel per
channel and a last panel with its heat map; the cyan contour marks half the map's
maximum on every channel.

Finally :func:`otrain.gradcam.grad_cam` gives the maps as an array, to measure
how much of the evidence for "real" lies near the centre of the stamps of real
candidates.

``OTRAIN_EXAMPLES_FAST=1`` runs on fewer stamps and epochs;
``OTRAIN_EXAMPLES_OUTDIR`` says where the figures go (default: ``otrain-examples/``).
"""

import os
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from otrain import CutoutClassifier
from otrain.datasets import TRIPLET_CHANNELS, make_stamps
from otrain.gradcam import conv_layer_names, grad_cam, grad_cam_galleries

FAST = os.environ.get("OTRAIN_EXAMPLES_FAST") == "1"
OUTDIR = Path(os.environ.get("OTRAIN_EXAMPLES_OUTDIR", "otrain-examples"))
OUTDIR.mkdir(parents=True, exist_ok=True)
SIZE = 32 if FAST else 48  # stamp side, in pixels

# %%
# A network to explain
# --------------------

n_per_class = 60 if FAST else 200
X, y, meta = make_stamps(n_per_class, n_per_class, size=SIZE, triplets=True, random_state=0)
index_train, index_test = train_test_split(
    np.arange(len(y)), test_size=0.3, stratify=y, random_state=0
)
classifier = CutoutClassifier(network="vgg6", epochs=2 if FAST else 10, random_state=0)
classifier.fit(X[index_train], y[index_train])
print(f"convolution layers: {conv_layer_names(classifier)}")

# %%
# Galleries of right and wrong calls
# ----------------------------------
# One PNG per group; a group without members (no false negative, say) gets no file.

result = grad_cam_galleries(
    classifier,
    X[index_test],
    OUTDIR / "grad_cam",
    labels=y[index_test],
    ids=np.asarray(meta["candid"])[index_test],
    mags=np.asarray(meta["mag"])[index_test],
    channel_names=TRIPLET_CHANNELS,
    n=6,
)
height, width = result["layer_shape"]
print(f"maps taken at layer {result['layer']} ({height}x{width} grid, resampled to {SIZE}x{SIZE})")
for group in result["groups"]:
    where = group["path"] if group["path"] is not None else "no gallery"
    print(f"  {group['description']}: {group['total']} -> {where}")

# %%
# Where is the evidence for "real"?
# ---------------------------------
# Real candidates are new point sources within a pixel of the stamp centre. The
# share of each map's sum within 6 pixels of the centre, divided by the share of
# the pixels there, is above 1 when the network found its evidence on the source,
# and below 1 when it found it around the source. The second is common for the
# class "real": the network has learnt that a stamp is real when *no artefact*
# is anywhere in it (a dipole, a streak, a masked block), and the maps light up
# the clean background rather than the source (see ``docs/grad_cam.md``). Maps
# explaining "bogus" on bogus stamps sit on the artefacts instead: look at
# ``grad_cam_true_negatives.png``.

real_test = index_test[y[index_test] == 1]
maps = grad_cam(classifier, X[real_test], target="real")
yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
central = np.hypot(xx, yy) <= 6
total = maps.sum(axis=(1, 2))
share = maps[:, central].sum(axis=1)[total > 0] / total[total > 0]
ratio = np.median(share) / central.mean()
where = "on the source" if ratio > 1 else "around the source, not on it"

# %%
# Key result
# ----------
print(
    f"grad-cam: for {len(share)} real test stamps, the evidence for 'real' lies {where}: "
    f"the central 6 px hold {np.median(share):.0%} of it (median) for {central.mean():.0%} "
    f"of the pixels (ratio {ratio:.2f}); galleries in {OUTDIR / 'grad_cam'}"
)
