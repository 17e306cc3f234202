"""otrain-grad-cam: Grad-CAM heat maps of candidates, as galleries of PNG files.

O'TRAIN's flags are kept (``--cube``, ``--model-path``, ``--cam_path``,
``--n_random``, ``--threshold``), with clearer aliases (``--model``, ``--outdir``,
``--n``).
"""

from ._common import (
    add_legacy_model_arguments,
    check_output_folder,
    make_parser,
    positive_int,
    run,
    say,
)

PROG = "otrain-grad-cam"

_EPILOG = """\
With --cube (a labelled datacube), four galleries: real candidates called real (true
positives) and bogus called bogus (true negatives), --n of each at random; real called
bogus (false negatives) and bogus called real (false positives), the --n most confident
first. With --cutouts (a folder of cutout files, unlabelled), one gallery of the highest
and lowest P(real). Each heat map shows where the network found the evidence for the
class it called the candidate. See docs/grad_cam.md.

examples:
  otrain-grad-cam --model model.keras --cube test.npz --outdir grad_cam
  otrain-grad-cam --model braai_d6_m9.h5 --channels SCI,REF,DIFF --normalisation l2 \\
      --cutouts ztf/cutouts --n 20
"""


def build_parser():
    """The argument parser of ``otrain-grad-cam``."""
    parser = make_parser(
        PROG,
        "Draw Grad-CAM heat maps: which pixels of each cutout drove the real/bogus call.",
        _EPILOG,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--cube",
        dest="cube",
        metavar="NPZ",
        help="labelled datacube (.npz, from otrain-convert or O'TRAIN)",
    )
    source.add_argument(
        "--cutouts",
        metavar="FOLDER",
        help="folder of cutout FITS files to score (no labels)",
    )
    parser.add_argument(
        "--model",
        "--model-path",
        dest="model",
        required=True,
        metavar="FILE",
        help="trained model (.keras or .h5; legacy Keras models need --channels and "
        "--normalisation)",
    )
    parser.add_argument(
        "--outdir",
        "--cam_path",
        dest="outdir",
        default="grad_cam",
        metavar="FOLDER",
        help="folder of the PNG files (created if needed)",
    )
    parser.add_argument(
        "--n",
        "--n_random",
        dest="n",
        type=positive_int,
        default=30,
        help="most cutouts per gallery",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="decision threshold: a candidate is called real when P(real) >= threshold",
    )
    parser.add_argument(
        "--layer",
        default=None,
        help="convolution layer to explain (default: the last one); a wrong name lists them",
    )
    add_legacy_model_arguments(parser)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random choice of correctly classified candidates",
    )
    return parser


def _body(args):
    from ..gradcam import grad_cam_galleries, read_stamps
    from ..model_files import load_model

    # Check the cheap things first: the output folder and the input's existence.
    outdir = check_output_folder(args.outdir, "the heat maps of an earlier run")
    classifier = load_model(args.model, channels=args.channels, normalisation=args.normalisation)
    channels = tuple(classifier.channels_)
    shape = tuple(int(s) for s in classifier.model_.input_shape[1:])
    say(f"model {args.model}: {'x'.join(map(str, shape))} stamps of {','.join(channels)}")
    read = read_stamps(classifier, cube=args.cube, cutouts=args.cutouts)
    say(read["description"])
    result = grad_cam_galleries(
        classifier,
        read["stamps"],
        outdir,
        labels=read["labels"],
        ids=read["ids"],
        mags=read["mags"],
        channel_names=channels,
        n=args.n,
        threshold=args.threshold,
        layer=args.layer,
        random_state=args.seed,
    )
    height, width = result["layer_shape"]
    say(
        f"Grad-CAM at layer {result['layer']} ({height}x{width} feature maps, resampled "
        f"to {shape[0]}x{shape[1]}), class called at P(real) >= {args.threshold:g}"
    )
    for group in result["groups"]:
        head = f"  {group['description']}"
        if group["name"] != "highest_lowest":
            head += f" ({group['name'].replace('_', ' ')})"
        head += f": {group['total']}"
        if group["path"] is None:
            say(f"{head}, no gallery")
        else:
            say(f"{head}, {group['shown']} drawn -> {group['path']}")
    say(f"heat maps written to {outdir}")
    return 0


#: Library parameters -> flags, for the error lines.
FLAGS = {"cube": "--cube", "cutouts": "--cutouts", "channels": "otrain-convert --channels"}


def main(argv=None):
    """Run ``otrain-grad-cam``; return the exit code (0, or 2 on bad input)."""
    args = build_parser().parse_args(argv)
    return run(PROG, _body, args, needs_tensorflow=True, flags=FLAGS)


if __name__ == "__main__":
    raise SystemExit(main())
