"""otrain-label: sort candidate cutouts into true/ and false/, by eye or by catalogue."""

import sys

from ._common import comma_list, make_parser, positive_int, run, say

PROG = "otrain-label"


def build_parser():
    parser = make_parser(
        PROG,
        "Sort the candidate cutouts of CUTOUTS into OUT/true/ and OUT/false/ (the layout "
        "otrain-convert --cutouts reads) in a local web page: keys r (real), b (bogus), "
        "s (skip), u (undo), g (grid view), ? (help). Every decision is appended at once "
        "to OUT/labels.csv; the files are copied (originals never change). With "
        "--crossmatch, candidates within --radius of a catalogue source are filed as "
        "real instead, without a page.",
        epilog="examples:\n"
        "  otrain-label --cutouts candidates --out training\n"
        "  otrain-label --cutouts candidates --out training --model model.keras "
        "--order uncertainty\n"
        "  otrain-label --cutouts candidates --out training --crossmatch vsx.fits --radius 2",
    )
    parser.add_argument("--cutouts", required=True, help="folder of candidate cutouts")
    parser.add_argument(
        "--out", required=True, help="training folder: labels.csv, true/ and false/ go there"
    )
    parser.add_argument(
        "--link",
        action="store_true",
        help="hard-link the files into true/ and false/ instead of copying them",
    )
    parser.add_argument("--user", default=None, help="name in labels.csv (default: login name)")
    page = parser.add_argument_group("the page")
    page.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on; any non-loopback address requires the token printed in the URL",
    )
    page.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    page.add_argument(
        "--token", default=None, help="token for a non-loopback --host (default: a random one)"
    )
    page.add_argument(
        "--channels",
        type=comma_list,
        default=None,
        help="channels to show, e.g. DIFF (default: every image of each file)",
    )
    page.add_argument(
        "--grid-size", type=positive_int, default=30, help="candidates per grid page (g)"
    )
    page.add_argument(
        "--model",
        default=None,
        help="model file: shows P(real) and orders the candidates (TensorFlow loads only then)",
    )
    page.add_argument(
        "--order",
        choices=("random", "name", "uncertainty", "mc-dropout", "score"),
        default=None,
        help="order of the candidates; default uncertainty (closest to the model's "
        "threshold first) with --model, random (seeded) without",
    )
    page.add_argument(
        "--mc-samples", type=positive_int, default=20, help="dropout draws of --order mc-dropout"
    )
    page.add_argument(
        "--model-channels",
        type=comma_list,
        default=None,
        help="channels of a legacy --model without otrain metadata, e.g. SCI,REF,DIFF",
    )
    page.add_argument(
        "--normalisation",
        choices=("l2", "robust", "none"),
        default=None,
        help="normalisation of a legacy --model without otrain metadata (braai: l2)",
    )
    page.add_argument("--seed", type=int, default=0, help="seed of the random order")
    cross = parser.add_argument_group("catalogue crossmatch (no page)")
    cross.add_argument(
        "--crossmatch",
        default=None,
        metavar="CATALOG",
        help="catalogue of known variable stars / transients (CSV, ECSV, FITS, VOTable)",
    )
    cross.add_argument("--radius", type=float, default=2.0, help="match radius in arcseconds")
    cross.add_argument("--ra-key", default="RA", help="header keyword of the candidates' RA")
    cross.add_argument("--dec-key", default="DEC", help="header keyword of the candidates' Dec")
    cross.add_argument("--ra-col", default=None, help="catalogue RA column (default: ra, any case)")
    cross.add_argument(
        "--dec-col", default=None, help="catalogue Dec column (default: dec, any case)"
    )
    return parser


def _crossmatch(args):
    from ..crossmatch import label_by_crossmatch

    summary = label_by_crossmatch(
        args.cutouts,
        args.out,
        args.crossmatch,
        radius=args.radius,
        ra_key=args.ra_key,
        dec_key=args.dec_key,
        ra_col=args.ra_col,
        dec_col=args.dec_col,
        link=args.link,
        user=args.user,
        say=say,
    )
    say(summary.text())
    return 0


def _serve(args):
    from ..labelling import make_server, open_session

    if args.model is not None:
        from ._common import load_tensorflow

        load_tensorflow()
    session = open_session(
        args.cutouts,
        args.out,
        model=args.model,
        order=args.order,
        mc_samples=args.mc_samples,
        channels=args.channels,
        model_channels=args.model_channels,
        normalisation=args.normalisation,
        link=args.link,
        user=args.user,
        grid_size=args.grid_size,
        random_state=args.seed,
        say=say,
    )
    server, url = make_server(session, host=args.host, port=args.port, token=args.token)
    session.warm_up()
    progress = session.progress()
    say(
        f"{progress['total']} candidates, {progress['done']} labelled already "
        f"({progress['real']} real, {progress['bogus']} bogus, {progress['skip']} skipped); "
        f"decisions go to {session.store.path}"
    )
    say(f"open {url}  (Ctrl-C stops the server; every decision is saved already)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        say("stopped; run the same command again to resume")
    finally:
        server.server_close()
    return 0


def _label(args):
    if args.crossmatch is not None:
        return _crossmatch(args)
    return _serve(args)


def main(argv=None):
    """Run ``otrain-label``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, _label, args)


if __name__ == "__main__":
    sys.exit(main())
