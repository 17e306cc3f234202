"""otrain-grad-cam: Grad-CAM heat maps of candidates, as galleries of PNG files.

O'TRAIN's flags are kept (``--cube``, ``--model-path``, ``--cam_path``,
``--n_random``, ``--threshold``), with clearer aliases (``--model``, ``--outdir``,
``--n``).
"""

from pathlib import Path

from ._common import comma_list, make_parser, positive_int, run, say

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
    parser.add_argument(
        "--channels",
        type=comma_list,
        default=None,
        help="input channels of a legacy model, e.g. SCI,REF,DIFF (otrain models store them)",
    )
    parser.add_argument(
        "--normalisation",
        choices=("l2", "robust", "none"),
        default=None,
        help="normalisation a legacy model expects (braai: l2; otrain models store it)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random choice of correctly classified candidates",
    )
    return parser


def _body(args):
    from .._atomic import ensure_folder
    from ..gradcam import grad_cam_galleries
    from ..model_files import load_model

    # Check the cheap things first: the output folder and the input's existence.
    outdir = ensure_folder(args.outdir)
    source = Path(args.cube or args.cutouts)
    if args.cube and not source.is_file():
        raise FileNotFoundError(
            f"{source}: no such datacube; check --cube or build one with otrain-convert"
        )
    if args.cutouts and not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder of cutouts; check --cutouts")
    classifier = load_model(args.model, channels=args.channels, normalisation=args.normalisation)
    channels = tuple(classifier.channels_)
    shape = tuple(int(s) for s in classifier.model_.input_shape[1:])
    say(f"model {args.model}: {'x'.join(map(str, shape))} stamps of {','.join(channels)}")
    if args.cube:
        stamps, labels, ids, mags, what = _from_cube(source, channels)
    else:
        stamps, labels, ids, mags, what = _from_folder(source, channels, shape)
    say(what)
    result = grad_cam_galleries(
        classifier,
        stamps,
        outdir,
        labels=labels,
        ids=ids,
        mags=mags,
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


def _from_cube(path, channels):
    import numpy as np

    from ..datacube import load_datacube
    from ..exceptions import DatacubeError

    cube = load_datacube(path)
    missing = [c for c in channels if c not in cube.channels]
    if missing:
        raise DatacubeError(
            f"{path}: the model takes channels {','.join(channels)} but the datacube holds "
            f"{','.join(cube.channels)}; build a datacube with those channels "
            f"(otrain-convert --channels {','.join(channels)})"
        )
    index = [cube.channels.index(c) for c in channels]
    stamps = cube.cube if index == list(range(len(cube.channels))) else cube.cube[..., index]
    keywords = cube.keywords
    ids = _column(keywords, "candid")
    mags = _column(keywords, "mag")
    what = f"{path}: {len(cube)} cutouts ({cube.n_true} real, {cube.n_false} bogus)"
    return stamps, np.asarray(cube.labels), ids, mags, what


def _from_folder(folder, channels, shape):
    from ..cutouts import load_cutouts
    from ..datacube import CUTOUT_SUFFIXES, find_cutouts
    from ..exceptions import CutoutError

    paths = find_cutouts(folder)
    if not paths:
        raise CutoutError(
            f"{folder}: no cutout files ({', '.join(CUTOUT_SUFFIXES)}) in this folder; "
            "check --cutouts"
        )
    height, width = shape[:2]
    stamps, keywords, skipped = load_cutouts(
        paths,
        channels=channels,
        cutout_size=height if height == width else -1,
        shape=shape,
        on_error="skip",
    )
    if len(stamps) == 0:
        first = skipped[0][1] if skipped else "no file read"
        raise CutoutError(f"{folder}: none of the {len(paths)} cutouts fits the model ({first})")
    what = f"{folder}: {len(stamps)} cutouts read"
    if skipped:
        what += f", {len(skipped)} left out (first: {skipped[0][1]})"
    return stamps, None, _column(keywords, "candid"), _column(keywords, "mag"), what


def _column(table, name):
    """A keyword column for the titles, or None when it holds nothing known."""
    import numpy as np

    if name not in table.colnames:
        return None
    if name == "candid":
        values = [str(v) for v in table[name]]
        return values if any(values) else None
    values = np.asarray(table[name], dtype=np.float64)
    return values if np.isfinite(values).any() else None


def main(argv=None):
    """Run ``otrain-grad-cam``; return the exit code (0, or 2 on bad input)."""
    args = build_parser().parse_args(argv)
    return run(PROG, _body, args, needs_tensorflow=True)


if __name__ == "__main__":
    raise SystemExit(main())
