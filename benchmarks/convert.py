"""Rows 1, 2 and 7 of issue 5: otrain-convert against O'TRAIN's convert, whole process.

Generates two labelled sets with :mod:`otrain.datasets` (``true/`` and ``false/``,
half real, ~3% EDGE stamps that both sides leave out):

1. 6,000 single-HDU 64x64 cutouts (the difference image, O'TRAIN's keywords);
2. 6,000 SCI/REF/DIFF 63x63 files (a keyword-only primary HDU and three image
   extensions), of which both sides read the DIFF extension.

On each set, ``otrain-convert --path OUT --cube cube --cutouts SET --frac_true 0.5``
and O'TRAIN's convert (``baselines/otrain_convert.py``, same arguments: per-file
``fits.open``, lists, ``np.savez``) run as whole processes, alternating, after one
untimed warm-up each; the table gives the median wall times and their ratio (target:
otrain >= 3x faster). Both cubes are then compared stamp by stamp (same candidates,
same pixels).

Row 7 is the peak memory of ``otrain-convert`` on the single-HDU set: the kernel's peak
resident set of the process (``ru_maxrss``) and, from one more sampled run, the peak
summed PSS of the process and its reading workers, against 1.5 x the size of the cube
file it writes plus the interpreter (the peak RSS of ``python -c "import
otrain.datacube"``, i.e. Python with the libraries convert uses; the bare ``python -c
"import otrain.cli.convert"`` is shown too).

Usage::

    python benchmarks/convert.py                  # ~3 min on 2 cores (5 repeats)
    python benchmarks/convert.py --quick          # 600 files per set, ~30 s
    python benchmarks/convert.py --workdir /tmp/bench   # keep and reuse the files
"""

import sys
from argparse import ArgumentParser

import numpy as np
from _common import (
    BASELINES,
    SPEED_COLUMNS,
    CommandError,
    add_common_arguments,
    alternate,
    description,
    fmt_bytes,
    formatter,
    machine_text,
    markdown_table,
    median,
    paired_ratio,
    parse,
    run_command,
    say,
    tool,
    training_files,
    verdict,
    workdir,
)

SPEED_TARGET = 3.0
MEMORY_FACTOR = 1.5


def _compare_cubes(baseline_npz, otrain_npz):
    """Describe whether the two cubes hold the same stamps (by CANDID), as text."""
    with np.load(baseline_npz) as b, np.load(otrain_npz) as o:
        b_ids, o_ids = [str(c) for c in b["candids"]], [str(c) for c in o["candids"]]
        if sorted(b_ids) != sorted(o_ids):
            return f"DIFFERENT candidates ({len(b_ids)} vs {len(o_ids)})"
        order_b, order_o = np.argsort(b_ids), np.argsort(o_ids)
        same_pixels = np.array_equal(b["cube"][order_b], o["cube"][order_o], equal_nan=True)
        same_labels = np.array_equal(
            np.asarray(b["labels"])[order_b], np.asarray(o["labels"])[order_o]
        )
        shape = "x".join(map(str, o["cube"].shape))
    if same_pixels and same_labels:
        return f"same {shape} cube"
    return f"DIFFERENT {'pixels' if not same_pixels else 'labels'} ({shape})"


def _convert_set(name, folder, out, args):
    """Time both converts on one set; returns the table row, the runs and otrain's cube."""
    base_out, ours_out = out / "baseline", out / "otrain"
    common = ["--cube", "cube", "--cutouts", str(folder), "--frac_true", "0.5"]
    baseline_cmd = [sys.executable, str(BASELINES / "otrain_convert.py"), "--path", str(base_out)]
    otrain_cmd = [tool("otrain-convert"), "--path", str(ours_out)]
    if args.n_jobs is not None:
        otrain_cmd += ["--n-jobs", str(args.n_jobs)]
    n_files = len(list(folder.glob("*/*.fits")))
    say(f"{name}: {n_files} files")
    runs = alternate(
        {
            "O'TRAIN convert": lambda: run_command(baseline_cmd + common),
            "otrain-convert": lambda: run_command(otrain_cmd + common),
        },
        args.repeats,
    )
    t_base = median([r.wall for r in runs["O'TRAIN convert"]])
    t_ours = median([r.wall for r in runs["otrain-convert"]])
    check = _compare_cubes(base_out / "datacube" / "cube.npz", ours_out / "cube.npz")
    ratio = t_base / t_ours
    paired = paired_ratio(
        [r.wall for r in runs["O'TRAIN convert"]], [r.wall for r in runs["otrain-convert"]]
    )
    row = [
        f"`otrain-convert`, {name}",
        n_files,
        f"{t_base:.2f} s ({n_files / t_base:.0f} files/s)",
        f"{t_ours:.2f} s ({n_files / t_ours:.0f} files/s)",
        f"{ratio:.2f}x",
        f"{paired:.2f}x",
        f">= {SPEED_TARGET:g}x",
        verdict(ratio >= SPEED_TARGET),
        check,
    ]
    return row, runs, ours_out / "cube.npz"


def main(argv=None):
    parser = ArgumentParser(description=description(__doc__), formatter_class=formatter())
    add_common_arguments(parser, repeats=5)
    parser.add_argument("--n", type=int, default=None, help="files per set (default 6000)")
    parser.add_argument(
        "--n-jobs", type=int, default=None, help="--n-jobs for otrain-convert (default: its own)"
    )
    args = parse(parser, argv)
    if args.quick:
        args.n = args.n or 600
        args.repeats = min(args.repeats, 2)
    n = args.n or 6000

    with workdir(args) as root:
        sets = [
            ("single-HDU 64x64", training_files(root / "single64", n, size=64)),
            (
                "SCI/REF/DIFF 63x63 (DIFF)",
                training_files(root / "triplets63", n, size=63, triplets=True),
            ),
        ]
        rows, memory = [], None
        for index, (name, folder) in enumerate(sets):
            row, runs, cube_file = _convert_set(name, folder, root / f"out{index}", args)
            rows.append(row)
            if index == 0:
                memory = (runs, cube_file)

        say("memory: one sampled run of otrain-convert, and the interpreter alone")
        runs, cube_file = memory
        sampled = run_command(
            [
                tool("otrain-convert"),
                "--path",
                str(cube_file.parent),
                "--cube",
                "cube",
                "--cutouts",
                str(sets[0][1]),
                "--frac_true",
                "0.5",
                *(["--n-jobs", str(args.n_jobs)] if args.n_jobs is not None else []),
            ],
            sample_memory=True,
        )
        interpreter = median(
            [run_command([sys.executable, "-c", "import otrain.datacube"]).maxrss for _ in range(3)]
        )
        bare = median(
            [
                run_command([sys.executable, "-c", "import otrain.cli.convert"]).maxrss
                for _ in range(3)
            ]
        )
        cube_size = cube_file.stat().st_size
        main_peak = median([r.maxrss for r in runs["otrain-convert"]])
        base_peak = median([r.maxrss for r in runs["O'TRAIN convert"]])
        peak = max(main_peak, sampled.tree_pss or 0)
        limit = MEMORY_FACTOR * cube_size + interpreter

    print(f"\nMachine: {machine_text()}\n")
    print(
        markdown_table(
            SPEED_COLUMNS,
            rows,
        )
    )
    print()
    print(
        markdown_table(
            [
                "what",
                "cube file",
                "interpreter",
                "otrain-convert peak",
                "limit",
                "ratio to limit",
                "",
                "O'TRAIN's peak",
            ],
            [
                [
                    f"peak memory of `otrain-convert`, {sets[0][0]}",
                    fmt_bytes(cube_size),
                    f"{fmt_bytes(interpreter)} (bare: {fmt_bytes(bare)})",
                    f"{fmt_bytes(main_peak)} process, {fmt_bytes(sampled.tree_pss or 0)} tree PSS",
                    f"{fmt_bytes(limit)} (1.5 x cube + interpreter)",
                    f"{peak / limit:.2f}",
                    verdict(peak <= limit),
                    fmt_bytes(base_peak),
                ]
            ],
        )
    )
    print(
        f"\nMedians of {args.repeats} alternating runs after one warm-up each; speed-up = "
        "O'TRAIN's time / otrain's time (of the medians; paired: median of the ratios of "
        "back-to-back runs). Memory peak = the larger of the process's "
        "ru_maxrss and the sampled PSS of its process tree."
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CommandError as err:
        print(f"convert.py: error: {err}", file=sys.stderr)
        sys.exit(1)
