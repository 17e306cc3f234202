"""Issue 15: how many labels active learning saves, with a simulated labeller.

The true labels play the labeller. A set is split once per seed into a pool (the
"unlabelled" candidates) and a test set (stratified, 30%). Each strategy starts from
the same ``--start`` random labels of the pool (at least one of each class), then in
rounds: train a fresh classifier on the labels so far, measure MCC and ROC AUC on
the test set, rank the rest of the pool with
:func:`otrain.active_learning.rank_candidates`, and "label" the ``--step`` first.
The reference is the same recipe trained on the whole pool. The result: for each
strategy, the number of labels at which the test MCC first reaches 95% of the
whole-pool MCC and stays there in every later round, per seed, and the curves, plotted.

Sets:

* ``synthetic``: :func:`otrain.datasets.make_stamps`, 1,000 DIFF stamps of 32x32, 15%
  real by default (a candidate stream is mostly bogus; ``--real-fraction``), seeded;
* ``ztf``: the real stamps of ``../shared/data/ztf-sample`` and ``ztf-brokers`` with a
  consensus label (318 real, 40 bogus), SCI/REF/DIFF centre-cropped to 32x32.

The recipe is small on purpose (2 shared CPU cores): a two-layer network of 8 and 16
filters, 8 epochs and at least 150 gradient steps (fewer than 256 labels are repeated up
to 256 stamps), batch 32, no validation split, balanced class weights; MC dropout with
10 draws. MCC is taken at P(real) >= 0.5. With the defaults (3 seeds, 20 random labels,
rounds of 20 up to 200) a set takes 10-20 minutes on 2 shared cores.

Usage::

    python benchmarks/active_learning.py --dataset synthetic --outdir al-out
    python benchmarks/active_learning.py --dataset ztf --outdir al-out
    python benchmarks/active_learning.py --plot al-out          # the figure from both
"""

import argparse
import csv
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"
STRATEGIES = ("random", "uncertainty", "mc-dropout")


def small_network(inputs, *, dropout=0.3):
    """Two small convolution blocks, then dropout (the MC-dropout layer)."""
    import keras

    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    return keras.layers.Dropout(dropout)(x)


def load_set(name, seed, real_fraction=0.15):
    if name == "synthetic":
        from otrain.datasets import make_stamps

        n_real = round(1000 * real_fraction)
        X, y, _ = make_stamps(n_real, 1000 - n_real, size=32, random_state=seed)
        return X, y, ("DIFF",)
    from otrain.cutouts import load_cutouts

    paths, labels = [], []
    for sample in ("ztf-sample", "ztf-brokers"):
        with open(SHARED / sample / "index.csv") as handle:
            for row in csv.DictReader(handle):
                if row["label"] in ("0", "1"):
                    paths.append(str(SHARED / sample / row["file"]))
                    labels.append(int(row["label"]))
    channels = ("SCI", "REF", "DIFF")
    X, table = load_cutouts(paths, channels=channels, cutout_size=32)[:2]
    keep = {str(p): i for i, p in enumerate(paths)}
    y = np.array([labels[keep[str(p)]] for p in table["path"]])
    return X, y, channels


def split(y, seed, test_fraction=0.3):
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    return train_test_split(index, test_size=test_fraction, stratify=y, random_state=seed)


def fit(X, y, seed, epochs, min_steps):
    from otrain import CutoutClassifier

    # A fixed number of epochs gives 20 labels a few dozen gradient steps and 700 labels
    # hundreds: every fit gets at least min_steps. A small set is repeated up to 256
    # stamps first (each copy augmented differently), so that those steps come in a few
    # epochs rather than hundreds of one-batch epochs, each with Keras' overhead.
    if len(y) < 256:
        repeats = -(-256 // len(y))
        X, y = np.tile(X, (repeats, 1, 1, 1)), np.tile(y, repeats)
    batches = -(-len(y) // 32)
    epochs = max(epochs, -(-min_steps // batches))
    return CutoutClassifier(
        network=small_network,
        epochs=epochs,
        batch_size=32,
        learning_rate=3e-3,
        validation_fraction=0.0,
        random_state=seed,
    ).fit(X, y)


def score(classifier, X, y):
    from sklearn.metrics import matthews_corrcoef, roc_auc_score

    p = classifier.predict_proba(X)[:, 1]
    return float(matthews_corrcoef(y, p >= 0.5)), float(roc_auc_score(y, p))


def first_labels(y_pool, n, rng):
    """``n`` random positions of the pool holding both classes (drawn again if not)."""
    while True:
        chosen = rng.choice(len(y_pool), n, replace=False)
        if len(set(y_pool[chosen])) == 2:
            return chosen


def run(args, path):
    """Run every seed; the results so far are written to ``path`` after each seed."""
    import keras
    import tensorflow as tf

    from otrain.active_learning import rank_candidates

    # Each round builds a new model: TensorFlow's retracing notices say so at length.
    tf.get_logger().setLevel("ERROR")

    results = {"settings": vars(args).copy(), "seeds": {}}
    for seed in args.seeds:
        X, y, channels = load_set(args.dataset, seed, args.real_fraction)
        pool, test = split(y, seed)
        Xp, yp, Xt, yt = X[pool], y[pool], X[test], y[test]
        print(
            f"seed {seed}: pool {len(yp)} ({yp.sum()} real), test {len(yt)} ({yt.sum()} real)",
            flush=True,
        )
        start = time.perf_counter()
        full = score(fit(Xp, yp, seed, args.epochs, args.min_steps), Xt, yt)
        keras.backend.clear_session()
        print(
            f"  whole pool: MCC {full[0]:.3f}, AUC {full[1]:.3f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        seed_result = {"full": full, "curves": {}}
        first = first_labels(yp, args.start, np.random.default_rng(seed))
        for strategy in STRATEGIES:
            labelled = list(first)
            curve = []
            while True:
                chosen = np.array(labelled)
                classifier = fit(Xp[chosen], yp[chosen], seed, args.epochs, args.min_steps)
                mcc, auc = score(classifier, Xt, yt)
                curve.append((len(labelled), mcc, auc, int(yp[chosen].sum())))
                if len(labelled) >= min(args.max_labels, len(yp)):
                    break
                rest = np.setdiff1d(np.arange(len(yp)), chosen)
                ranking = rank_candidates(
                    classifier,
                    Xp[rest],
                    strategy=strategy,
                    mc_samples=args.mc_samples,
                    random_state=seed + len(labelled),
                )
                labelled.extend(rest[ranking.order[: args.step]].tolist())
                keras.backend.clear_session()
            seed_result["curves"][strategy] = curve
            reached = labels_to_reach(curve, 0.95 * full[0])
            print(
                f"  {strategy:12s} MCC {curve[-1][1]:.3f} at {curve[-1][0]} labels; "
                f"95% of the whole-pool MCC at {reached} labels "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        results["seeds"][str(seed)] = seed_result
        path.write_text(json.dumps(results, indent=1))
    return results


def labels_to_reach(curve, target):
    """Labels from which the test MCC stays at or above ``target`` in every later round.

    "Stays": on a test set of a few hundred stamps one lucky round can cross the target
    by chance (MCC at a fixed threshold is noisy); the count that matters is the one
    after which a labeller could stop.
    """
    reached = None
    for n, mcc, _, _ in curve:
        if mcc >= target:
            reached = n if reached is None else reached
        else:
            reached = None
    return reached


def summary(results):
    lines = []
    name = results["settings"]["dataset"]
    lines.append(f"\n### {name}: labels from which the MCC stays >= 95% of the whole-pool MCC\n")
    lines.append(
        "| strategy | " + " | ".join(f"seed {s}" for s in results["seeds"]) + " | median |"
    )
    lines.append("| --- |" + " --- |" * (len(results["seeds"]) + 1))
    medians = {}
    for strategy in STRATEGIES:
        values = []
        for seed_result in results["seeds"].values():
            values.append(
                labels_to_reach(seed_result["curves"][strategy], 0.95 * seed_result["full"][0])
            )
        finite = [v if v is not None else np.inf for v in values]
        medians[strategy] = float(np.median(finite))
        shown = ["not reached" if v is None else str(v) for v in values]
        median = "not reached" if np.isinf(medians[strategy]) else f"{medians[strategy]:g}"
        lines.append(f"| {strategy} | " + " | ".join(shown) + f" | {median} |")
    budgets = sorted({c[0] for c in next(iter(results["seeds"].values()))["curves"]["random"]})
    budgets = [b for b in budgets if b in (60, 100, 200)] or budgets[-1:]
    lines.append(
        "\n| strategy | "
        + " | ".join(f"MCC at {b} labels" for b in budgets)
        + " | real among the labels at the end |"
    )
    lines.append("| --- |" + " --- |" * (len(budgets) + 1))
    for strategy in STRATEGIES:
        cells = []
        for b in budgets:
            values = [
                dict((c[0], c[1]) for c in r["curves"][strategy])[b]
                for r in results["seeds"].values()
            ]
            cells.append(f"{np.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        reals = [r["curves"][strategy][-1][3] for r in results["seeds"].values()]
        lines.append(f"| {strategy} | " + " | ".join(cells) + f" | {', '.join(map(str, reals))} |")
    lines.append("\n(median over seeds, min-max in brackets)")
    fulls = [r["full"][0] for r in results["seeds"].values()]
    lines.append(f"\nwhole-pool MCC per seed: {', '.join(f'{m:.3f}' for m in fulls)}")
    best = min((s for s in STRATEGIES if s != "random"), key=lambda s: medians[s])
    if np.isfinite(medians["random"]) and np.isfinite(medians[best]):
        lines.append(
            f"best strategy: {best}, {medians[best] / medians['random']:.0%} of the "
            "labels random order needs (medians)"
        )
    return "\n".join(lines)


def plot(outdir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(Path(outdir).glob("active_learning_*.json"))
    fig, axes = plt.subplots(1, len(files), figsize=(6 * len(files), 4.4), squeeze=False)
    colours = {"random": "0.45", "uncertainty": "tab:blue", "mc-dropout": "tab:orange"}
    for ax, path in zip(axes[0], files, strict=True):
        results = json.loads(path.read_text())
        for strategy in STRATEGIES:
            curves = [np.array(r["curves"][strategy]) for r in results["seeds"].values()]
            n = curves[0][:, 0]
            mcc = np.array([c[:, 1] for c in curves])
            ax.plot(n, np.median(mcc, axis=0), color=colours[strategy], label=strategy)
            ax.fill_between(
                n,
                mcc.min(axis=0),
                mcc.max(axis=0),
                color=colours[strategy],
                alpha=0.15,
                linewidth=0,
            )
        target = 0.95 * np.median([r["full"][0] for r in results["seeds"].values()])
        ax.axhline(target, color="k", linestyle=":", linewidth=1, label="95% of the whole-pool MCC")
        settings = results["settings"]
        ax.set_title(
            f"{settings['dataset']}: {len(results['seeds'])} seeds (line: median, band: min-max)"
        )
        ax.set_xlabel("labels")
        ax.set_ylabel("test MCC")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(outdir) / "active_learning.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("synthetic", "ztf"), default="synthetic")
    parser.add_argument(
        "--real-fraction", type=float, default=0.15, help="synthetic: share of real stamps"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--start", type=int, default=20, help="random labels to start from")
    parser.add_argument("--step", type=int, default=20, help="labels added per round")
    parser.add_argument("--max-labels", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--min-steps",
        type=int,
        default=250,
        help="gradient steps of every fit at least (more epochs on few labels)",
    )
    parser.add_argument("--mc-samples", type=int, default=10)
    parser.add_argument("--outdir", default="active-learning-results")
    parser.add_argument(
        "--plot",
        metavar="OUTDIR",
        default=None,
        help="only draw the figure from the JSON files of OUTDIR",
    )
    parser.add_argument(
        "--summary", metavar="JSON", default=None, help="only print the tables of a results file"
    )
    args = parser.parse_args()
    if args.plot:
        plot(args.plot)
        return
    if args.summary:
        print(summary(json.loads(Path(args.summary).read_text())))
        return
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    name = args.dataset
    if name == "synthetic" and args.real_fraction != 0.15:
        name += f"_{round(100 * args.real_fraction)}pc_real"
    path = outdir / f"active_learning_{name}.json"
    start = time.perf_counter()
    results = run(args, path)
    results["seconds"] = time.perf_counter() - start
    path.write_text(json.dumps(results, indent=1))
    print(summary(results))
    print(f"\n{results['seconds'] / 60:.1f} min; results in {path}")


if __name__ == "__main__":
    main()
