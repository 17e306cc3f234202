"""What every otrain command shares: --version, error handling, progress lines, outputs.

Overwrite policy (see :mod:`otrain._atomic`): outputs that cost a training are never
replaced without ``--overwrite``; outputs derived from inputs that are still there
(datacubes, results tables, plots) are replaced, and :func:`check_outputs` says so on
one line. Every command calls it before its long work.
"""

import argparse
import contextlib
import os
import sys
import time
import warnings

from .._atomic import printable
from .._tensorflow import load_tensorflow
from .._version import __version__

__all__ = [
    "make_parser",
    "MISPLACED_FLAGS",
    "run",
    "say",
    "EXIT_ERROR",
    "comma_list",
    "load_tensorflow",
    "add_legacy_model_arguments",
    "positive_int",
    "check_outputs",
    "check_output_folder",
]

#: Exit code of a command stopped by bad input or settings.
EXIT_ERROR = 2


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Show defaults where there is one worth showing; keep the epilog's line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            action.default is not None
            and action.default is not argparse.SUPPRESS
            and not isinstance(action.default, bool)
            and not action.required
            and "%(default)" not in text
        ):
            text += " (default: %(default)s)"
        return text


#: Flags often given to a command that does not take them -> where they belong.
#: A hint is shown only by a command without the flag.
MISPLACED_FLAGS = {
    "--channels": "the channels are chosen when the datacube is made: otrain-convert "
    "--channels SCI,REF,DIFF (a model takes its cube's channels)",
    "--cutout-size": "the stamp size is chosen when the datacube is made: otrain-convert "
    "--cutout-size N",
    "--frac_true": "the share of real stamps is chosen when the datacube is made: "
    "otrain-convert --frac_true F",
    "--network": "the network is chosen when training: otrain-train --network NAME (a "
    "model file stores its network)",
    "--epochs": "the number of epochs is a setting of training: otrain-train --epochs N",
}
for _flag, _alias in (("--cutout-size", "--cutout_size"), ("--frac_true", "--frac-true")):
    MISPLACED_FLAGS[_alias] = MISPLACED_FLAGS[_flag]


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors name the fix for misplaced flags.

    ``otrain-train --channels SCI,REF,DIFF`` is refused as argparse refuses any
    unknown flag, then one line per flag of :data:`MISPLACED_FLAGS` says where it
    belongs.
    """

    def parse_known_args(self, args=None, namespace=None):
        # Kept for error(): a missing required flag is reported before the unknown
        # ones, and the hint is as useful then.
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message):
        hints = self.misplaced_hints(getattr(self, "_given", None) or message.split())
        if not hints:
            super().error(message)
        self.print_usage(sys.stderr)
        lines = [f"{self.prog}: error: {message}"]
        lines += [f"{self.prog}: hint: {flag}: {hint}" for flag, hint in hints]
        self.exit(EXIT_ERROR, "\n".join(lines) + "\n")

    def misplaced_hints(self, words):
        """``[(flag, hint)]`` for the flags among ``words`` that belong to another command."""
        flags = dict.fromkeys(
            str(word).split("=", 1)[0] for word in words if str(word).startswith("--")
        )
        return [
            (flag, MISPLACED_FLAGS[flag])
            for flag in flags
            if flag in MISPLACED_FLAGS and flag not in self._option_string_actions
        ]


def make_parser(prog, description, epilog=None):
    """An ``ArgumentParser`` with otrain's ``--version``, help layout and usage hints.

    A flag that belongs to another command (``otrain-train --channels``) gets a
    hint line naming where it belongs (:data:`MISPLACED_FLAGS`).
    """
    parser = _Parser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (otrain) {__version__}")
    return parser


def positive_int(text):
    """Parse a whole number >= 1 (an ``argparse`` type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def comma_list(text):
    """Parse ``SCI,REF,DIFF`` into ``("SCI", "REF", "DIFF")``."""
    items = tuple(part.strip().upper() for part in text.split(",") if part.strip())
    if not items:
        raise argparse.ArgumentTypeError("give at least one name, e.g. DIFF or SCI,REF,DIFF")
    return items


def add_legacy_model_arguments(parser):
    """``--channels`` and ``--normalisation``: what a legacy model file does not store.

    otrain's model files store both; a Keras model from elsewhere (braai, O'TRAIN's
    own) needs them to be scored.
    """
    parser.add_argument(
        "--channels",
        type=comma_list,
        default=None,
        help="input channels of a legacy model without otrain metadata, e.g. SCI,REF,DIFF "
        "(otrain models store them; the channels of a datacube are chosen by otrain-convert)",
    )
    parser.add_argument(
        "--normalisation",
        choices=("l2", "robust", "none"),
        default=None,
        help="normalisation of a legacy model without otrain metadata (braai: l2; otrain "
        "models store it)",
    )


def add_scheduler_arguments(parser, what):
    """``--scheduler`` and ``--scheduler-timeout``: run ``what`` on a Dask cluster."""
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help=f"{what} on a Dask cluster: the scheduler's address (tcp://host:8786) or its "
        'scheduler file (JSON); --n-jobs is then ignored. Needs pip install "otrain[dask]"; '
        "the workers read the files under the same paths",
    )
    parser.add_argument(
        "--scheduler-timeout",
        dest="scheduler_timeout",
        type=float,
        default=60,
        metavar="SECONDS",
        help="how long to wait for the scheduler, then for a first worker",
    )


@contextlib.contextmanager
def cluster_client(args, plan):
    """Connect to ``args.scheduler`` (see :func:`otrain.cluster.connect`), saying so.

    ``plan`` words what the cluster will do: ``plan("2 workers, 4 threads")``.
    """
    from ..cluster import connect

    say(f"connecting to the Dask scheduler {args.scheduler} ...")
    with connect(args.scheduler, timeout=args.scheduler_timeout) as client:
        workers = client.nthreads()
        say(plan(f"{len(workers)} workers, {sum(workers.values())} threads"))
        yield client


def say(message):
    """Print a progress or summary line to stdout, at once."""
    print(printable(message), flush=True)


def check_output_folder(folder, what):
    """Check that ``folder`` can be written before the long work; say if ``what`` is replaced.

    For commands that write a folder of derived outputs (plots, galleries,
    diagnostics): an earlier run's files there are replaced.
    """
    from pathlib import Path

    from .._atomic import check_folder

    folder = Path(folder)
    earlier = folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())
    check_folder(folder)
    if earlier:
        say(f"replacing {what} in {folder}")
    return folder


def check_outputs(paths, what, *, replace=True, refuse_hint="give --overwrite to replace it"):
    """Check that ``paths`` can be written before the long work; say what is replaced.

    Parameters
    ----------
    paths : iterable of path-like
        The command's output files.
    what : str
        What they are, for the "replacing" line (e.g. "results of an earlier run").
    replace : bool, default True
        False for outputs that cost a training: an existing one is then an error
        unless the user gave ``--overwrite``.
    refuse_hint : str
        How to proceed when an output exists and may not be replaced.

    Returns
    -------
    list of pathlib.Path
        ``paths``, as paths.
    """
    from pathlib import Path

    from .._atomic import check_outputs as check

    paths = [Path(p) for p in paths]
    existing = check(paths, replace=replace, refuse_hint=refuse_hint)
    if existing:
        say(f"replacing {what}: {', '.join(str(p) for p in existing)}")
    return paths


def run(prog, body, args, *, needs_tensorflow=False, flags=None):
    """Run ``body(args)``; turn known errors into one line on stderr and exit code 2.

    Errors of otrain's own family, and the ``ValueError``/``OSError`` that settings or
    files cause, are the user's to fix: they get one line. Anything else is a bug and
    keeps its traceback. Commands that train or score pass ``needs_tensorflow`` so
    that TensorFlow starts without its C++ start-up chatter. The library's errors name
    Python parameters; ``flags`` maps those a command sets to its flags
    (``{"validation_fraction": "--frac"}``), and the line names the flags.
    """
    from ..exceptions import OTrainError

    # Quiet TensorFlow's C++ start-up chatter in commands; users can override.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    start = time.perf_counter()
    if needs_tensorflow:
        load_tensorflow()
    try:
        with warnings.catch_warnings():
            # A warning reaches the user as one line of the command, never as a
            # Python source line.
            warnings.showwarning = _one_line_warning(prog)
            code = body(args)
        say(f"done in {time.perf_counter() - start:.1f} s")
    except (OTrainError, ValueError, OSError) as err:
        print(printable(f"{prog}: error: {_as_flags(_one_line(err), flags)}"), file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output was left half-written", file=sys.stderr)
        code = 130
    code = code or 0
    if needs_tensorflow and os.path.basename(sys.argv[0]) == prog:
        # This process is the command itself (not a test or a notebook calling
        # main()): its files are written and closed, so it ends now rather than
        # spend a second tearing TensorFlow's runtime down.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _one_line_warning(prog):
    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        print(printable(f"{prog}: warning: {text}"), file=file or sys.stderr, flush=True)

    return show


def _as_flags(text, flags):
    """``text`` with the Python parameters of ``flags`` named by their flags.

    ``name=value`` becomes ``--flag value``; the bare name becomes the flag where it
    can only be the parameter (it holds an underscore, or starts the message).
    """
    import re

    for name, flag in (flags or {}).items():
        text = re.sub(rf"(?<![\w-]){re.escape(name)}=", f"{flag} ", text)
        if "_" in name:
            text = re.sub(rf"(?<![\w-]){re.escape(name)}\b", flag, text)
        else:
            text = re.sub(rf"^{re.escape(name)}\b", flag, text)
    return text


def _one_line(err):
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return text or type(err).__name__
