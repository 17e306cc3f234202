"""Row 4 of issue 5: training throughput of otrain's recipe against a plain Keras fit.

Both sides train the default network (O'TRAIN's, :func:`otrain.networks.otrain_network`)
on the same in-memory stamps (2,000 generated 64x64 DIFF stamps, half real), with
batches of 64 and Adam at 1e-3, in the same process, alternating:

* **otrain**: ``CutoutClassifier(epochs=E)``, i.e. the default recipe: robust
  normalisation and random rotations/flips as layers of the model, balanced class
  weights, a stratified 15% validation hold-out evaluated each epoch, early stopping;
* **plain**: ``keras.Model.fit`` of the same network built by
  :func:`otrain.networks.build_model` with ``normalisation="none"`` (raw pixels; NaN
  set to 0, which costs one ``where``) and ``augment=False``, on as many stamps as
  otrain trains on, no validation, no class weights.

Throughput is training cutouts per second in the steady state: epochs 2..E only (the
first one traces and compiles the graph), and the time of otrain's validation pass
(``on_test_begin`` to ``on_test_end``) taken out; the cost of that pass is shown
beside it. Target: otrain within 10% of the plain fit (ratio >= 0.90).

``--breakdown`` adds plain fits with otrain's normalisation alone and with
normalisation and augmentation, to show what each layer costs.

Usage::

    python benchmarks/training.py               # ~6 min on 2 cores (3 repeats, 4 epochs)
    python benchmarks/training.py --quick       # 400 stamps, 3 epochs, 1 repeat, ~1 min
    python benchmarks/training.py --breakdown   # ~12 min
"""

import os
import sys
import time
from argparse import ArgumentParser

from _common import (
    description,
    formatter,
    machine_text,
    markdown_table,
    median,
    paired_ratio,
    say,
    verdict,
)

TARGET = 0.90
BATCH = 64


def _timer_class(keras):
    class EpochTimer(keras.callbacks.Callback):
        """Wall time of each epoch and of the validation pass inside it."""

        def __init__(self):
            super().__init__()
            self.epochs = []  # (epoch seconds, validation seconds)

        def on_epoch_begin(self, epoch, logs=None):
            self._validation = 0.0
            self._start = time.perf_counter()

        def on_test_begin(self, logs=None):
            self._test_start = time.perf_counter()

        def on_test_end(self, logs=None):
            self._validation += time.perf_counter() - self._test_start

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((time.perf_counter() - self._start, self._validation))

    return EpochTimer


def _steady(timer, n_train):
    """(train cutouts/s, validation s per epoch) over epochs 2..E."""
    epochs = timer.epochs[1:]
    train = sum(total - valid for total, valid in epochs)
    return n_train * len(epochs) / train, sum(v for _, v in epochs) / len(epochs)


def main(argv=None):
    parser = ArgumentParser(description=description(__doc__), formatter_class=formatter())
    parser.add_argument("--n", type=int, default=None, help="stamps (default 2000)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="fits of each side")
    parser.add_argument("--breakdown", action="store_true", help="also time layer by layer")
    parser.add_argument("--quick", action="store_true", help="400 stamps, 3 epochs, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = args.n or 400
        args.epochs = args.epochs or 3
        args.repeats = 1
    n, epochs = args.n or 2000, args.epochs or 4
    if epochs < 2 or args.repeats < 1:
        parser.error("--epochs must be at least 2 (the first is not timed) and --repeats >= 1")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from otrain import CutoutClassifier
    from otrain.datasets import make_stamps
    from otrain.networks import build_model

    EpochTimer = _timer_class(keras)
    X, y, _ = make_stamps(n // 2, n - n // 2, random_state=0)
    n_train = n - int(round(0.15 * n))  # what CutoutClassifier trains on (15% held out)
    say(f"{n} stamps {X.shape[1:]}, {n_train} trained on per epoch, {epochs} epochs per fit")

    def fit_otrain(seed):
        keras.backend.clear_session()
        timer = EpochTimer()
        CutoutClassifier(epochs=epochs, random_state=seed, callbacks=[timer]).fit(X, y)
        if len(timer.epochs) != epochs:
            raise RuntimeError(f"otrain stopped after {len(timer.epochs)} epochs")
        return _steady(timer, n_train)

    def fit_plain(seed, normalisation="none", augment=False):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build_model(X.shape[1:], normalisation=normalisation, augment=augment)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        timer = EpochTimer()
        model.fit(
            X[:n_train], y[:n_train], batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[timer]
        )
        return _steady(timer, n_train)

    sides = {"plain keras fit": fit_plain, "otrain default recipe": fit_otrain}
    if args.breakdown:
        sides["plain + robust normalisation"] = lambda s: fit_plain(s, "robust")
        sides["plain + robust + augmentation"] = lambda s: fit_plain(s, "robust", True)
    names = list(sides)
    results = {name: [] for name in names}
    for i in range(args.repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            rate, valid = sides[name](i)
            results[name].append((rate, valid))
            say(
                f"  fit {i + 1}/{args.repeats}: {name}: {rate:.1f} cutouts/s "
                f"({time.perf_counter() - start:.0f} s in all)"
            )

    plain = median([r for r, _ in results["plain keras fit"]])
    ours = median([r for r, _ in results["otrain default recipe"]])
    valid = median([v for _, v in results["otrain default recipe"]])
    epoch_train = n_train / ours
    ratio = ours / plain
    paired = paired_ratio(
        [r for r, _ in results["otrain default recipe"]], [r for r, _ in results["plain keras fit"]]
    )
    rows = [
        [
            "training, default network and recipe (augmentation on)",
            f"{plain:.1f} cutouts/s",
            f"{ours:.1f} cutouts/s",
            f"{ratio:.2f}",
            f"{paired:.2f}",
            f">= {TARGET:.2f}",
            verdict(ratio >= TARGET),
            f"validation pass: {valid:.2f} s/epoch (+{100 * valid / epoch_train:.0f}%), "
            "not counted",
        ]
    ]
    for name in names[2:]:
        rate = median([r for r, _ in results[name]])
        pair = paired_ratio([r for r, _ in results[name]], [r for r, _ in results[names[0]]])
        rows.append([f"breakdown: {name}", f"{plain:.1f}", f"{rate:.1f}", f"{rate / plain:.2f}"])
        rows[-1] += [f"{pair:.2f}", "", "", ""]
    print(f"\nMachine: {machine_text()}\n")
    print(
        markdown_table(
            ["what", "plain keras fit", "otrain", "ratio", "paired", "target", "", "note"],
            rows,
        )
    )
    print(
        f"\n{n} stamps 64x64 ({n_train} trained on), batch {BATCH}, medians of "
        f"{args.repeats} fits alternating, epochs 2..{epochs} of each; ratio = otrain / "
        "plain (of the medians; paired: median of the ratios of back-to-back fits)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
