"""Which training recipe learns on real stamps, and how far it depends on the seed.

Cross-validates recipes of :class:`otrain.CutoutClassifier` on the real ZTF alerts of
``../shared/data/ztf-sample`` and ``ztf-brokers`` with a consensus label (both of
ZTF's classifiers agree: 318 real, 40 bogus; EDGE stamps included, they are
NaN-padded), over several seeds: seed ``s`` splits the stamps into ``--folds``
stratified folds of its own and trains each fold's model with its own seed. Prints,
per recipe, the mean and the spread (max - min over seeds of the seed's
cross-validated AUC and MCC), the epochs and gradient steps run and the fit time.
Beside the AUC spread stands the test-set noise: the spread the same scores give on
as many stratified bootstrap resamples of the 358 stamps as there are seeds, i.e.
what test sets of this size alone make the AUC vary by. A recipe whose spread over
seeds is no larger is as stable as this set can tell.

Every fold's held-out P(real) (raw and, for ensembles, calibrated on the
out-of-fold scores of its training part), its Monte-Carlo dropout spread and its
ensemble disagreement are kept in ``benchmarks/results/recipe/`` (one ``.npz`` per
recipe, seed and fold): a second run reuses them, and ``benchmarks/reliability.py``
reads them to measure calibration and uncertainty.

Only 40 stamps are bogus, labelled by machines: the spread says how far any number
here can be trusted, and the recipes are compared, not tuned to it.

Usage::

    python benchmarks/recipe.py                       # every recipe, 5 seeds, 3 folds
    python benchmarks/recipe.py --only "vgg6 DIFF" --seeds 3
    python benchmarks/recipe.py --data synthetic      # generated stamps, as a check
"""

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
RESULTS = HERE / "results" / "recipe"

# name: (channels, CutoutClassifier settings). Defaults otherwise: robust
# normalisation, all eight rotations and flips per epoch, balanced classes, 30 epochs
# at most with early stopping.
RECIPES = {
    "vgg6 DIFF, one network": (("DIFF",), dict(network="vgg6", ensemble=1)),
    "vgg6 DIFF, ensemble of 3": (("DIFF",), dict(network="vgg6", ensemble=3)),
    "vgg6 SCI,REF,DIFF, one network": (("SCI", "REF", "DIFF"), dict(network="vgg6", ensemble=1)),
    "vgg6 SCI,REF,DIFF, ensemble of 3": (("SCI", "REF", "DIFF"), dict(network="vgg6", ensemble=3)),
    "otrain DIFF, one network": (("DIFF",), dict(network="otrain", ensemble=1)),
    # Early stopping watches 15 % of a few hundred stamps (a handful of bogus ones):
    # the same network trained for a fixed 15 epochs on all of them.
    "vgg6 DIFF, one network, 15 epochs, no early stopping": (
        ("DIFF",),
        dict(network="vgg6", ensemble=1, epochs=15, validation_fraction=0.0),
    ),
    # Averaged weights: Adam keeps an exponential moving average of the weights
    # (momentum 0.99, about 100 steps), which early stopping watches and keeps.
    "vgg6 DIFF, one network, EMA 0.99": (
        ("DIFF",),
        dict(
            network="vgg6",
            ensemble=1,
            optimizer="ema_adam",
            callbacks="swap_ema",
            callbacks__swap_on_epoch=True,
        ),
    ),
}


def _settings(settings):
    """The recipe's settings, with the averaged-weights optimizer and callback built."""
    import keras

    @keras.saving.register_keras_serializable(package="benchmarks")
    class EMAAdam(keras.optimizers.Adam):
        def __init__(self, learning_rate=1e-3, **kwargs):
            super().__init__(learning_rate=learning_rate, use_ema=True, ema_momentum=0.99)

    settings = dict(settings)
    if settings.get("optimizer") == "ema_adam":
        settings["optimizer"] = EMAAdam
    if settings.get("callbacks") == "swap_ema":
        settings["callbacks"] = keras.callbacks.SwapEMAWeights
    return settings


def real_data(channels):
    """Stamps, labels and ids of the consensus-labelled real ZTF alerts."""
    from otrain import load_cutouts

    paths, labels = [], []
    for folder in ("ztf-sample", "ztf-brokers"):
        with open(DATA / folder / "index.csv") as handle:
            for row in csv.DictReader(handle):
                if row["label"] in ("0", "1"):
                    paths.append(str(DATA / folder / row["file"]))
                    labels.append(int(row["label"]))
    X, _, _ = load_cutouts(paths, channels=channels)
    return X, np.array(labels), paths


def synthetic_data(channels, n=600):
    from otrain.datasets import make_stamps

    X, y, _ = make_stamps(n // 2, n - n // 2, random_state=0)
    return X, y, [f"synthetic_{i}" for i in range(len(y))]


def fit_fold(name, settings, X, y, train, test, seed, mc_samples):
    """Fit on ``train``, score ``test``; everything the benchmarks report."""
    from otrain import CutoutClassifier

    clf = CutoutClassifier(random_state=seed, **_settings(settings))
    start = time.perf_counter()
    clf.fit(X[train], y[train])
    seconds = time.perf_counter() - start
    out = {
        "test": test,
        "y": y[test],
        "p_raw": clf.predict_proba(X[test])[:, 1],
        "networks": clf.predict_proba_networks(X[test]),
        "fit_seconds": seconds,
        "n_epochs": clf.n_epochs_,
        "n_steps": clf.n_steps_,
        "stopped_early": clf.stopped_early_,
    }
    if getattr(clf, "oof_p_real_", None) is not None:
        for method in ("sigmoid", "isotonic"):
            clf.calibrate(method=method)
            out[f"p_{method}"] = clf.predict_proba(X[test])[:, 1]
        clf.calibration_ = None
    _, spread = clf.predict_proba_mc(X[test], mc_samples, random_state=seed)
    out["mc_spread"] = spread[:, 1]
    return out


def run_recipe(name, data, seeds, folds, mc_samples, tag):
    from sklearn.model_selection import StratifiedKFold

    channels, settings = RECIPES[name]
    X, y, _ = data
    results = []
    for seed in seeds:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        for fold, (train, test) in enumerate(splitter.split(X, y)):
            key = f"{tag}__{_slug(name)}__seed{seed}__fold{fold}of{folds}.npz"
            path = RESULTS / key
            if path.exists():
                with np.load(path) as stored:
                    out = {k: stored[k] for k in stored.files}
            else:
                out = fit_fold(name, settings, X, y, train, test, 100 * seed + fold, mc_samples)
                RESULTS.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".part.npz")
                np.savez(partial, **out)
                os.replace(partial, path)
            out["seed"] = seed
            results.append(out)
            print(
                f"  {name}, seed {seed}, fold {fold}: {float(out['fit_seconds']):.0f} s, "
                f"{int(out['n_epochs'])} epochs",
                flush=True,
            )
    return results


def summarise(results):
    """Per seed: AUC and MCC of the pooled out-of-fold P(real); then mean and spread."""
    from sklearn.metrics import matthews_corrcoef, roc_auc_score

    per_seed = {}
    for out in results:
        per_seed.setdefault(int(out["seed"]), []).append(out)
    aucs, mccs, noise = [], [], []
    for outs in per_seed.values():
        y = np.concatenate([o["y"] for o in outs])
        p = np.concatenate([o["p_raw"] for o in outs])
        aucs.append(roc_auc_score(y, p))
        mccs.append(matthews_corrcoef(y, p >= 0.5))
        noise.append(test_set_noise(y, p, len(per_seed)))
    return {
        # The spread that test sets of this size alone give: of the same scores,
        # on as many stratified bootstrap test sets as there are seeds.
        "auc_noise_spread": float(np.mean(noise)),
        "seeds": len(per_seed),
        "auc_mean": float(np.mean(aucs)),
        "auc_spread": float(np.ptp(aucs)),
        "mcc_mean": float(np.mean(mccs)),
        "mcc_spread": float(np.ptp(mccs)),
        "aucs": [round(float(a), 4) for a in aucs],
        "mccs": [round(float(m), 3) for m in mccs],
        "epochs": float(np.mean([o["n_epochs"] for o in results])),
        "steps": float(np.mean([o["n_steps"] for o in results])),
        "fit_seconds": float(np.mean([o["fit_seconds"] for o in results])),
    }


def test_set_noise(y, p, n_sets, n_boot=1000, seed=0):
    """Expected max - min of the AUC over ``n_sets`` bootstrap test sets of (y, p)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    real, bogus = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    aucs = np.array(
        [
            roc_auc_score(
                np.r_[np.ones(len(real)), np.zeros(len(bogus))],
                np.r_[p[rng.choice(real, len(real))], p[rng.choice(bogus, len(bogus))]],
            )
            for _ in range(n_boot)
        ]
    )
    if n_sets < 2:
        return 0.0
    return float(np.mean([np.ptp(rng.choice(aucs, n_sets)) for _ in range(2000)]))


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("ztf", "synthetic"), default="ztf")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--only", nargs="*", help="substrings of recipe names to run")
    args = parser.parse_args(argv)

    names = [n for n in RECIPES if not args.only or any(s in n for s in args.only)]
    print(
        f"data: {args.data}; {args.seeds} seeds x {args.folds}-fold stratified CV; "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n",
        flush=True,
    )
    summaries = {}
    cache = {}
    for name in names:
        channels = RECIPES[name][0]
        if channels not in cache:
            load = real_data if args.data == "ztf" else synthetic_data
            cache[channels] = load(channels)
        results = run_recipe(
            name, cache[channels], range(args.seeds), args.folds, args.mc_samples, args.data
        )
        summaries[name] = summarise(results)
    X, y, _ = next(iter(cache.values()))
    print(f"\n{len(y)} stamps: {int(y.sum())} real, {int(len(y) - y.sum())} bogus\n")
    print("| recipe | seeds | AUC mean | AUC spread | test-set noise | MCC mean | MCC spread | "
          "epochs | gradient steps | fit s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in summaries.items():
        print(
            f"| {name} | {s['seeds']} | {s['auc_mean']:.4f} | {s['auc_spread']:.4f} | "
            f"{s['auc_noise_spread']:.4f} | "
            f"{s['mcc_mean']:.3f} | {s['mcc_spread']:.3f} | {s['epochs']:.1f} | "
            f"{s['steps']:.0f} | {s['fit_seconds']:.0f} |"
        )
    print("\nper seed (AUC / MCC):")
    for name, s in summaries.items():
        print(f"  {name}: {s['aucs']} / {s['mccs']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.data}_summary.json").write_text(json.dumps(summaries, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
