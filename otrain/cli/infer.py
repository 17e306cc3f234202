"""otrain-infer: score a folder of candidate cutouts with a trained model."""

import sys

from ._common import (
    add_scheduler_arguments,
    cluster_client,
    comma_list,
    make_parser,
    positive_int,
    run,
    say,
)

PROG = "otrain-infer"


def build_parser():
    parser = make_parser(
        PROG,
        "Score candidate cutouts with a trained model. Writes CUTOUTS/infer_results.dat "
        "(O'TRAIN's columns; label0 = P(false), label1 = P(true); then label = 1 where "
        "label1 >= the model's threshold, 0.5 if it stores none) and "
        "CUTOUTS/infer_results.ecsv (with the model, threshold and otrain version in its "
        "metadata). A calibrated model gives calibrated probabilities.",
        epilog="example: otrain-infer --cutouts candidates --model model/CNN_training/test.h5\n"
        "on a Dask cluster: otrain-infer --cutouts candidates --model model.keras "
        "--scheduler tcp://host:8786",
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
    parser.add_argument(
        "--n-jobs", type=int, default=-1, help="processes reading files (-1: all cores)"
    )
    parser.add_argument(
        "--prob-ratio",
        "--probratio",
        type=float,
        default=None,
        help="accepted so that O'TRAIN scripts run unchanged; O'TRAIN never used it, "
        "and it has no effect here either",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="call a candidate real when label1 >= THRESHOLD (default: the model's stored "
        "threshold, else 0.5)",
    )
    parser.add_argument(
        "--mc-samples",
        type=int,
        default=None,
        help="Monte-Carlo dropout: score each cutout N times with dropout on; label1 is "
        "the mean and label1_std the spread (the network's uncertainty)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo dropout draws")
    parser.add_argument(
        "--chunk-size",
        type=positive_int,
        default=None,
        help="files read and scored at a time (default: otrain.inference.score_files' "
        "own); on a cluster, files per task: smaller chunks spread a few thousand "
        "files over more workers. Monte-Carlo draws depend on it: compare runs with "
        "the same value",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="arithmetic of the network; auto: bfloat16 (about twice as fast) where the "
        "CPU or GPU has it and the model's stored check (written by otrain-train) shows "
        "P(true) within 0.01 of float32 on its validation cutouts, else float32",
    )
    add_scheduler_arguments(parser, "score")
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
    threshold = args.threshold
    source = "given"
    if threshold is None:
        threshold = classifier.threshold_
        source = "stored in the model"
    if threshold is None:
        threshold, source = 0.5, "default; the model stores none"
    if classifier.calibration_ is not None:
        say(f"the model is calibrated ({classifier.calibration_.method}): label1 is calibrated")
    if args.mc_samples is not None:
        say(f"Monte-Carlo dropout: {args.mc_samples} draws per cutout (seed {args.seed})")
    scoring = {
        **({} if args.chunk_size is None else {"chunk_size": args.chunk_size}),
        "progress": _progress(len(paths)),
        "precision": args.precision,
        "threshold": threshold,
        "mc_samples": args.mc_samples,
        "random_state": args.seed,
    }
    if args.scheduler is None:
        table, summary = score_files(classifier, paths, n_jobs=args.n_jobs, **scoring)
    else:
        table, summary = _score_on_cluster(args, paths, scoring)
    if summary["n_scored"] == 0 and summary["skipped"]:
        from ..exceptions import CutoutError

        raise CutoutError(f"no cutout could be scored; first problem: {summary['skipped'][0][1]}")
    dat, ecsv = write_results(
        table,
        Path(args.outdir or args.cutouts),
        model_name=Path(args.model).name,
        extra_meta={
            "channels": list(classifier.channels_),
            "threshold": summary["threshold"],
            "calibration": None
            if classifier.calibration_ is None
            else classifier.calibration_.method,
            **({"mc_samples": args.mc_samples, "mc_seed": args.seed} if args.mc_samples else {}),
        },
    )
    say(f"scored in {summary['precision']}: {summary['precision_note']}")
    say(
        f"{summary['n_scored']} candidates scored, {summary['n_edge']} EDGE cutouts skipped, "
        f"{len(summary['skipped'])} unreadable or mis-sized files skipped"
    )
    for _path, reason in summary["skipped"][:10]:
        say(f"  skipped {reason}")
    if len(summary["skipped"]) > 10:
        say(f"  ... and {len(summary['skipped']) - 10} more")
    if len(table):
        n_real = int(table["label"].sum())
        say(
            f"{n_real} of {len(table)} called real at P(true) >= {summary['threshold']:g} "
            f"(threshold {source}; column label)"
        )
        if args.mc_samples:
            std = table["label1_std"]
            say(f"label1_std from {float(std.min()):.3g} to {float(std.max()):.3g}")
    say(f"results written to {dat} and {ecsv}")
    return 0


def _progress(total):
    """Report progress about every tenth of the files, however small the chunks."""
    step = max(1, total // 10)
    last = [0]

    def report(n_done):
        if n_done - last[0] >= step or n_done == total:
            last[0] = n_done
            say(f"  {n_done}/{total} read and scored")

    return report


def _score_on_cluster(args, paths, scoring):
    from ..cluster import score_files_distributed

    def plan(workers):
        chunk = args.chunk_size or "the default number of"
        return f"{workers}: chunks of {chunk} files scored on the workers"

    with cluster_client(args, plan) as client:
        return score_files_distributed(
            args.model,
            paths,
            client,
            channels=args.channels,
            normalisation=args.normalisation,
            **scoring,
        )


def main(argv=None):
    """Run otrain-infer; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _infer, args, needs_tensorflow=True)


if __name__ == "__main__":
    sys.exit(main())
