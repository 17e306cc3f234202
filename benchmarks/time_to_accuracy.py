"""Row 5 of issue 5: time to accuracy, O'TRAIN's training recipe against otrain's default.

A generated training set (4,000 single-HDU 64x64 cutouts written by
:func:`otrain.datasets.make_training_set`, half real; the ~3% EDGE stamps are left out
by :func:`otrain.datacube.build_datacube`, as ``otrain-convert`` does) is split once,
stratified, into 80% training and 20% validation stamps. Both recipes train the same
network (O'TRAIN's) on the same training stamps, in the same process, one after the
other:

* **O'TRAIN's recipe**, as its ``train.py``: raw pixels (``build_model`` with
  ``normalisation="none"``: NaN pixels set to 0, nothing else), no augmentation, no
  class weights, one-hot labels and categorical cross-entropy, Adam at 1e-3, batches
  of 1024, ``validation_data`` evaluated every epoch; run "until its best validation
  MCC": until ``--patience`` epochs (10) bring no better MCC, or ``--max-epochs`` (100);
* **otrain's default recipe**: ``CutoutClassifier()`` with its defaults (robust
  normalisation, random rotations and flips, balanced class weights, batches of 64,
  early stopping on its own 15% hold-out of the training stamps, at most 50 epochs;
  ``--otrain-epochs`` lowers that cap).

After every epoch a callback scores the 20% validation stamps and records the MCC
(P(real) >= 0.5) and the wall time since the start of the fit (model building
included), minus the time of the callback's own scoring. Reported: the best
validation MCC of each recipe and when it was reached, and when otrain first passed
O'TRAIN's best MCC. Target: otrain reaches a higher MCC, and passes O'TRAIN's best
sooner than O'TRAIN reached it.

Each recipe runs once (a run is long, and MCC differences between seeds are part of
the result): re-run with another ``--seed`` to see the spread.

Usage::

    python benchmarks/time_to_accuracy.py          # 20-45 min on 2 cores: ~18 s an
                                                   # epoch for either recipe; O'TRAIN's
                                                   # still gained at epoch 30 in the
                                                   # first run, otrain's stops early
    python benchmarks/time_to_accuracy.py --quick  # 600 cutouts, 4 epochs each, ~2 min
    python benchmarks/time_to_accuracy.py --max-epochs 30 --otrain-epochs 30  # ~20 min
"""

import os
import sys
import time
from argparse import ArgumentParser

import numpy as np
from _common import (
    description,
    formatter,
    machine_text,
    markdown_table,
    say,
    training_files,
    verdict,
    workdir,
)

VALIDATION = 0.2
OTRAIN_DEFAULT_EPOCHS = 50


def _mcc_callback(keras, X_val, y_val, start, patience=None):
    from sklearn.metrics import matthews_corrcoef

    class ValidationMCC(keras.callbacks.Callback):
        """Validation MCC after each epoch, timed without the callback's own work.

        With ``patience``, training stops once that many epochs brought no better MCC.
        """

        def __init__(self):
            super().__init__()
            self.curve = []  # (epoch, seconds since start, MCC)
            self.stopped_early = False
            self._excluded = 0.0

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            proba = self.model.predict(X_val, batch_size=1024, verbose=0)
            mcc = matthews_corrcoef(y_val, np.asarray(proba)[:, 1] >= 0.5)
            self.curve.append((epoch + 1, now - start[0] - self._excluded, float(mcc)))
            self._excluded += time.perf_counter() - now
            say(f"    epoch {epoch + 1}: {self.curve[-1][1]:.0f} s, validation MCC {mcc:.3f}")
            best_epoch = _best(self.curve)[0]
            if patience is not None and epoch + 1 - best_epoch >= patience:
                self.model.stop_training = True
                self.stopped_early = True

    return ValidationMCC()


def train_otrain_recipe(keras, X, y, X_val, y_val, *, epochs, seed, patience):
    """O'TRAIN's train.py recipe; returns the callback's curve and whether it plateaued."""
    from otrain.networks import build_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    start = [time.perf_counter()]
    callback = _mcc_callback(keras, X_val, y_val, start, patience)
    model = build_model(X.shape[1:], normalisation="none", augment=False, dropout=0.3)
    model.compile(
        loss="categorical_crossentropy",
        optimizer=keras.optimizers.Adam(learning_rate=0.001),
        metrics=["accuracy"],
    )
    model.fit(
        X,
        keras.utils.to_categorical(y, 2),
        batch_size=1024,
        epochs=epochs,
        verbose=0,
        validation_data=(X_val, keras.utils.to_categorical(y_val, 2)),
        callbacks=[callback],
    )
    return callback.curve, callback.stopped_early


def train_otrain_default(keras, X, y, X_val, y_val, *, epochs, seed):
    """``CutoutClassifier()`` with its defaults; returns the callback's curve."""
    from otrain import CutoutClassifier

    keras.backend.clear_session()
    start = [time.perf_counter()]
    callback = _mcc_callback(keras, X_val, y_val, start)
    CutoutClassifier(epochs=epochs, random_state=seed, callbacks=[callback]).fit(X, y)
    return callback.curve


def _best(curve):
    """(epoch, seconds, MCC) of the first epoch reaching the best MCC."""
    best = max(m for _, _, m in curve)
    return next(point for point in curve if point[2] == best)


def main(argv=None):
    parser = ArgumentParser(description=description(__doc__), formatter_class=formatter())
    parser.add_argument("--n", type=int, default=None, help="cutouts generated (default 4000)")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="most epochs of O'TRAIN's recipe (default 100)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=10,
        help="O'TRAIN's recipe stops after this many epochs without a better MCC",
    )
    parser.add_argument(
        "--otrain-epochs",
        type=int,
        default=None,
        help=f"most epochs of otrain's recipe (default: its own, {OTRAIN_DEFAULT_EPOCHS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the fits")
    parser.add_argument("--workdir", default=None, help="folder for the generated files")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--quick", action="store_true", help="600 cutouts, 4 epochs each")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = args.n or 600
        args.max_epochs = args.max_epochs or 4
        args.otrain_epochs = args.otrain_epochs or 4
    n, max_epochs = args.n or 4000, args.max_epochs or 100
    otrain_epochs = args.otrain_epochs or OTRAIN_DEFAULT_EPOCHS
    if min(max_epochs, otrain_epochs, args.patience) < 1:
        parser.error("--max-epochs, --otrain-epochs and --patience must be at least 1")

    from sklearn.model_selection import train_test_split

    from otrain.datacube import build_datacube

    with workdir(args) as root:
        folder = training_files(root / f"training{n}", n, seed=args.seed)
        cube = build_datacube(folder)
    X, y = cube.cube, cube.labels
    train, valid = train_test_split(
        np.arange(len(y)), test_size=VALIDATION, stratify=y, random_state=args.seed
    )
    say(
        f"{len(y)} usable cutouts ({cube.n_true} real): {len(train)} to train on, "
        f"{len(valid)} to validate"
    )

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    data = (X[train], y[train], X[valid], y[valid])
    say(f"O'TRAIN's recipe, until {args.patience} epochs without a better MCC or {max_epochs}")
    base, plateau = train_otrain_recipe(
        keras, *data, epochs=max_epochs, seed=args.seed, patience=args.patience
    )
    say(f"otrain's default recipe, at most {otrain_epochs} epochs")
    ours = train_otrain_default(keras, *data, epochs=otrain_epochs, seed=args.seed)

    b_epoch, b_time, b_mcc = _best(base)
    o_epoch, o_time, o_mcc = _best(ours)
    passed = next(((e, t) for e, t, m in ours if m > b_mcc), None)
    ok = o_mcc > b_mcc and passed is not None and passed[1] < b_time
    rows = [
        [
            "O'TRAIN's recipe (raw pixels, batch 1024, Adam 1e-3)",
            f"{b_mcc:.3f}",
            f"{b_time:.0f} s (epoch {b_epoch})",
            "-",
            f"{base[-1][1]:.0f} s, {len(base)} epochs"
            + ("" if plateau else " (max reached: MCC may still rise)"),
            "",
        ],
        [
            "otrain's default recipe",
            f"{o_mcc:.3f}",
            f"{o_time:.0f} s (epoch {o_epoch})",
            "never" if passed is None else f"{passed[1]:.0f} s (epoch {passed[0]})",
            f"{ours[-1][1]:.0f} s, {len(ours)} epochs",
            verdict(ok),
        ],
    ]
    print(f"\nMachine: {machine_text()}\n")
    print(
        markdown_table(
            [
                "recipe",
                "best validation MCC",
                "reached at",
                "passed O'TRAIN's best at",
                "whole fit",
                "",
            ],
            rows,
        )
    )
    print(
        f"\n{len(train)} training and {len(valid)} validation stamps (64x64, seed "
        f"{args.seed}); times from the start of each fit, the per-epoch scoring left out. "
        "Target: otrain's best MCC higher, and O'TRAIN's best passed sooner than O'TRAIN "
        "reached it."
    )
    print("\nValidation MCC by epoch (seconds since the start of the fit):\n")
    curve_rows = []
    for i in range(max(len(base), len(ours))):
        cells = [str(i + 1)]
        for curve in (base, ours):
            cells.append(f"{curve[i][1]:.0f} s: {curve[i][2]:.3f}" if i < len(curve) else "")
        curve_rows.append(cells)
    print(markdown_table(["epoch", "O'TRAIN's recipe", "otrain default"], curve_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
