"""otrain-infer: score a folder of candidate cutouts with a trained model."""

import sys

from ._common import comma_list, make_parser, run, say

PROG = "otrain-infer"


def build_parser():
    parser = make_parser(
        PROG,
        "Score candidate cutouts with a trained model. Writes CUTOUTS/infer_results.dat "
        "(O'TRAIN's columns; label0 = P(false), label1 = P(true)) and "
        "CUTOUTS/infer_results.ecsv (with the model and otrain version in its metadata).",
        epilog="example: otrain-infer --cutouts candidates --model model/CNN_training/test.h5",
    )
    parser.add_argument("--cutouts", required=True, help="folder holding the candidate cutouts")
    parser.add_argument("--model", required=True, help="model file (.h5 or .keras)")
    parser.add_argument(
        "--outdir", default=None, help="where to write the results (default: the --cutouts folder)"
    )
    parser.add_argument(
        "--channels",
        type=comma_list,
        default=None,
        help="channels of a legacy model without otrain metadata, e.g. SCI,REF,DIFF",
    )
    parser.add_argument(
        "--normalisation",
        choices=("l2", "robust", "none"),
        default=None,
        help="normalisation of a legacy model without otrain metadata (braai: l2)",
    )
    parser.add_argument("--n-jobs", type=int, default=-1, help="processes reading files (-1: all cores)")
    return parser


def _infer(args):
    from pathlib import Path

    from ..datacube import find_cutouts

    paths = find_cutouts(args.cutouts)
    if not paths:
        from ..exceptions import CutoutError

        raise CutoutError(f"{args.cutouts}: holds no cutout (*.fits); check the folder")
    say(f"loading model {args.model} ...")
    from ..inference import score_files, write_results
    from ..model_files import load_model

    classifier = load_model(args.model, channels=args.channels, normalisation=args.normalisation)
    shape = "x".join(map(str, classifier.model_.input_shape[1:]))
    say(f"scoring {len(paths)} cutouts ({shape}, {', '.join(classifier.channels_)}) ...")
    table, summary = score_files(
        classifier,
        paths,
        n_jobs=args.n_jobs,
        progress=lambda n: say(f"  {n}/{len(paths)} read and scored"),
    )
    if summary["n_scored"] == 0 and summary["skipped"]:
        from ..exceptions import CutoutError

        raise CutoutError(f"no cutout could be scored; first problem: {summary['skipped'][0][1]}")
    dat, ecsv = write_results(
        table,
        Path(args.outdir or args.cutouts),
        model_name=Path(args.model).name,
        extra_meta={"channels": list(classifier.channels_)},
    )
    say(
        f"{summary['n_scored']} candidates scored, {summary['n_edge']} EDGE cutouts skipped, "
        f"{len(summary['skipped'])} unreadable or mis-sized files skipped"
    )
    for path, reason in summary["skipped"][:10]:
        say(f"  skipped {reason}")
    if len(summary["skipped"]) > 10:
        say(f"  ... and {len(summary['skipped']) - 10} more")
    if len(table):
        n_real = int((table["label1"] >= 0.5).sum())
        say(f"{n_real} of {len(table)} called real at P(true) >= 0.5")
    say(f"results written to {dat} and {ecsv}")
    return 0


def main(argv=None):
    """Run otrain-infer; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _infer, args, needs_tensorflow=True)


if __name__ == "__main__":
    sys.exit(main())
