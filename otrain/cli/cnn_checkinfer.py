"""``otrain-cnn_checkinfer``: ``otrain-checkinfer`` under the name O'TRAIN's documentation uses.

O'TRAIN's README tells users to type ``otrain-cnn_checkinfer -h``; the command answers
to that name with its own name in its help and messages.
"""

from . import checkinfer
from ._common import run

PROG = "otrain-cnn_checkinfer"


def build_parser():
    """The argument parser of ``otrain-checkinfer``, named ``otrain-cnn_checkinfer``."""
    return checkinfer.build_parser(PROG)


def main(argv=None):
    """Run ``otrain-checkinfer`` as ``otrain-cnn_checkinfer``; return the exit code."""
    args = build_parser().parse_args(argv)
    return run(PROG, checkinfer._body, args)


if __name__ == "__main__":
    raise SystemExit(main())
