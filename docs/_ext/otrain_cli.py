"""Sphinx extension: the ``otrain-*`` command reference, generated from the parsers.

``.. otrain-cli:: otrain-train`` (in MyST: a ```` ```{otrain-cli} otrain-train ````
fence) looks the command up in ``[project.scripts]`` of ``pyproject.toml``, imports
its module and renders the argument parser's ``format_help()`` as a literal block:
the page shows exactly what ``otrain-train -h`` prints, so it cannot drift from the
code. A module with its own ``build_parser()`` is asked for the parser directly;
otherwise its entry point is run with ``--help`` and the output captured.

At the end of reading, every command of ``[project.scripts]`` must have been
rendered somewhere: a command left out of the reference is a warning, and with
``sphinx-build -W`` an error. No dependency beyond Sphinx (no sphinx-argparse).
"""

import contextlib
import importlib
import io
import os
import tomllib
from pathlib import Path

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

#: Width of the rendered help, in characters (argparse reads $COLUMNS).
HELP_WIDTH = 88

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def console_scripts(pyproject=PYPROJECT):
    """``{command: "module:function"}`` of the ``[project.scripts]`` table."""
    with open(pyproject, "rb") as handle:
        return dict(tomllib.load(handle)["project"]["scripts"])


@contextlib.contextmanager
def _columns(width):
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def command_help(command, width=HELP_WIDTH, scripts=None):
    """The ``-h`` text of an ``otrain-*`` command, as the installed command prints it.

    Parameters
    ----------
    command : str
        A key of ``[project.scripts]``, e.g. ``"otrain-train"``.
    width : int, default 88
        Line width of the help.
    scripts : dict, optional
        The scripts table; read from ``pyproject.toml`` by default.

    Returns
    -------
    text : str
        The help.
    source : str
        The file of the command's module.
    """
    scripts = console_scripts() if scripts is None else scripts
    if command not in scripts:
        raise KeyError(
            f"{command!r} is not a command of [project.scripts] in {PYPROJECT}; "
            f"known: {', '.join(sorted(scripts))}"
        )
    module_name, _, function = scripts[command].partition(":")
    module = importlib.import_module(module_name)
    build = getattr(module, "build_parser", None)
    with _columns(width):
        # A build_parser imported from another command's module (otrain-plot-results
        # borrows otrain-diagnostics') is not this command's parser: run the entry
        # point instead, which builds the right one.
        if callable(build) and build.__module__ == module.__name__:
            text = build().format_help()
        else:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                getattr(module, function)(["--help"])
            text = out.getvalue()
    if not text.strip():
        raise RuntimeError(f"{command} printed no help for --help")
    return text.rstrip() + "\n", module.__file__


class OTrainCliDirective(SphinxDirective):
    """``.. otrain-cli:: COMMAND``: the command's ``-h`` output as a literal block."""

    required_arguments = 1
    has_content = False

    def run(self):
        command = self.arguments[0].strip()
        try:
            text, source = command_help(command)
        except Exception as err:  # any failure is shown where the directive stands
            raise self.error(f"otrain-cli: cannot render the help of {command}: {err}") from err
        self.env.note_dependency(str(PYPROJECT))
        self.env.note_dependency(source)
        documented = _documented(self.env)
        documented.setdefault(self.env.docname, set()).add(command)
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def _documented(env):
    if not hasattr(env, "otrain_cli_documented"):
        env.otrain_cli_documented = {}
    return env.otrain_cli_documented


def _purge(app, env, docname):
    _documented(env).pop(docname, None)


def _merge(app, env, docnames, other):
    _documented(env).update(_documented(other))


def _check_all_documented(app, env):
    documented = set().union(*_documented(env).values()) if _documented(env) else set()
    if not documented:
        return  # a partial build that reads no command page
    missing = sorted(set(console_scripts()) - documented)
    for command in missing:
        logger.warning(
            "command %s of [project.scripts] is missing from the command reference; "
            "add a section with '```{otrain-cli} %s```' to docs/cli.md",
            command,
            command,
        )


def setup(app):
    app.add_directive("otrain-cli", OTrainCliDirective)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-check-consistency", _check_all_documented)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
