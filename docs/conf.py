"""Sphinx configuration of the otrain documentation.

Build it (warnings are errors) with::

    sphinx-build -W -b html docs docs/_build/html

Narrative pages are Markdown (MyST), the API and the command reference are generated:
the API by ``sphinx.ext.autodoc`` + ``numpydoc`` from the docstrings, the command
reference by the local ``otrain_cli`` extension (``docs/_ext/otrain_cli.py``) from the
argument parsers themselves, so neither can drift from the code.
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
# The package itself, also when it is not installed (a plain checkout).
sys.path.insert(0, str(DOCS.parent))

# Quiet TensorFlow's C++ start-up logging when autodoc imports the modules that load it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from otrain import __version__  # noqa: E402

project = "otrain"
author = "otrain developers"
copyright = "otrain developers"  # noqa: A001 (Sphinx's name)
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
    "otrain_cli",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: anchors for headings down to level 3, so that `[Notes](#notes)` and
# `formats.md#nan-policy` resolve; ::: fences for admonitions; definition lists;
# {{ substitutions }} of the defaults read from the code.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist", "substitution"]


def _defaults():
    """Defaults of ``CutoutClassifier`` and ``otrain-train``, read from the code.

    The guide quotes them as ``{{ lib.normalisation }}`` and ``{{ train.epochs }}``,
    so that a changed default changes the page, never contradicts it.
    """
    import inspect

    from otrain.classifier import CutoutClassifier
    from otrain.cli import train

    signature = inspect.signature(CutoutClassifier.__init__)
    lib = {
        name: param.default
        for name, param in signature.parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    cli = {action.dest: action.default for action in train.build_parser()._actions}
    return {"lib": lib, "train": cli}


myst_substitutions = _defaults()

# autodoc: members in source order, as each module lists them in __all__.
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
# Signatures read better without the type hints some functions carry: numpydoc's
# Parameters section already gives the types in words.
autodoc_typehints = "none"

# numpydoc: no autosummary tables of class members (scikeras' inherited members
# would drown CutoutClassifier's own); cross-reference the types in Parameters.
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_xref_param_type = False

html_theme = "alabaster"
html_title = f"otrain {release}"
html_static_path = []
html_theme_options = {
    "description": "Real/bogus classification of transient candidates",
    "fixed_sidebar": True,
}


def _skip_metadata_requests(app, what, name, obj, skip, options):
    # scikit-learn adds set_fit_request, set_predict_proba_request... to every
    # estimator class; they are sklearn's metadata-routing API, documented there,
    # and their docstrings point into sklearn's own documentation.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_requests)
