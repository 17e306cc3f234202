"""otrain-infer: score a folder of candidate cutouts with a trained model."""

import sys

from ._common import (
    add_legacy_model_arguments,
    add_scheduler_arguments,
    cluster_client,
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
        "(O'TRAIN's columns, scored candidates only; label1 = P(real), label0 = P(bogus); "
        "then label = 1 where label1 >= the model's threshold, 0.5 if it stores none) and "
        "CUTOUTS/infer_results.ecsv (every input file with its status: scored, edge, "
        "unreadable or wrong_size; each column described, and the model, its channels and "
        "normalisation, the threshold and the precision in its header). Results of an "
        "earlier run are replaced. A calibrated model gives calibrated probabilities.",
        epilog="example: otrain-infer --cutouts candidates --model model/CNN_training/test.h5\n"
        "on a Dask cluster: otrain-infer --cutouts candidates --model model.keras "
        "--scheduler tcp://host:8786",
    )
    parser.add_argument(
        "--cutouts",
        required=True,
        help="folder holding the candidate cutouts (FITS or alert files), or one alert file",
    )
    parser.add_argument("--model", required=True, help="model file (.h5 or .keras)")
    parser.add_argument(
        "--outdir",
        default=None,
        help="where to write the results (default: the --cutouts folder); checked before "
        "scoring starts",
    )
    parser.add_argument(
        "--score-edge",
        action="store_true",
        help="score the stamps flagged EDGE='True' too (NaN-padded at the image edge; the "
        "network sets NaN pixels to the background); by default they are listed with "
        "status edge and not scored",
    )
    add_legacy_model_arguments(parser)
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=-1,
        help="processes reading files beside the network, at most (-1: all cores); used "
        "where the network leaves cores free (a GPU) and for 4,000 files or more, else "
        "one thread reads",
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
        help="call a candidate real when P(real) >= THRESHOLD (default: the model's stored "
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
        "P(real) within 0.01 of float32 on its validation cutouts, else float32",
    )
    add_scheduler_arguments(parser, "score")
    return parser


def _infer(args):
    from pathlib import Path

    from ..alerts import is_alert_file, iter_references
    from ..datacube import find_cutouts

    if is_alert_file(args.cutouts) and Path(args.cutouts).is_file():
        # One alert file (an Avro container, a broker's Parquet file): its alerts.
        paths = list(iter_references(args.cutouts))
    else:
        paths = find_cutouts(args.cutouts)
    if not paths:
        from ..exceptions import CutoutError

        raise CutoutError(f"{args.cutouts}: holds no cutout (*.fits); check the folder")
    outputs = _check_outputs(args)
    say(f"loading model {args.model} ...")
    from ..inference import score_files, write_results
    from ..model_files import load_model

    classifier = load_model(args.model, channels=args.channels, normalisation=args.normalisation)
    shape = "x".join(map(str, classifier.model_.input_shape[1:]))
    channels = ", ".join(classifier.channels_)
    say(f"scoring {len(paths)} cutouts ({shape}, {channels}) ...")
    _note_unused_channels(paths, classifier.channels_, args)
    threshold = args.threshold
    source = "given"
    if threshold is None:
        threshold = classifier.threshold_
        source = "stored in the model"
    if threshold is None:
        threshold, source = 0.5, "default; the model stores none"
    if classifier.calibration_ is not None:
        say(f"the model is calibrated ({classifier.calibration_.method}): P(real) is calibrated")
    if args.mc_samples is not None:
        say(f"Monte-Carlo dropout: {args.mc_samples} draws per cutout (seed {args.seed})")
    scoring = {
        **({} if args.chunk_size is None else {"chunk_size": args.chunk_size}),
        "progress": _progress(len(paths)),
        "precision": args.precision,
        "threshold": threshold,
        "mc_samples": args.mc_samples,
        "random_state": args.seed,
        "every_input": True,
        "score_edge": args.score_edge,
    }
    if args.scheduler is None:
        table, summary = score_files(classifier, paths, n_jobs=args.n_jobs, **scoring)
    else:
        table, summary = _score_on_cluster(args, paths, scoring)
    status = table["status"]
    counts = {name: int((status == name).sum()) for name in dict.fromkeys(status)}
    n_scored = counts.get("scored", 0)
    if n_scored == 0 and len(table) and counts.get("edge", 0) < len(table):
        from ..exceptions import CutoutError

        first = table[status != "scored"][0]
        raise CutoutError(
            f"no cutout could be scored; first problem: {first['filename']}: {first['reason']}"
        )
    record = classifier.model_file_record_
    dat, ecsv = write_results(
        table,
        outputs[0].parent,
        model_name=Path(args.model).name,
        extra_meta={
            "model_file": str(Path(args.model).resolve()),
            "channels": list(classifier.channels_),
            "normalisation": record.get("normalisation"),
            "input_shape": list(record.get("input_shape", [])),
            "threshold": summary["threshold"],
            "threshold_source": source,
            "precision": summary["precision"],
            "calibration": None
            if classifier.calibration_ is None
            else classifier.calibration_.method,
            "score_edge": bool(args.score_edge),
            "counts": counts,
            **({"mc_samples": args.mc_samples, "mc_seed": args.seed} if args.mc_samples else {}),
        },
    )
    say(f"scored in {summary['precision']}: {summary['precision_note']}")
    _report(table, counts, args, ecsv)
    if n_scored:
        scored = table[status == "scored"]
        n_real = int(scored["label"].sum())
        say(
            f"{n_real} of {n_scored} called real at P(real) >= {summary['threshold']:g} "
            f"(threshold {source}; column label)"
        )
        if args.mc_samples:
            std = scored["label1_std"]
            say(f"label1_std from {float(std.min()):.3g} to {float(std.max()):.3g}")
    say(f"results written to {dat} (scored candidates) and {ecsv} (every file)")
    from ..plots import plot_survey_scores

    # Alerts carry the survey's own scores: P(real) against them, beside the tables.
    scored = table[status == "scored"]
    plot = plot_survey_scores(scored, Path(ecsv).with_name(f"{Path(ecsv).stem}_vs_survey.png"))
    if plot is not None:
        say(f"P(real) against the survey's own scores drawn in {plot}")
    return 0


def _check_outputs(args):
    """Check the result files can be written before any scoring; say what is replaced."""
    from pathlib import Path

    from ..exceptions import OutputError
    from ..inference import result_paths
    from ._common import check_outputs

    folder = Path(args.outdir or args.cutouts)
    if args.outdir is None and folder.is_file():
        folder = folder.parent  # one alert file: the results go beside it
    try:
        return check_outputs(result_paths(folder), "results of an earlier run")
    except OutputError as err:
        if args.outdir is None:
            raise OutputError(
                f"{err} (the results go to the --cutouts folder by default: give --outdir "
                "a folder you can write to)"
            ) from err
        raise


def _note_unused_channels(paths, channels, args):
    """One line when the files hold images the model does not use (SCI, REF...)."""
    from ..cutouts import image_names

    names = image_names(paths[0])
    unused = [n for n in names if n and n not in channels]
    if not unused or len(names) < 2:
        return
    if args.channels is not None:
        how = "give them in --channels to a legacy model that takes them"
    else:
        how = (
            f"a model using them is trained on a datacube converted with "
            f"--channels {','.join([*unused, *channels])}"
        )
    say(
        f"note: the cutouts also hold {', '.join(unused)}, which this model does not use "
        f"(it takes {', '.join(channels)}); {how}"
    )


def _report(table, counts, args, ecsv):
    """Counts by status; the first files not scored, and where the full list is."""
    from .._atomic import printable

    parts = [f"{counts.get('scored', 0)} candidates scored"]
    for status, words in (
        ("edge", "EDGE cutouts not scored (--score-edge scores them)"),
        ("unreadable", "unreadable files"),
        ("wrong_size", "files of another stamp size"),
    ):
        if counts.get(status):
            parts.append(f"{counts[status]} {words}")
    say(", ".join(parts))
    if "warning" in table.colnames and (table["warning"] != "").any():
        warned = table[table["warning"] != ""]
        say(
            f"{len(warned)} files read with a warning from astropy (column warning of {ecsv}); "
            f"the first: {printable(warned['filename'][0])}: {warned['warning'][0]}"
        )
    missed = table[table["status"] != "scored"]
    for row in missed[:5]:
        say(f"  not scored ({row['status']}): {printable(row['filename'])}: {row['reason']}")
    if len(missed) > 5:
        say(f"  ... and {len(missed) - 5} more: every file is listed with its status in {ecsv}")
    elif len(missed):
        say(f"  (listed with their status in {ecsv})")


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
