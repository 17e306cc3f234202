"""otrain-calibrate: calibrate a trained model on a labelled datacube, into a new file."""

import sys
from pathlib import Path

from ._common import add_legacy_model_arguments, check_outputs, make_parser, run, say

PROG = "otrain-calibrate"

_EPILOG = """\
The calibration map is fitted on the network's own P(real) over the cube's stamps
(which the network must not have been trained on: a validation or test cube) and
stored in the new model file, which otrain-infer then applies. The stored threshold
is kept, unless --target-recall or --target-fpr chooses a new one on the calibrated
P(real) of the same cube.

example:
  otrain-calibrate --model model/CNN_training/test.h5 \\
      --cube model/CNN_training/test/validation_set/datacube/cube_validation.npz
"""

#: Library parameters -> flags, for the error lines.
FLAGS = {
    "method": "--method",
    "target_recall": "--target-recall",
    "target_fpr": "--target-fpr",
    "channels": "otrain-convert --channels",
}


def build_parser():
    """The argument parser of ``otrain-calibrate``."""
    parser = make_parser(
        PROG,
        "Calibrate the P(real) of a trained model on a labelled datacube and write the "
        "calibrated model to a new file.",
        _EPILOG,
    )
    parser.add_argument("--model", required=True, help="model file (.h5 or .keras)")
    parser.add_argument(
        "--cube",
        required=True,
        help="labelled datacube (.npz) the network was not trained on",
    )
    parser.add_argument(
        "--method",
        choices=("sigmoid", "isotonic"),
        default="sigmoid",
        help="sigmoid (two numbers: small sets) or isotonic (thousands of stamps)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="calibrated model file (default: the model's name with _calibrated)",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--target-recall",
        type=float,
        default=None,
        help="choose the highest threshold keeping this fraction of the real candidates",
    )
    choice.add_argument(
        "--target-fpr",
        type=float,
        default=None,
        help="choose the lowest threshold calling at most this fraction of bogus real",
    )
    add_legacy_model_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    return parser


def _calibrate(args):
    from ..calibration import calibrate_model_file

    model = Path(args.model)
    output = (
        Path(args.output)
        if args.output
        else model.with_name(f"{model.stem}_calibrated{model.suffix}")
    )
    # A calibrated model is a trained model: replaced only when asked to.
    check_outputs(
        [output],
        "the calibrated model (--overwrite)",
        replace=args.overwrite,
        refuse_hint="give another --output or --overwrite",
    )
    say(f"calibrating {model} on {args.cube} ({args.method}) ...")
    result = calibrate_model_file(
        model,
        args.cube,
        output,
        method=args.method,
        target_recall=args.target_recall,
        target_fpr=args.target_fpr,
        channels=args.channels,
        normalisation=args.normalisation,
        overwrite=args.overwrite,
    )
    say(
        f"{result['n_stamps']} stamps ({result['n_real']} real, {result['n_bogus']} bogus); "
        f"Brier score on them {result['brier_before']:.4f} before, "
        f"{result['brier_after']:.4f} after ({result['calibration']!r}; measured on the "
        "stamps it was fitted on: judge it on other stamps with otrain-diagnostics)"
    )
    for caution in result["cautions"]:
        say(f"caution: {caution}")
    if result["threshold_rule"]:
        ((name, value),) = result["threshold_rule"].items()
        say(f"threshold {result['threshold']:.4g} chosen for {name.replace('_', ' ')} {value:g}")
    else:
        say(f"threshold kept: {result['threshold']:.4g}")
    say(f"calibrated model written to {output}")
    return 0


def main(argv=None):
    """Run otrain-calibrate; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _calibrate, args, needs_tensorflow=True, flags=FLAGS)


if __name__ == "__main__":
    sys.exit(main())
