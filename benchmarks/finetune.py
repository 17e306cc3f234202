"""Does a head start help? Fine-tuning a trained network against training from scratch.

With 50, 100 and 200 labelled stamps, over several seeds, each way of starting is
trained by :class:`otrain.CutoutClassifier` with the default recipe otherwise and
scored on stamps it never saw:

``scratch``
    random weights (the default, ``init=None``);
``braai``
    ``init="braai"``: ZTF's braai d6_m9, shipped with otrain (learning rate 1e-3, the
    default, and 1e-4);
``synthetic``
    ``init=`` an otrain model trained on 1,200 synthetic SCI,REF,DIFF stamps
    (:func:`otrain.datasets.make_stamps`), built once and kept.

On real ZTF stamps, ``scratch, DIFF only`` trains on the difference image alone (the
same draws), to tell whether the triplets, with or without a start, beat it.

Two targets, both 63x63 SCI,REF,DIFF stamps (what braai takes):

``ztf``
    the 358 real ZTF alerts with a consensus label (``../shared/data/ztf-sample`` and
    ``ztf-brokers``: 318 real, 40 bogus); seed ``s`` draws a stratified training set
    of n stamps, the other 358 - n are the test set. **These labels come from braai
    d6_m9 and its successors** (ZTF's drb): braai's own scores agree with them by
    construction, so the ``braai`` rows on this target are an upper bound, not
    evidence. The ``synthetic`` start is the honest transfer test here.
``synthetic``
    generated stamps (another domain for braai, with true labels): seed ``s`` draws
    n stamps of a pool of 600; the test set is 600 other generated stamps.

Rows with 0 labels score the starting network as it is. Results per fit are kept in
``benchmarks/results/finetune/`` (a second run reuses them); the table gives, per
target, start and number of labels, the mean and the spread (max - min) over seeds
of the test AUC and MCC (at 0.5), and the mean fit time.

Usage::

    python benchmarks/finetune.py                  # both targets, 3 seeds (~40 min, 2 cores)
    python benchmarks/finetune.py --target synthetic --seeds 5
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "finetune"
CHANNELS = ("SCI", "REF", "DIFF")
SIZES = (50, 100, 200)

# name: (init, extra CutoutClassifier settings); "synthetic" is filled in at run time.
STARTS = {
    "scratch": (None, {}),
    # The difference image alone, from scratch (otrain's default channels): what the
    # triplets are up against.
    "scratch, DIFF only": (None, {}),
    "braai": ("braai", {}),
    "braai, lr 1e-4": ("braai", {"learning_rate": 1e-4}),
    "synthetic": ("synthetic", {}),
}
# The starts measured on each target (braai's own domain is ZTF: no synthetic-on-
# synthetic transfer; the learning rates are compared where the labels are true).
TARGETS = {
    "ztf": ("scratch", "scratch, DIFF only", "braai", "synthetic"),
    "synthetic": ("scratch", "braai", "braai, lr 1e-4"),
}


def ztf_stamps():
    """The consensus-labelled real ZTF alerts, SCI,REF,DIFF (as ``recipe.py`` reads them)."""
    from recipe import real_data  # beside this script

    X, y, _ = real_data(CHANNELS)
    return X, y


def synthetic_stamps(n, seed):
    from otrain.datasets import make_stamps

    X, y, _ = make_stamps(n // 2, n - n // 2, size=63, triplets=True, random_state=seed)
    return X, y


def pretrained_synthetic():
    """An otrain model trained on 1,200 synthetic triplets, written once."""
    path = RESULTS / "pretrained_synthetic.keras"
    if not path.exists():
        from otrain import CutoutClassifier
        from otrain.model_files import save_model

        X, y = synthetic_stamps(1200, 3)
        print("training the synthetic start on 1,200 stamps ...", flush=True)
        clf = CutoutClassifier(random_state=3).fit(X, y, channels=CHANNELS)
        RESULTS.mkdir(parents=True, exist_ok=True)
        save_model(clf, path)
    return path


def draw(y, n, seed):
    """A stratified draw of n indices of y, and the others."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    train, rest = train_test_split(index, train_size=n, stratify=y, random_state=seed)
    return np.sort(train), np.sort(rest)


def run(target, start, n, seed, data):
    """Fit (or reuse) one run; returns the test labels, P(real) and the fit's facts."""
    from otrain import CutoutClassifier
    from otrain.model_files import load_model

    path = RESULTS / f"{target}__{start.replace(', ', '_').replace(' ', '')}__n{n}__seed{seed}.npz"
    if path.exists():
        with np.load(path) as stored:
            return {k: stored[k] for k in stored.files}
    init, settings = STARTS[start]
    if init == "synthetic":
        init = str(pretrained_synthetic())
    (X_pool, y_pool), (X_test, y_test) = data
    out = {"y": y_test}
    start_time = time.perf_counter()
    if n == 0:
        if X_test is None:  # no labels used: the whole pool is unseen
            X_test, out["y"] = X_pool, y_pool
        clf = load_model(init if init != "braai" else _braai_file())
        out.update(n_epochs=0, n_steps=0)
    else:
        train, rest = draw(y_pool, n, seed)
        if X_test is None:  # the pool's other stamps are the test set
            X_test, out["y"] = X_pool[rest], y_pool[rest]
        clf = CutoutClassifier(init=init, random_state=seed, **settings)
        channels = CHANNELS
        if start.endswith("DIFF only"):
            channels = ("DIFF",)
            X_pool, X_test = X_pool[..., 2:], X_test[..., 2:]
        clf.fit(X_pool[train], y_pool[train], channels=channels)
        out.update(n_epochs=clf.n_epochs_, n_steps=clf.n_steps_)
    out["fit_seconds"] = time.perf_counter() - start_time
    out["p"] = clf.predict_proba(X_test)[:, 1]
    RESULTS.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.npz")
    np.savez(partial, **out)
    os.replace(partial, path)
    return out


def _braai_file():
    from otrain.pretrained import PRETRAINED

    return PRETRAINED["braai"]["file"]


def summary(outs):
    from sklearn.metrics import matthews_corrcoef, roc_auc_score

    aucs = [roc_auc_score(o["y"], o["p"]) for o in outs]
    mccs = [matthews_corrcoef(o["y"], o["p"] >= 0.5) for o in outs]
    return {
        "auc": (float(np.mean(aucs)), float(np.ptp(aucs))),
        "mcc": (float(np.mean(mccs)), float(np.ptp(mccs))),
        "epochs": float(np.mean([o["n_epochs"] for o in outs])),
        "seconds": float(np.mean([o["fit_seconds"] for o in outs])),
        "aucs": [round(float(a), 4) for a in aucs],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=tuple(TARGETS), nargs="*", default=list(TARGETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=list(SIZES), help="numbers of labels"
    )
    args = parser.parse_args(argv)
    print(
        f"{args.seeds} seeds; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n", flush=True
    )
    rows = []
    for target in args.target:
        if target == "ztf":
            data = (ztf_stamps(), (None, None))
        else:
            data = (synthetic_stamps(600, 1), synthetic_stamps(600, 2))
        zero_shot = {}  # one row per starting network, scored as it is
        for start in TARGETS[target]:
            init = STARTS[start][0]
            if init is not None and init not in zero_shot:
                zero_shot[init] = run(target, start, 0, 0, data)
                rows.append((target, init, 0, summary([zero_shot[init]]), 1))
        for n in args.sizes:
            for start in TARGETS[target]:
                outs = []
                for seed in range(args.seeds):
                    outs.append(run(target, start, n, seed, data))
                    print(
                        f"  {target}, {start}, {n} labels, seed {seed}: AUC "
                        f"{summary(outs[-1:])['auc'][0]:.4f}, "
                        f"{float(outs[-1]['fit_seconds']):.0f} s",
                        flush=True,
                    )
                rows.append((target, start, n, summary(outs), len(outs)))
    print("\n| target | start | labels | seeds | AUC mean (spread) | MCC mean (spread) | "
          "epochs | fit s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for target, start, n, s, seeds in rows:
        print(
            f"| {target} | {start} | {n} | {seeds} | {s['auc'][0]:.4f} ({s['auc'][1]:.4f}) | "
            f"{s['mcc'][0]:.3f} ({s['mcc'][1]:.3f}) | {s['epochs']:.0f} | {s['seconds']:.0f} |"
        )
    print("\nper seed AUC:")
    for target, start, n, s, _ in rows:
        print(f"  {target}, {start}, {n}: {s['aucs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
