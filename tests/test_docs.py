"""The documentation builds without a warning, and its command reference is complete.

The build is the one the docs describe, ``sphinx-build -W -b html docs OUT``, run in
a subprocess (autodoc imports the whole package, TensorFlow included). It needs the
``docs`` tools (Sphinx, numpydoc, myst-parser: ``pip install ".[test]"``); without
them the tests are skipped, saying so.
"""

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_MISSING = [
    name for name in ("sphinx", "numpydoc", "myst_parser") if not importlib.util.find_spec(name)
]
needs_sphinx = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"documentation tools not installed ({', '.join(_MISSING)}); "
    'pip install ".[docs]" to build the docs',
)


def _scripts():
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["scripts"]


def _load_extension():
    spec = importlib.util.spec_from_file_location("otrain_cli", DOCS / "_ext" / "otrain_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built_html(tmp_path_factory):
    """Build the HTML docs once for the module; return the output folder."""
    out = tmp_path_factory.mktemp("docs")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / "doctrees"),
            str(DOCS),
            str(out / "html"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Warnings are errors: show them all, not only the first.
    assert result.returncode == 0, f"sphinx-build -W failed:\n{result.stderr[-6000:]}"
    return out / "html"


@needs_sphinx
def test_docs_build_without_warnings(built_html):
    pages = {p.name for p in built_html.glob("*.html")}
    expected = {
        "index.html",
        "getting_started.html",
        "formats.html",
        "cli.html",
        "guide.html",
        "examples.html",
        "migration.html",
        "api.html",
        "checkinfer.html",
        "grad_cam.html",
        "dataset_size.html",
        "trust.html",
        "cluster.html",
        "speed.html",
    }
    assert expected <= pages, f"missing pages: {sorted(expected - pages)}"


@needs_sphinx
def test_api_page_documents_the_public_names(built_html):
    api = (built_html / "api.html").read_text(encoding="utf-8")
    for name in (
        "otrain.classifier.CutoutClassifier",
        "otrain.loader.CutoutLoader",
        "otrain.training.train_model",
        "otrain.plots.plot_grad_cam",
        "otrain.datacube.build_datacube",
        "otrain.model_files.load_model",
        "otrain.diagnostics.threshold_scan",
        "otrain.gradcam.grad_cam",
        "otrain.datasets.make_stamps",
        "otrain.precision.check_bfloat16",
    ):
        assert f'id="{name}"' in api, f"{name} is not documented in api.html"
    # scikit-learn's metadata-routing methods are left to scikit-learn's docs.
    assert "set_fit_request" not in api


@needs_sphinx
def test_cli_page_holds_every_command_help(built_html):
    cli = (built_html / "cli.html").read_text(encoding="utf-8")
    for command in _scripts():
        assert f"usage: {command}" in cli, f"no generated help of {command} in cli.html"


@needs_sphinx
def test_guide_quotes_the_defaults_of_the_code(built_html):
    from otrain.cli.train import build_parser

    guide = (built_html / "guide.html").read_text(encoding="utf-8")
    normalisation = build_parser().get_default("normalisation")
    assert f"<td><p>{normalisation}</p></td>" in guide


def test_help_of_every_command_is_rendered():
    """The extension renders each command's own -h text (no Sphinx needed)."""
    extension = _load_extension()
    for command in _scripts():
        text, source = extension.command_help(command)
        assert text.startswith(f"usage: {command}"), text[:200]
        assert "--help" in text
        assert Path(source).is_file()
    # otrain-plot-results borrows otrain-diagnostics' build_parser; its own flags show.
    plot_help, _ = extension.command_help("otrain-plot-results")
    assert "--path-plots" in plot_help
    assert "--path-diagnostics" not in plot_help


def test_unknown_command_is_named():
    extension = _load_extension()
    with pytest.raises(KeyError, match="otrain-nope"):
        extension.command_help("otrain-nope")
