"""otrain-plot-results: the ROC, precision-recall, F1/MCC and probability plots."""

import sys

from ._common import check_output_folder, run, say
from .diagnostics import FLAGS, build_parser, score_cube

PROG = "otrain-plot-results"


def _plot(args):
    from ..report import write_report

    check_output_folder(args.path_plots, "the plots of an earlier run")
    cube, p_real, threshold = score_cube(args)
    report = write_report(
        cube.labels,
        p_real,
        args.path_plots,
        threshold=threshold,
        keywords=cube.keywords,
        curves=True,
    )
    for what, why in report["skipped"]:
        say(f"skipped {what}: {why}")
    n_png = sum(p.suffix == ".png" for p in report["files"])
    say(f"{n_png} plots written to {args.path_plots}")
    return 0


def main(argv=None):
    """Run otrain-plot-results; returns the exit code."""
    parser = build_parser(
        PROG,
        "Draw the ROC and precision-recall curves (overall, by magnitude and magnitude "
        "error), F1 and MCC vs threshold, the probability distributions and the "
        "reliability diagram of a model on a validation datacube.",
        plots_only=True,
    )
    return run(PROG, _plot, parser.parse_args(argv), needs_tensorflow=True, flags=FLAGS)


if __name__ == "__main__":
    sys.exit(main())
