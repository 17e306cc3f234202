"""otrain-diagnostics: diagnostics of a model on a validation cube."""

import sys

from ._common import (
    add_legacy_model_arguments,
    check_output_folder,
    make_parser,
    run,
    say,
)

PROG = "otrain-diagnostics"


def build_parser(prog=PROG, description=None, plots_only=False):
    parser = make_parser(
        prog,
        description
        or "Print the diagnostics of a model on a validation datacube and write the "
        "misclassified candidates (galleries, list, and copies of their FITS files).",
        epilog=f"example: {prog} --path-cube-validation "
        "model/CNN_training/test/validation_set/datacube/cube_validation.npz "
        "--model-path model/CNN_training/test.h5" + (" --path-plots plots" if plots_only else ""),
    )
    parser.add_argument(
        "--path-cube-validation", required=True, help="the validation datacube (.npz)"
    )
    parser.add_argument("--model-path", required=True, help="the model file (.h5 or .keras)")
    if plots_only:
        parser.add_argument("--path-plots", required=True, help="folder for the plots")
    else:
        parser.add_argument(
            "--path-diagnostics",
            default="cnn_results",
            help="folder for the diagnostics and the misclassified candidates",
        )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="P(real) above which a candidate is called real (default: the model's, else 0.5)",
    )
    add_legacy_model_arguments(parser)
    return parser


def score_cube(args):
    """Load the model and the cube, and score the cube with the model's channels."""
    from ..datacube import load_datacube
    from ..diagnostics import score_datacube
    from ..model_files import load_model

    cube = load_datacube(args.path_cube_validation)
    classifier = load_model(
        args.model_path, channels=args.channels, normalisation=args.normalisation
    )
    say(f"scoring {len(cube)} cutouts with {args.model_path} ...")
    return score_datacube(
        classifier, cube, threshold=args.threshold, name=str(args.path_cube_validation)
    )


#: Library parameters -> flags, for the error lines.
FLAGS = {"channels": "--channels", "threshold": "--threshold"}


def _diagnostics(args):
    from ..report import write_report

    check_output_folder(args.path_diagnostics, "the diagnostics of an earlier run")
    cube, p_real, threshold = score_cube(args)
    report = write_report(
        cube.labels,
        p_real,
        args.path_diagnostics,
        threshold=threshold,
        keywords=cube.keywords,
        stamps=cube.cube,
        channels=cube.channels,
        curves=False,
        copy_misclassified=True,
    )
    say(report["text"])
    n_copied = sum("misclassified" in str(p.parent) for p in report["files"])
    say(f"{n_copied} misclassified FITS files copied under {args.path_diagnostics}/misclassified")
    say(f"diagnostics, scores and galleries in {args.path_diagnostics}")
    return 0


def main(argv=None):
    """Run otrain-diagnostics; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _diagnostics, args, needs_tensorflow=True, flags=FLAGS)


if __name__ == "__main__":
    sys.exit(main())
