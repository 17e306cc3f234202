"""Row 3 of issue 5: otrain-infer against O'TRAIN's infer, whole process.

Generates 4,000 single-HDU 64x64 candidates with :func:`otrain.datasets.make_candidates`
(~3% EDGE stamps, which both sides skip) and a model file of the default network the
way ``otrain-train`` makes one (``CutoutClassifier(epochs=1).fit`` on 400 generated
stamps, the check of bfloat16 scoring on 200 others, :func:`otrain.model_files.save_model`;
its weights barely matter for speed; ``--no-bfloat16-check`` leaves the check out, so
that otrain-infer scores in float32 like O'TRAIN). Then
``otrain-infer --cutouts DIR --model MODEL`` and O'TRAIN's infer
(``baselines/otrain_infer.py``: read each file for pixels, ``model.predict``, read each
file again for keywords, write the table) run as whole processes, alternating, after
one untimed warm-up each. The table gives the median wall times and their ratio
(target: otrain >= 2x faster), and checks that both tables give the same ``label1``
for the same files (largest difference; agreement within 1e-3 is asked, or within
the bfloat16 tolerance, 0.01, when the model's stored check lets otrain score in
bfloat16).

Usage::

    python benchmarks/infer.py                  # ~4 min on 2 cores (5 repeats)
    python benchmarks/infer.py --quick          # 400 candidates, ~1 min
    python benchmarks/infer.py --workdir /tmp/bench   # keep and reuse files and model
"""

import sys
from argparse import ArgumentParser
from pathlib import Path

import numpy as np
from _common import (
    BASELINES,
    SPEED_COLUMNS,
    CommandError,
    add_common_arguments,
    alternate,
    candidate_files,
    description,
    formatter,
    machine_text,
    markdown_table,
    median,
    paired_ratio,
    parse,
    run_command,
    say,
    tool,
    verdict,
    workdir,
)

SPEED_TARGET = 2.0
AGREEMENT = 1e-3


_MAKE_MODEL = """
import json, sys
import numpy as np
from otrain import CutoutClassifier, save_model
from otrain.datasets import make_stamps
path, n, seed, check = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
X, y, _ = make_stamps(n // 2, n - n // 2, random_state=seed)
clf = CutoutClassifier(epochs=1, random_state=seed).fit(X, y)
if check and hasattr(clf, "check_bfloat16"):  # not in an otrain without bfloat16 scoring
    # As otrain-train does, on stamps the network was not trained on; the method
    # keeps the result (bfloat16_check_), which save_model stores.
    X_valid, _, _ = make_stamps(n // 4, n // 4, random_state=seed + 1)
    clf.check_bfloat16(X_valid)
save_model(clf, path)
print(json.dumps(getattr(clf, "bfloat16_check_", None)))
"""


def make_model(path, *, n=400, seed=0, bfloat16_check=True):
    """A model file of the default network trained for one epoch (reused if present).

    Made as ``otrain-train`` makes one: fit, then (``bfloat16_check``) the stored check
    of bfloat16 scoring on other stamps, which lets ``otrain-infer`` score in bfloat16
    where the CPU has it; then :func:`otrain.model_files.save_model`.

    Returns
    -------
    path : pathlib.Path
    check : dict or None
        The stored bfloat16 check.
    """
    path = Path(path)
    if not path.exists():
        say(f"training a one-epoch default model on {n} generated stamps -> {path} ...")
        run_command(
            [
                sys.executable,
                "-c",
                _MAKE_MODEL,
                str(path),
                str(n),
                str(seed),
                str(int(bfloat16_check)),
            ]
        )
    else:
        say(f"reusing the model {path}")
    from otrain.model_files import read_record

    return path, (read_record(path) or {}).get("bfloat16_check")


def compare_tables(baseline_dat, otrain_dat):
    """(rows in common, rows of each, largest |label1 difference|) by file name."""
    from astropy.table import Table

    base = Table.read(baseline_dat, format="ascii.commented_header")
    ours = Table.read(otrain_dat, format="ascii.commented_header")
    b = {
        str(Path(f).resolve()): float(p)
        for f, p in zip(base["filename"], base["label1"], strict=True)
    }
    o = {
        str(Path(f).resolve()): float(p)
        for f, p in zip(ours["filename"], ours["label1"], strict=True)
    }
    common = sorted(set(b) & set(o))
    diff = max((abs(b[f] - o[f]) for f in common), default=float("nan"))
    return len(common), len(b), len(o), diff


def main(argv=None):
    parser = ArgumentParser(description=description(__doc__), formatter_class=formatter())
    add_common_arguments(parser, repeats=5)
    parser.add_argument("--n", type=int, default=None, help="candidates (default 4000)")
    parser.add_argument(
        "--n-jobs", type=int, default=None, help="--n-jobs for otrain-infer (default: its own)"
    )
    parser.add_argument(
        "--no-bfloat16-check",
        dest="bfloat16_check",
        action="store_false",
        help="model file without the stored bfloat16 check (otrain-infer then scores in "
        "float32, as O'TRAIN does)",
    )
    args = parse(parser, argv)
    if args.quick:
        args.n = args.n or 400
        args.repeats = min(args.repeats, 2)
    n = args.n or 4000

    with workdir(args) as root:
        cutouts = candidate_files(root / f"candidates{n}", n)
        model, bf16 = make_model(
            root / f"default-1epoch{'-bf16check' if args.bfloat16_check else ''}.keras",
            bfloat16_check=args.bfloat16_check,
        )
        base_out = root / "baseline-results"
        baseline_cmd = [
            sys.executable,
            str(BASELINES / "otrain_infer.py"),
            "--cutouts",
            str(cutouts),
            "--model",
            str(model),
            "--outdir",
            str(base_out),
        ]
        otrain_cmd = [tool("otrain-infer"), "--cutouts", str(cutouts), "--model", str(model)]
        if args.n_jobs is not None:
            otrain_cmd += ["--n-jobs", str(args.n_jobs)]
        say(f"scoring {n} candidates")
        runs = alternate(
            {
                "O'TRAIN infer": lambda: run_command(baseline_cmd),
                "otrain-infer": lambda: run_command(otrain_cmd),
            },
            args.repeats,
        )
        common, n_base, n_ours, diff = compare_tables(
            base_out / "infer_results.dat", cutouts / "infer_results.dat"
        )

    t_base = median([r.wall for r in runs["O'TRAIN infer"]])
    t_ours = median([r.wall for r in runs["otrain-infer"]])
    ratio = t_base / t_ours
    paired = paired_ratio(
        [r.wall for r in runs["O'TRAIN infer"]], [r.wall for r in runs["otrain-infer"]]
    )
    # A model whose stored check passed is scored in bfloat16 where the CPU has it,
    # which may move P(real) by up to the check's tolerance.
    tolerance = bf16["tolerance"] if bf16 is not None and bf16["passed"] else AGREEMENT
    same = common == n_base == n_ours and np.isfinite(diff) and diff <= tolerance
    check = (
        f"{common} rows in both; max label1 difference {diff:.3g}"
        f" ({'within' if same else 'NOT within'} {tolerance:g}"
        f"{', the bfloat16 tolerance' if tolerance != AGREEMENT else ''})"
    )
    if not common == n_base == n_ours:
        check += f"; rows: O'TRAIN {n_base}, otrain {n_ours}"
    print(f"\nMachine: {machine_text()}\n")
    print(
        markdown_table(
            SPEED_COLUMNS,
            [
                [
                    "`otrain-infer`, 64x64, default network",
                    n,
                    f"{t_base:.2f} s ({n / t_base:.0f} files/s)",
                    f"{t_ours:.2f} s ({n / t_ours:.0f} files/s)",
                    f"{ratio:.2f}x",
                    f"{paired:.2f}x",
                    f">= {SPEED_TARGET:g}x",
                    verdict(ratio >= SPEED_TARGET),
                    check,
                ]
            ],
        )
    )
    peak_base = median([r.maxrss for r in runs["O'TRAIN infer"]])
    peak_ours = median([r.maxrss for r in runs["otrain-infer"]])
    print(
        f"\nMedians of {args.repeats} alternating runs after one warm-up each; speed-up = "
        f"O'TRAIN's time / otrain's time (of the medians; paired: median of the ratios of "
        f"back-to-back runs). Peak RSS: O'TRAIN {peak_base / 1e6:.0f} MB, "
        f"otrain {peak_ours / 1e6:.0f} MB (main process)."
    )
    if bf16 is None:
        print("The model stores no bfloat16 check: otrain-infer scores in float32.")
    else:
        print(
            f"The model stores a bfloat16 check (P(real) moved by at most "
            f"{bf16['max_difference']:.2g} on {bf16['n_stamps']} stamps, "
            f"{'passed' if bf16['passed'] else 'failed'}): otrain-infer scores in bfloat16 "
            "if this CPU has it and the check passed, else in float32."
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CommandError as err:
        print(f"infer.py: error: {err}", file=sys.stderr)
        sys.exit(1)
