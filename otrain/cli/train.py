"""otrain-train: train a classifier on a datacube and write its diagnostics."""

import sys

from ._common import make_parser, run, say

PROG = "otrain-train"


def build_parser():
    parser = make_parser(
        PROG,
        "Train the CNN on a datacube. The model is stored at "
        "MODEL_PATH/CNN_training/NAME.h5, its plots, diagnostics and validation cube in "
        "MODEL_PATH/CNN_training/NAME/.",
        epilog="example: otrain-train --cube datacube_test/cube.npz --model-path model "
        "--model-name test --epochs 30",
    )
    parser.add_argument("--cube", required=True, help="the datacube (.npz) from otrain-convert")
    parser.add_argument("--model-path", required=True, help="folder where the model is stored")
    parser.add_argument(
        "--model-name", required=True, help="name of the model (a .keras ending picks that format)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=30,
        help="maximum number of epochs (early stopping ends sooner)",
    )
    parser.add_argument(
        "--frac", type=float, default=0.15, help="fraction of the cube held out for validation"
    )
    parser.add_argument("--dropout", type=float, default=0.3, help="dropout rate")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="P(real) at or above which a candidate is called real, stored in the model "
        "(default: 0.5)",
    )
    new = parser.add_argument_group("otrain options (not in O'TRAIN)")
    choice.add_argument(
        "--target-recall",
        type=float,
        default=None,
        help="choose the highest threshold that keeps this fraction of the real "
        "validation candidates (e.g. 0.99) and store it in the model",
    )
    choice.add_argument(
        "--target-fpr",
        type=float,
        default=None,
        help="choose the lowest threshold that calls at most this fraction of the bogus "
        "validation candidates real (e.g. 0.01) and store it in the model",
    )
    new.add_argument(
        "--calibrate",
        choices=("sigmoid", "isotonic"),
        default=None,
        help="calibrate P(real) on half of the validation part (sigmoid: small sets; "
        "isotonic: thousands of cutouts) and store the map in the model",
    )
    new.add_argument(
        "--network", default="otrain", choices=("otrain", "vgg6"), help="built-in network"
    )
    new.add_argument(
        "--normalisation",
        default="robust",
        choices=("robust", "l2", "none"),
        help="per-stamp normalisation: robust (median/MAD, asinh), l2 (braai), "
        "none (O'TRAIN's raw pixels)",
    )
    new.add_argument(
        "--no-augment", dest="augment", action="store_false", help="no random rotations and flips"
    )
    new.add_argument("--batch-size", type=int, default=64, help="training batch size")
    new.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's learning rate")
    new.add_argument(
        "--patience", type=int, default=8, help="epochs without improvement before stopping"
    )
    new.add_argument(
        "--class-weight",
        default="balanced",
        choices=("balanced", "none"),
        help="weights of the classes in the loss",
    )
    new.add_argument("--seed", type=int, default=0, help="seed: same seed, same model")
    new.add_argument(
        "--overwrite", action="store_true", help="replace an existing model of this name"
    )
    new.add_argument("--no-plots", dest="plots", action="store_false", help="skip the plots")
    new.add_argument(
        "--verbose",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="Keras progress: 0 none, 1 bar, 2 a line per epoch",
    )
    return parser


def _train(args):
    from ..datacube import load_datacube
    from ..training import model_output_paths, split_validation

    model_file, report_dir = model_output_paths(
        args.model_path, args.model_name, overwrite=args.overwrite
    )
    cube = load_datacube(args.cube)
    train, valid = split_validation(cube, args.frac, random_state=args.seed)
    say(
        f"{len(cube)} cutouts {'x'.join(map(str, cube.cube.shape[1:]))} "
        f"({', '.join(cube.channels)}): "
        f"{len(train)} for training, {len(valid)} held out for validation"
    )
    from ..classifier import CutoutClassifier
    from ..model_files import save_model
    from ..plots import plot_history
    from ..report import write_report
    from ..training import train_on_cube

    classifier = CutoutClassifier(
        network=args.network,
        normalisation=args.normalisation,
        augment=args.augment,
        dropout=args.dropout,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        class_weight=None if args.class_weight == "none" else args.class_weight,
        random_state=args.seed,
        verbose=args.verbose,
    )
    say(
        f"training ({args.network} network, {args.normalisation} normalisation, "
        f"up to {args.epochs} epochs) ..."
    )
    train_on_cube(train, classifier)
    n_epochs = len(classifier.history_["loss"])
    valid, threshold, extra = _tune(classifier, valid, args, report_dir)
    _check_bfloat16(classifier, valid)
    save_model(classifier, model_file, channels=cube.channels, extra=extra)
    valid.save(report_dir / "validation_set" / "datacube" / "cube_validation.npz")
    p_real = classifier.predict_proba(valid.cube)[:, 1]
    report = write_report(
        valid.labels,
        p_real,
        report_dir,
        threshold=threshold,
        keywords=valid.keywords,
        stamps=valid.cube if args.plots else None,
        channels=valid.channels,
        curves=args.plots,
    )
    if args.plots:
        for metric in ("loss", "accuracy"):
            plot_history(classifier.history_, report_dir / f"{metric}_vs_epochs.png", metric=metric)
    say(f"trained for {n_epochs} epochs; diagnostics on the {len(valid)} validation cutouts:")
    say(report["text"])
    for what, why in report["skipped"]:
        say(f"skipped {what}: {why}")
    say(f"model written to {model_file}")
    say(f"plots, diagnostics and validation cube in {report_dir}")
    return 0


def _check_bfloat16(classifier, valid):
    """Store how far bfloat16 scoring moves P(real) on the validation cutouts."""
    check = classifier.check_bfloat16(valid.cube)
    verdict = (
        "otrain-infer will score in bfloat16 where the CPU has it"
        if check["passed"]
        else f"over {check['tolerance']:g}: otrain-infer will score in float32"
    )
    say(
        f"bfloat16 check: P(real) moves by at most {check['max_difference']:.2g} on the "
        f"{check['n_stamps']} validation cutouts ({verdict})"
    )


def _tune(classifier, valid, args, report_dir):
    """Calibrate and choose the threshold on half of ``valid``; evaluate on the other.

    The calibration map and the threshold are fitted on the "tuning" half; the
    diagnostics are computed on the "evaluation" half, which neither has seen, so the
    Brier score, recall and false-positive rate reported are honest estimates.
    Without --calibrate or --target-*, the whole validation part is evaluated.
    """
    from ..diagnostics import binary_diagnostics
    from ..thresholds import DEFAULT_THRESHOLD, choose_threshold
    from ..training import split_validation

    target = {"target_recall": args.target_recall, "target_fpr": args.target_fpr}
    target = {k: v for k, v in target.items() if v is not None}
    if not args.calibrate and not target:
        threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        return valid, threshold, {"threshold": threshold}
    for name, value in target.items():
        if not 0 < value <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must lie in (0, 1], got {value}")
    tune, evaluate = split_validation(valid, 0.5, random_state=args.seed)
    tune.save(report_dir / "validation_set" / "datacube" / "cube_tuning.npz")
    say(
        f"validation part split in two: {len(tune)} cutouts to calibrate and choose the "
        f"threshold (cube_tuning.npz), {len(evaluate)} to evaluate (cube_validation.npz)"
    )
    extra = {}
    if args.calibrate:
        before = binary_diagnostics(evaluate.labels, classifier.predict_proba(evaluate.cube)[:, 1])[
            "brier"
        ]
        classifier.calibrate(tune.cube, tune.labels, method=args.calibrate)
        after = binary_diagnostics(evaluate.labels, classifier.predict_proba(evaluate.cube)[:, 1])[
            "brier"
        ]
        say(
            f"calibrated ({classifier.calibration_!r}); Brier score on the evaluation "
            f"half: {before:.4f} before, {after:.4f} after calibration (lower is better)"
        )
    if target:
        threshold = choose_threshold(
            tune.labels, classifier.predict_proba(tune.cube)[:, 1], **target
        )
        ((name, value),) = target.items()
        extra["threshold_rule"] = {name: value, "n_tuning": len(tune)}
        p_eval = classifier.predict_proba(evaluate.cube)[:, 1]
        diag = binary_diagnostics(evaluate.labels, p_eval, threshold)
        say(
            f"threshold {threshold:.4g} chosen for {name.replace('_', ' ')} {value:g}; on the "
            f"evaluation half: recall {diag['recall']:.3f}, false-positive rate "
            f"{diag['fpr']:.3f}"
        )
    else:
        threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    extra["threshold"] = threshold
    return evaluate, threshold, extra


def main(argv=None):
    """Run otrain-train; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _train, args, needs_tensorflow=True)


if __name__ == "__main__":
    sys.exit(main())
