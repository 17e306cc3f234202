"""What every otrain command shares: --version, error handling, progress lines."""

import argparse
import os
import sys
import time

from .._version import __version__

__all__ = ["make_parser", "run", "say", "EXIT_ERROR", "comma_list"]

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


def make_parser(prog, description, epilog=None):
    """An ``ArgumentParser`` with otrain's ``--version`` and help layout."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (otrain) {__version__}")
    return parser


def comma_list(text):
    """Parse ``SCI,REF,DIFF`` into ``("SCI", "REF", "DIFF")``."""
    items = tuple(part.strip().upper() for part in text.split(",") if part.strip())
    if not items:
        raise argparse.ArgumentTypeError("give at least one name, e.g. DIFF or SCI,REF,DIFF")
    return items


def say(message):
    """Print a progress or summary line to stdout, at once."""
    print(message, flush=True)


def run(prog, body, args):
    """Run ``body(args)``; turn known errors into one line on stderr and exit code 2.

    Errors of otrain's own family, and the ``ValueError``/``OSError`` that settings or
    files cause, are the user's to fix: they get one line. Anything else is a bug and
    keeps its traceback.
    """
    from ..exceptions import OTrainError

    # Quiet TensorFlow's C++ start-up chatter in commands; users can override.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    start = time.perf_counter()
    try:
        code = body(args)
    except (OTrainError, ValueError, OSError) as err:
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output was left half-written", file=sys.stderr)
        return 130
    say(f"done in {time.perf_counter() - start:.1f} s")
    return code or 0


def _one_line(err):
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return text or type(err).__name__
