"""otrain-export: write a trained model as ONNX, for scoring with onnxruntime alone."""

import sys
from pathlib import Path

from ._common import add_legacy_model_arguments, check_outputs, make_parser, run, say

PROG = "otrain-export"

_EPILOG = """\
The ONNX graph takes raw float32 stamps (n, H, W, C) named "stamps" (NaN pixels
allowed) and returns "probabilities" (n, 2): [P(bogus), P(real)]. The normalisation
is inside; the calibration too, unless --no-calibration. Channels, stamp size,
threshold and calibration are in the file's metadata. See docs/trust.md.

example:
  otrain-export --model model/CNN_training/test.h5 --format onnx --output test.onnx
"""


def build_parser():
    """The argument parser of ``otrain-export``."""
    parser = make_parser(
        PROG, "Export a trained model to ONNX (normalisation and calibration inside).", _EPILOG
    )
    parser.add_argument("--model", required=True, help="model file (.h5 or .keras)")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="export format")
    parser.add_argument(
        "--output", default=None, help="output file (default: the model's name, .onnx)"
    )
    parser.add_argument(
        "--no-calibration",
        dest="calibrated",
        action="store_false",
        help="export the network's raw P(real), without the stored calibration",
    )
    add_legacy_model_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    return parser


def _export(args):
    from ..export import export_onnx
    from ..model_files import load_model

    output = Path(args.output) if args.output else Path(args.model).with_suffix(".onnx")
    # An exported model is a trained model: replaced only when asked to.
    check_outputs(
        [output],
        "the exported model (--overwrite)",
        replace=args.overwrite,
        refuse_hint="give another --output or --overwrite",
    )
    say(f"loading model {args.model} ...")
    classifier = load_model(args.model, channels=args.channels, normalisation=args.normalisation)
    calibration = classifier.calibration_
    say(
        f"exporting to ONNX ({'x'.join(map(str, classifier.model_.input_shape[1:]))}, "
        f"{', '.join(classifier.channels_)}) ..."
    )
    export_onnx(classifier, output, calibrated=args.calibrated)
    if calibration is None:
        note = "the model is not calibrated"
    elif args.calibrated:
        note = f"{calibration.method} calibration included"
    else:
        note = f"{calibration.method} calibration left out (--no-calibration)"
    say(f"ONNX model written to {output} ({note})")
    return 0


def main(argv=None):
    """Run otrain-export; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _export, args, needs_tensorflow=True)


if __name__ == "__main__":
    sys.exit(main())
