"""``otrain-optimise-dataset-size``: how many cutouts does the training set need?

Trains the network on growing subsets of a datacube with stratified k-fold
cross-validation, writes the scores against the training-set size (CSV, ECSV and
figures) and prints the smallest size whose validation MCC is within ``--tolerance``
of the best. O'TRAIN's flags are kept: ``--model-path`` and ``--model-name`` say
where results go (``MODEL_PATH/MODEL_NAME/dataset_size`` unless ``--outdir`` is
given) and ``MODEL_NAME`` prefixes the output files; no model is saved, since each
network only serves one point of the curve.
"""

import argparse
import logging
from pathlib import Path

from ._common import (
    add_scheduler_arguments,
    check_outputs,
    cluster_client,
    make_parser,
    positive_int,
    run,
    say,
)

PROG = "otrain-optimise-dataset-size"

_EPILOG = """\
example:
  otrain-optimise-dataset-size --cube cube.npz --model-path model --model-name NAME \\
      --epochs 10 --n_sections 20 --outdir results

Each of the N_SECTIONS sizes is trained FOLDS times (N_SECTIONS x FOLDS networks of
at most EPOCHS epochs each): start with few sections and the vgg6 network to see how
long one training takes. --n-jobs trains several networks at once, each limited to
cores / n-jobs threads. --scheduler trains them on the workers of a Dask cluster
instead (one training per worker thread), with the same results.
"""


def build_parser():
    """The command's argument parser."""
    parser = make_parser(
        PROG,
        "Train the network on growing subsets of a datacube and find how many cutouts "
        "a training set needs (learning curves of MCC, F1, accuracy and loss).",
        epilog=_EPILOG,
    )
    parser.add_argument("--cube", required=True, help="The datacube (.npz) of labelled cutouts.")
    parser.add_argument(
        "--model-path",
        dest="model_path",
        help="Folder of models and their results (O'TRAIN's flag): outputs go to "
        "MODEL_PATH/MODEL_NAME/dataset_size unless --outdir is given.",
    )
    parser.add_argument(
        "--model-name",
        dest="model_name",
        help="Name of the model, prefix of the output files (default: the cube's file name).",
    )
    parser.add_argument(
        "--outdir",
        help="Folder of the outputs (default: MODEL_PATH/MODEL_NAME/dataset_size).",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=10,
        help="Maximum epochs of each training (early stopping may end it sooner).",
    )
    parser.add_argument(
        "--n_sections",
        "--n-sections",
        dest="n_sections",
        type=int,
        default=20,
        help="Number of training-set sizes, evenly spaced up to a whole training fold.",
    )
    parser.add_argument("--dropout", type=float, default=0.3, help="Dropout rate.")
    parser.add_argument(
        "--folds", type=int, default=3, help="Folds of the stratified cross-validation."
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the folds, the order and the networks."
    )
    parser.add_argument(
        "--n-jobs",
        dest="n_jobs",
        type=int,
        default=1,
        help="Networks trained at once, each in its own process (-1: one per core).",
    )
    add_scheduler_arguments(parser, "Train")
    # Names are checked against otrain.networks once the command runs: importing it
    # here would load TensorFlow for --help.
    parser.add_argument(
        "--network",
        default="otrain",
        help="Built-in network: otrain (O'TRAIN's) or vgg6 (smaller, faster on a CPU).",
    )
    parser.add_argument(
        "--normalisation",
        default="robust",
        help="Per-stamp normalisation: robust, l2 or none (O'TRAIN's).",
    )
    parser.add_argument(
        "--batch-size", dest="batch_size", type=positive_int, default=64, help="Batch size."
    )
    parser.add_argument(
        "--min-size",
        dest="min_size",
        type=int,
        help="Smallest training-set size (default: five cutouts of each class).",
    )
    parser.add_argument(
        "--tolerance",
        type=_tolerance,
        default=0.02,
        help="A size is enough when its validation MCC is within this of the best.",
    )
    return parser


def _tolerance(text):
    # Checked while parsing: a bad value must not surface after hours of training.
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (an MCC difference), got {text!r}")
    return value


# The files of otrain.dataset_size.write_dataset_size_report, after the name prefix.
_REPORT_FILES = (
    "dataset_size.csv",
    "dataset_size.ecsv",
    *(f"{m}_dataset_size.png" for m in ("mcc", "f1", "accuracy", "gap", "loss")),
)


def _outdir(args):
    name = args.model_name or Path(args.cube).name.removesuffix(".npz")
    if args.outdir is not None:
        return Path(args.outdir), name
    return Path(args.model_path) / name / "dataset_size", name


def _body(args):
    from ..classifier import CutoutClassifier
    from ..dataset_size import (
        dataset_size_answer,
        dataset_size_curve,
        dataset_size_notes,
        format_dataset_size_table,
        write_dataset_size_report,
    )
    from ..networks import NETWORKS, NORMALISATIONS

    for option, value, allowed in (
        ("--network", args.network, NETWORKS),
        ("--normalisation", args.normalisation, NORMALISATIONS),
    ):
        if value not in allowed:
            raise ValueError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    # Many small models are fitted in one process: TensorFlow's notices about
    # retraced functions are expected here, and would bury the progress lines.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    outdir, name = _outdir(args)
    # Fail on an unwritable folder now, not after hours of training; the tables and
    # plots are derived from the cube, which is still there: they are replaced.
    prefix = f"{name}_" if name else ""
    check_outputs(
        [outdir / f"{prefix}{stem}" for stem in _REPORT_FILES],
        "the dataset-size report of an earlier run",
    )
    estimator = CutoutClassifier(
        network=args.network,
        normalisation=args.normalisation,
        dropout=args.dropout,
        batch_size=args.batch_size,
        epochs=args.epochs,
        random_state=args.seed,
    )
    settings = {
        "estimator": estimator,
        "n_sections": args.n_sections,
        "folds": args.folds,
        "random_state": args.seed,
        "n_jobs": args.n_jobs,
        "min_size": args.min_size,
        # One line per finished training, and joblib's running count.
        "verbose": 2,
    }
    if args.scheduler is None:
        table = dataset_size_curve(args.cube, **settings)
    else:
        with cluster_client(args, lambda workers: f"training on {workers}") as client:
            table = dataset_size_curve(args.cube, client=client, **settings)
    paths = write_dataset_size_report(table, outdir, args.tolerance, name=name)
    say(format_dataset_size_table(table))
    say(f"wrote {len(paths)} files to {outdir}: {', '.join(p.name for p in paths.values())}")
    for note in dataset_size_notes(table, args.tolerance):
        say(f"note: {note}")
    say(dataset_size_answer(table, args.tolerance))
    return 0


def main(argv=None):
    """Run ``otrain-optimise-dataset-size``; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.outdir is None and args.model_path is None:
        parser.error("say where the results go: give --outdir DIR or --model-path PATH")
    return run(PROG, _body, args, needs_tensorflow=True)
