"""otrain-train: train a classifier on a datacube and write its diagnostics."""

import sys

from ._common import check_output_folder, check_outputs, make_parser, run, say

PROG = "otrain-train"

# Library parameters -> this command's flags, for the error lines.
FLAGS = {
    "validation_fraction": "--frac",
    "random_state": "--seed",
    "target_recall": "--target-recall",
    "target_fpr": "--target-fpr",
    "threshold": "--threshold",
    "calibrate": "--calibrate",
    "learning_rate": "--learning-rate",
    "batch_size": "--batch-size",
    "epochs": "--epochs",
    "dropout": "--dropout",
    "patience": "--patience",
    "ensemble": "--ensemble",
    "init": "--init",
}


def build_parser():
    from .._defaults import TRAINING as default

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
        default=default["epochs"],
        help="maximum number of epochs, passes over the training cutouts, each cutout "
        "in its 8 rotations and flips (early stopping usually ends sooner)",
    )
    parser.add_argument(
        "--frac", type=float, default=0.15, help="fraction of the cube held out for validation"
    )
    parser.add_argument("--dropout", type=float, default=default["dropout"], help="dropout rate")
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
        "candidates (e.g. 0.99) and store it in the model; chosen on the out-of-fold "
        "scores with --ensemble, else on half of the validation part",
    )
    choice.add_argument(
        "--target-fpr",
        type=float,
        default=None,
        help="choose the lowest threshold that calls at most this fraction of the bogus "
        "candidates real (e.g. 0.01) and store it in the model; chosen like "
        "--target-recall",
    )
    new.add_argument(
        "--calibrate",
        choices=("sigmoid", "isotonic"),
        default=None,
        help="calibrate P(real) and store the map in the model (sigmoid: small sets; "
        "isotonic: thousands of cutouts): on the ensemble's out-of-fold P(real) of the "
        "training cutouts, or with --ensemble 1 on half of the validation part",
    )
    new.add_argument(
        "--ensemble",
        type=int,
        default=default["ensemble"],
        help="networks trained on k-fold splits of the training cutouts and averaged "
        "(one model file); each stops early on its own fold, which also gives "
        "--calibrate and --target-* their out-of-fold scores; 1: a single network",
    )
    new.add_argument(
        "--network",
        default=default["network"],
        choices=("vgg6", "otrain"),
        help="built-in network: vgg6 (braai-like, 0.4M weights) or otrain (O'TRAIN's, "
        "8.9M weights, about 4x slower to train)",
    )
    new.add_argument(
        "--init",
        default=default["init"],
        metavar="MODEL",
        help="fine-tune: start from a trained network instead of random weights, 'braai' "
        "(ZTF's braai d6_m9, shipped with otrain; 63x63 SCI,REF,DIFF cutouts) or a model "
        "file; its network and normalisation are kept (--network, --normalisation and "
        "--dropout are then not used)",
    )
    new.add_argument(
        "--normalisation",
        default=default["normalisation"],
        choices=("robust", "l2", "none"),
        help="per-stamp normalisation: robust (median/MAD, asinh), l2 (braai), "
        "none (O'TRAIN's raw pixels)",
    )
    new.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="show each cutout once per epoch, not in its 8 rotations and flips",
    )
    new.add_argument(
        "--batch-size", type=int, default=default["batch_size"], help="training batch size"
    )
    new.add_argument(
        "--learning-rate",
        type=float,
        default=default["learning_rate"],
        help="Adam's learning rate",
    )
    new.add_argument(
        "--patience",
        type=int,
        default=default["patience"],
        help="epochs without a lower validation loss before stopping",
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
    from ..training import model_output_paths, train_model

    model_file, report_dir = model_output_paths(
        args.model_path, args.model_name, overwrite=args.overwrite
    )
    # Before hours of training: the model (replaced only with --overwrite, checked
    # above) and the report folder must be writable.
    check_outputs([model_file], "the model of this name (--overwrite)")
    check_output_folder(report_dir, "the plots and diagnostics of an earlier training")
    if args.init is not None:
        from ..pretrained import resolve_init

        resolve_init(args.init)  # a missing file is named before the cube is read
    cube = load_datacube(args.cube)
    from ..classifier import CutoutClassifier

    classifier = CutoutClassifier(
        network=args.network,
        normalisation=args.normalisation,
        augment=args.augment,
        dropout=args.dropout,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        ensemble=args.ensemble,
        init=args.init,
        class_weight=None if args.class_weight == "none" else args.class_weight,
        random_state=args.seed,
        verbose=args.verbose,
    )

    def on_split(train, valid):
        say(
            f"{len(cube)} cutouts {'x'.join(map(str, cube.cube.shape[1:]))} "
            f"({', '.join(cube.channels)}): "
            f"{len(train)} for training, {len(valid)} held out for validation"
        )
        networks = (
            "one network"
            if args.ensemble == 1
            else f"an ensemble of {args.ensemble} networks, each on {args.ensemble - 1} of "
            f"{args.ensemble} folds of the training cutouts"
        )
        if args.init is None:
            recipe = f"{args.network}, {args.normalisation} normalisation"
        else:
            from ..pretrained import resolve_init

            recipe = f"fine-tuning {resolve_init(args.init)[1]}"
        say(f"training {networks} ({recipe}, up to {args.epochs} epochs) ...")

    result = train_model(
        cube,
        classifier,
        validation_fraction=args.frac,
        calibrate=args.calibrate,
        threshold=args.threshold,
        target_recall=args.target_recall,
        target_fpr=args.target_fpr,
        random_state=args.seed,
        on_split=on_split,
    )
    _say_training(result.classifier, args)
    _say_tuning(result)
    report = result.write(model_file, report_dir, plots=args.plots, overwrite=args.overwrite)
    say(f"diagnostics on the {len(result.validation)} validation cutouts:")
    say(report["text"])
    for what, why in report["skipped"]:
        say(f"skipped {what}: {why}")
    say(f"model written to {model_file}")
    say(f"plots, diagnostics and validation cube in {report_dir}")
    return 0


def _say_training(clf, args):
    """How long the training ran, and why it ended, network by network."""
    runs = clf.networks_
    capped = sum(not run["stopped_early"] for run in runs)
    if capped == 0:
        ended = f"early stopping ended it ({args.patience} epochs without a lower validation loss)"
    else:
        which = "it" if len(runs) == 1 else f"{capped} of {len(runs)} networks"
        ended = f"{which} ran up to the --epochs cap ({args.epochs}): more epochs may still help"
    if len(runs) == 1:
        say(
            f"trained for {clf.n_epochs_} epochs ({clf.n_steps_} gradient steps); weights of "
            f"epoch {clf.best_epoch_} kept; {ended}"
        )
        return
    epochs = ", ".join(str(run["n_epochs"]) for run in runs)
    best = ", ".join(str(run["best_epoch"]) for run in runs)
    say(
        f"trained {len(runs)} networks for {epochs} epochs ({clf.n_steps_} gradient steps "
        f"in all); weights of epochs {best} kept; {ended}"
    )


def _say_tuning(result):
    """What calibration, the threshold rule and the bfloat16 check found."""
    if result.tuning is not None:
        say(
            f"validation part split in two: {len(result.tuning)} cutouts to calibrate and "
            f"choose the threshold (cube_tuning.npz), {len(result.validation)} to evaluate "
            "(cube_validation.npz)"
        )
    if result.tuned_on == "out-of-fold":
        what = " and ".join(
            w
            for w, done in (
                ("calibration", result.brier_after is not None),
                ("threshold", result.threshold_rule is not None),
            )
            if done
        )
        say(
            f"{what} fitted on the out-of-fold P(real) of the "
            f"{result.n_tuned} training cutouts (each scored by the network that did not "
            "train on it)"
        )
    if result.brier_after is not None:
        where = "validation part" if result.tuning is None else "evaluation half"
        say(
            f"calibrated ({result.classifier.calibration_!r}); Brier score on the {where}: "
            f"{result.brier_before:.4f} before, {result.brier_after:.4f} after "
            "calibration (lower is better)"
        )
    for caution in result.calibration_cautions:
        say(f"caution: {caution}")
    if result.threshold_rule is not None:
        rule = {k: v for k, v in result.threshold_rule.items() if k != "n_tuning"}
        ((name, value),) = rule.items()
        diag = result.threshold_diagnostics
        say(
            f"threshold {result.threshold:.4g} chosen for {name.replace('_', ' ')} {value:g}; "
            f"on the evaluation half: recall {diag['recall']:.3f}, false-positive rate "
            f"{diag['fpr']:.3f}"
        )
    check = result.bfloat16_check
    verdict = (
        "otrain-infer will score in bfloat16 where the CPU has it"
        if check["passed"]
        else f"over {check['tolerance']:g}: otrain-infer will score in float32"
    )
    say(
        f"bfloat16 check: P(real) moves by at most {check['max_difference']:.2g} on the "
        f"{check['n_stamps']} validation cutouts ({verdict})"
    )


def main(argv=None):
    """Run otrain-train; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _train, args, needs_tensorflow=True, flags=FLAGS)


if __name__ == "__main__":
    sys.exit(main())
