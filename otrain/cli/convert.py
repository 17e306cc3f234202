"""otrain-convert: build a datacube from true/ and false/ folders of cutouts."""

import sys

from ._common import check_outputs, comma_list, make_parser, run, say

PROG = "otrain-convert"


def build_parser():
    parser = make_parser(
        PROG,
        "Build a datacube (.npz) from a folder holding true/ (real) and false/ (bogus) "
        "cutout FITS files. A datacube of the same name is replaced (it is rebuilt from "
        "the cutouts, which are still there).",
        epilog="example: otrain-convert --path datacube_test --cube cube "
        "--cutouts candidates_training --cutout-size -1",
    )
    parser.add_argument("--path", required=True, help="folder where the datacube is written")
    parser.add_argument("--cube", required=True, help="name of the datacube (.npz is appended)")
    parser.add_argument(
        "--cutouts", required=True, help="folder holding the true/ and false/ sub-folders"
    )
    parser.add_argument(
        "--frac_true",
        "--frac-true",
        dest="frac_true",
        type=float,
        default=None,
        help="fraction of true cutouts in the cube, reached by dropping cutouts of the "
        "larger class at random (O'TRAIN's example gave 0.5); the command says how many "
        "it dropped (default: keep every cutout)",
    )
    parser.add_argument(
        "--cutout-size",
        "--cutout_size",
        dest="cutout_size",
        type=int,
        default=-1,
        help="side of the centred square crop in pixels; -1 keeps the native size",
    )
    parser.add_argument(
        "--channels",
        type=comma_list,
        default=None,
        help="EXTNAMEs of the images to stack, e.g. SCI,REF,DIFF (single-HDU files give "
        "their one image); the channels of the model trained on the cube (default: DIFF)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the undersampling")
    parser.add_argument(
        "--n-jobs", type=int, default=-1, help="processes reading files (-1: all cores)"
    )
    return parser


def _convert(args):
    from pathlib import Path

    from ..datacube import build_datacube

    output = Path(args.path) / args.cube
    if output.suffix != ".npz":
        output = output.with_name(output.name + ".npz")
    check_outputs([output], "the datacube of an earlier run")
    channels = args.channels or ("DIFF",)
    say(f"reading cutouts from {args.cutouts}/true and {args.cutouts}/false ...")
    cube = build_datacube(
        args.cutouts,
        channels=channels,
        cutout_size=args.cutout_size,
        frac_true=args.frac_true,
        random_state=args.seed,
        n_jobs=args.n_jobs,
    )
    path = cube.save(output)
    say(cube.summary_text())
    dropped = cube.undersampling_text("--frac_true")
    if dropped:
        say(dropped)
    if args.channels is None:
        _note_unused_channels(args.cutouts, channels)
    say(f"datacube written to {path}")
    return 0


def _note_unused_channels(folder, channels):
    """One line when the files hold images left out (SCI and REF of triplet stamps)."""
    from pathlib import Path

    from ..cutouts import image_names
    from ..datacube import find_cutouts

    first = next(iter(find_cutouts(Path(folder) / "true")), None)
    names = [] if first is None else image_names(first)
    unused = [n for n in names if n and n not in channels]
    if unused and len(names) > 1:
        say(
            f"note: the cutouts also hold {', '.join(unused)}, left out of the cube (only "
            f"{', '.join(channels)} was stacked); --channels {','.join(names)} stacks them all "
            "for a model that uses them"
        )


def main(argv=None):
    """Run otrain-convert; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _convert, args)


if __name__ == "__main__":
    sys.exit(main())
