"""``otrain-checkinfer``: how well a model scores simulated (injected) sources.

Flag for flag compatible with O'TRAIN's ``otrain-checkinfer``, aliases included.
"""

import argparse
from pathlib import Path

from ._common import check_output_folder, make_parser, run, say

PROG = "otrain-checkinfer"

DESCRIPTION = (
    "Compare the scores (P(real)) of the candidates that are simulated sources injected "
    "into the images with those of the other candidates, and write O'TRAIN's check "
    "plots to the CheckInfer/ subfolder of the --plots folder. Reads crossmatch.dat (one "
    "row per injected source: closest_candID, mag) and infer_results.dat (written by "
    "otrain-infer)."
)

EPILOG = (
    "Example: otrain-checkinfer --plots otrain_plots --crossmatch . --infer candidates. "
    "docs/checkinfer.md explains the plots and how to read them."
)


def build_parser(prog=PROG):
    """The argument parser of ``otrain-checkinfer`` (or of its alias ``prog``)."""
    parser = make_parser(prog, DESCRIPTION, EPILOG)
    parser.add_argument(
        "--plots",
        dest="plots",
        required=True,
        default=argparse.SUPPRESS,  # no "(default: None)" in the help of a required flag
        metavar="DIR",
        help="folder for the plots; they go to its CheckInfer/ subfolder, created if needed",
    )
    parser.add_argument(
        "--crossmatch",
        dest="crossmatch",
        required=True,
        default=argparse.SUPPRESS,  # no "(default: None)" in the help of a required flag
        metavar="PATH",
        help="folder holding crossmatch.dat (or the file itself)",
    )
    parser.add_argument(
        "--infer",
        dest="infer",
        required=True,
        default=argparse.SUPPRESS,  # no "(default: None)" in the help of a required flag
        metavar="PATH",
        help="folder holding infer_results.dat, as written by otrain-infer (or the file itself)",
    )
    parser.add_argument(
        "--maglim",
        "--mag-lim",
        dest="maglim",
        type=float,
        nargs="+",
        default=[12.0, 18.0, 21.0],
        metavar="MAG",
        help="magnitudes cutting the magnitude bins of the plots and of the summary",
    )
    parser.add_argument(
        "--cnn-problim",
        dest="problim",
        type=float,
        nargs="+",
        default=[0.1, 0.5, 0.7],
        metavar="P",
        help="probabilities cutting the ranges of P(real) in the plots and the summary",
    )
    parser.add_argument(
        "--fwhm-ratio-lower",
        dest="fwhm_ratio_lower",
        type=float,
        default=0.5,
        metavar="RATIO",
        help="lower bound of FWHM / FWHM_PSF, marked on the FWHM plots",
    )
    parser.add_argument(
        "--fwhm-ratio-upper",
        dest="fwhm_ratio_upper",
        type=float,
        default=4.2,
        metavar="RATIO",
        help="upper bound of FWHM / FWHM_PSF, marked on the FWHM plots",
    )
    return parser


def _body(args):
    # Imported here, not at the top, so that -h and --version answer at once.
    from ..checkinfer import check_inference, format_summary, read_crossmatch, read_infer_results

    infer = read_infer_results(args.infer)
    crossmatch = read_crossmatch(args.crossmatch)
    say(
        f"read {len(infer)} candidates from {infer.meta['path']} and "
        f"{len(crossmatch)} simulated sources from {crossmatch.meta['path']}"
    )
    plots = check_output_folder(
        Path(args.plots) / "CheckInfer", "the check plots of an earlier run"
    )
    result = check_inference(
        infer,
        crossmatch,
        plots,
        maglim=args.maglim,
        problim=args.problim,
        fwhm_ratio=(args.fwhm_ratio_lower, args.fwhm_ratio_upper),
    )
    for name, reason in result["skipped"].items():
        say(f"skipped {name}: {reason}")
    say(format_summary(result))
    return 0


def main(argv=None):
    """Run ``otrain-checkinfer``; return the exit code (0, or 2 on bad input)."""
    args = build_parser().parse_args(argv)
    return run(PROG, _body, args)


if __name__ == "__main__":
    raise SystemExit(main())
