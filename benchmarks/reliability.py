"""How far P(real) and its uncertainties can be trusted on real stamps.

Reads the held-out predictions that ``benchmarks/recipe.py`` keeps (real ZTF alerts of
``ztf-sample`` + ``ztf-brokers``, several seeds, cross-validated; run it first) and
reports, per recipe:

* calibration: expected calibration error (ECE, 10 equal-width bins) and Brier score
  of the raw P(real), and for ensembles of P(real) calibrated on the out-of-fold
  scores of each fold's training part (sigmoid and isotonic), as mean and spread
  (min - max) over the folds and seeds: with 358 stamps an ECE is itself noisy;
* uncertainty: how well the Monte-Carlo dropout spread (``label1_std``) and the
  ensemble's disagreement (``label1_ensemble_std``) point at the mistakes (AUC of
  the spread against "misclassified at 0.5", pooled per seed), and the error rate in
  the decile of highest spread against the overall error rate;

and draws a reliability diagram (``benchmarks/results/reliability.png``).

Usage::

    python benchmarks/recipe.py --seeds 3
    python benchmarks/reliability.py
"""

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "recipe"


def ece(y, p, bins=10):
    """Expected calibration error with ``bins`` equal-width bins of P(real)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            total += chosen.sum() * abs(p[chosen].mean() - y[chosen].mean())
    return total / len(y)


def load(tag):
    """Stored folds, grouped by recipe: {recipe slug: [fold dicts]}."""
    recipes = {}
    for path in sorted(RESULTS.glob(f"{tag}__*.npz")):
        if path.name.endswith(".part.npz"):
            continue
        slug, seed, _fold = path.stem.split("__", 1)[1].rsplit("__", 2)
        with np.load(path) as stored:
            out = {k: stored[k] for k in stored.files}
        out["seed"] = int(seed.removeprefix("seed"))
        recipes.setdefault(slug, []).append(out)
    return recipes


def spread_auc(y, p, spread):
    from sklearn.metrics import roc_auc_score

    wrong = (p >= 0.5) != (y == 1)
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, spread))


def top_decile_error(y, p, spread):
    wrong = (p >= 0.5) != (y == 1)
    top = spread >= np.quantile(spread, 0.9)
    return float(wrong[top].mean()), float(wrong.mean())


def _range(values):
    values = np.asarray(values, float)
    return f"{values.mean():.4f} ({values.min():.4f}-{values.max():.4f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("ztf", "synthetic"), default="ztf")
    parser.add_argument("--plot", default=str(HERE / "results" / "reliability.png"))
    args = parser.parse_args(argv)
    from sklearn.metrics import brier_score_loss

    recipes = load(args.data)
    if not recipes:
        print(f"no stored predictions in {RESULTS}: run benchmarks/recipe.py first")
        return 1
    print("## Calibration (pooled over all folds; per fold: mean, min-max over folds and seeds)\n")
    print("| recipe | folds | P(real) | ECE, pooled | ECE per fold | Brier per fold |")
    print("| --- | --- | --- | --- | --- | --- |")
    curves = {}
    for slug, folds in recipes.items():
        for kind in ("p_raw", "p_sigmoid", "p_isotonic"):
            if kind not in folds[0]:
                continue
            eces = [ece(f["y"], f[kind]) for f in folds]
            briers = [brier_score_loss(f["y"], f[kind]) for f in folds]
            label = {"p_raw": "raw", "p_sigmoid": "sigmoid, out-of-fold",
                     "p_isotonic": "isotonic, out-of-fold"}[kind]  # fmt: skip
            y = np.concatenate([f["y"] for f in folds])
            p = np.concatenate([f[kind] for f in folds])
            print(
                f"| {slug} | {len(folds)} | {label} | {ece(y, p):.4f} | {_range(eces)} | "
                f"{_range(briers)} |"
            )
            curves[f"{slug}: {label}"] = (y, p)
    print("\n## Uncertainty against mistakes (pooled per seed; mean, min-max over seeds)\n")
    print("| recipe | spread | AUC vs errors | error rate, top decile | error rate, all |")
    print("| --- | --- | --- | --- | --- |")
    for slug, folds in recipes.items():
        seeds = sorted({f["seed"] for f in folds})
        for name, key in (("MC dropout", "mc_spread"), ("ensemble", "networks")):
            aucs, tops, alls = [], [], []
            for seed in seeds:
                chosen = [f for f in folds if f["seed"] == seed]
                y = np.concatenate([f["y"] for f in chosen])
                p = np.concatenate([f["p_raw"] for f in chosen])
                if key == "networks":
                    each = np.concatenate([f["networks"] for f in chosen])
                    if each.shape[1] < 2:
                        break
                    spread = each.std(axis=1)
                else:
                    spread = np.concatenate([f[key] for f in chosen])
                aucs.append(spread_auc(y, p, spread))
                top, overall = top_decile_error(y, p, spread)
                tops.append(top)
                alls.append(overall)
            if aucs:
                print(f"| {slug} | {name} | {_range(aucs)} | {_range(tops)} | {_range(alls)} |")
    _plot(curves, args.plot)
    print(f"\nreliability diagram: {args.plot}")
    return 0


def _plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    edges = np.linspace(0, 1, 11)
    for label, (y, p) in curves.items():
        index = np.minimum((p * 10).astype(int), 9)
        x, f, n = [], [], []
        for b in range(10):
            chosen = index == b
            if chosen.sum() >= 5:  # fewer stamps say nothing
                x.append(p[chosen].mean())
                f.append(y[chosen].mean())
                n.append(chosen.sum())
        ax.plot(x, f, marker="o", label=f"{label} (ECE {ece(y, p):.3f})")
    ax.set_xticks(edges)
    ax.set_xlabel("P(real), mean in its bin (bins with at least 5 stamps)")
    ax.set_ylabel("fraction of real candidates in the bin")
    ax.set_title("Reliability on real ZTF alerts (held-out folds, all seeds)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
