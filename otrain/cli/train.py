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
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="P(real) above which a candidate is called real, for the diagnostics",
    )
    new = parser.add_argument_group("otrain options (not in O'TRAIN)")
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
        f"{len(cube)} cutouts {'x'.join(map(str, cube.cube.shape[1:]))} ({', '.join(cube.channels)}): "
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
        f"training ({args.network} network, {args.normalisation} normalisation, up to {args.epochs} epochs) ..."
    )
    train_on_cube(train, classifier)
    n_epochs = len(classifier.history_["loss"])
    save_model(classifier, model_file, channels=cube.channels, extra={"threshold": args.threshold})
    valid.save(report_dir / "validation_set" / "datacube" / "cube_validation.npz")
    p_real = classifier.predict_proba(valid.cube)[:, 1]
    report = write_report(
        valid.labels,
        p_real,
        report_dir,
        threshold=args.threshold,
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


def main(argv=None):
    """Run otrain-train; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _train, args, needs_tensorflow=True)


if __name__ == "__main__":
    sys.exit(main())
