"""otrain-demo: the whole workflow on synthetic candidates, in one command."""

import shlex
import sys

from ._common import check_output_folder, make_parser, run, say

PROG = "otrain-demo"


def build_parser():
    parser = make_parser(
        PROG,
        "Make a synthetic training set and candidates with otrain.datasets, then run "
        "otrain-convert, otrain-train, otrain-infer, otrain-checkinfer and "
        "otrain-optimise-dataset-size on them in OUTDIR, printing each command as it runs.",
        epilog="example: otrain-demo --outdir otrain-demo",
    )
    parser.add_argument(
        "--outdir", default="otrain-demo", help="folder for everything the demo makes"
    )
    parser.add_argument("--n-train", type=int, default=600, help="synthetic training cutouts")
    parser.add_argument(
        "--n-candidates", type=int, default=300, help="synthetic candidates to score"
    )
    parser.add_argument(
        "--triplets", action="store_true", help="SCI/REF/DIFF triplets instead of difference images"
    )
    parser.add_argument("--stamp-size", type=int, default=64, help="side of the synthetic stamps")
    parser.add_argument("--epochs", type=int, default=30, help="maximum training epochs")
    parser.add_argument(
        "--network",
        default="vgg6",
        choices=("otrain", "vgg6"),
        help="network; vgg6 keeps the demo to minutes on a laptop CPU",
    )
    parser.add_argument(
        "--n-sections",
        type=int,
        default=4,
        help="training-set sizes tried by optimise-dataset-size",
    )
    parser.add_argument(
        "--skip-dataset-size", action="store_true", help="skip the slowest step, the learning curve"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    return parser


def _step(title, prog, main, argv):
    say("")
    say(f"== {title}")
    say(f"$ {prog} {shlex.join(argv)}")
    code = main(argv)
    if code:
        from ..exceptions import OTrainError

        raise OTrainError(f"{prog} failed (exit code {code}); see its error above")


def _demo(args):
    from ..datasets import make_demo_data
    from . import checkinfer, convert, infer, optimise_dataset_size, train

    out = check_output_folder(args.outdir, "the outputs of an earlier demo")
    say(f"making synthetic candidates in {out / 'data'} ...")
    made = make_demo_data(
        out / "data",
        n_train=args.n_train,
        n_candidates=args.n_candidates,
        size=args.stamp_size,
        triplets=args.triplets,
        random_state=args.seed,
    )
    s = made["summary"]
    say(
        f"{s['n_true']} true and {s['n_false']} false training cutouts, {s['n_candidates']} "
        f"candidates of which {s['n_simulated']} simulated sources"
    )
    channels = ["--channels", "SCI,REF,DIFF"] if args.triplets else []
    seed = ["--seed", str(args.seed)]
    cube = out / "datacube" / "cube.npz"
    model = out / "model" / "CNN_training" / "demo.h5"
    _step(
        "1. datacube from true/ and false/",
        "otrain-convert",
        convert.main,
        [
            "--path",
            str(out / "datacube"),
            "--cube",
            "cube",
            "--cutouts",
            str(made["training"]),
            "--frac_true",
            "0.5",
            "--cutout-size",
            "-1",
            *channels,
            *seed,
        ],
    )
    _step(
        "2. training, with diagnostics on a held-out validation set",
        "otrain-train",
        train.main,
        [
            "--cube",
            str(cube),
            "--model-path",
            str(out / "model"),
            "--model-name",
            "demo",
            "--epochs",
            str(args.epochs),
            "--network",
            args.network,
            "--overwrite",
            *seed,
        ],
    )
    _step(
        "3. scoring the candidates",
        "otrain-infer",
        infer.main,
        ["--cutouts", str(made["candidates"]), "--model", str(model)],
    )
    _step(
        "4. checking the scores of the simulated sources",
        "otrain-checkinfer",
        checkinfer.main,
        [
            "--plots",
            str(out / "otrain_plots"),
            "--crossmatch",
            str(made["crossmatch"].parent),
            "--infer",
            str(made["candidates"]),
        ],
    )
    if not args.skip_dataset_size:
        _step(
            "5. how many training cutouts are needed? (learning curve)",
            "otrain-optimise-dataset-size",
            optimise_dataset_size.main,
            [
                "--cube",
                str(cube),
                "--model-path",
                str(out / "model"),
                "--model-name",
                "demo",
                "--epochs",
                str(min(args.epochs, 10)),
                "--n_sections",
                str(args.n_sections),
                "--folds",
                "2",
                "--outdir",
                str(out / "dataset_size"),
                "--network",
                args.network,
                *seed,
            ],
        )
    say("")
    say("== where the results are")
    say(f"training data            {made['training']}/true, {made['training']}/false")
    say(f"datacube                 {cube}")
    say(f"model                    {model}")
    say(f"training diagnostics     {model.with_suffix('')}/ (diagnostics.txt, *.png)")
    say(f"candidate scores         {made['candidates']}/infer_results.dat (and .ecsv)")
    say(f"check-infer plots        {out / 'otrain_plots' / 'CheckInfer'}/")
    if not args.skip_dataset_size:
        say(f"dataset-size study       {out / 'dataset_size'}/")
    return 0


def main(argv=None):
    """Run otrain-demo; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _demo, args, needs_tensorflow=True)


if __name__ == "__main__":
    sys.exit(main())
