"""The documentation builds without a warning, and its generated text matches the code.

The build is the one the docs describe, ``sphinx-build -W -b html docs OUT``, run in
a subprocess (autodoc imports the whole package, TensorFlow included). It needs the
``docs`` tools (Sphinx, numpydoc, myst-parser: ``pip install ".[test]"``); without
them the build tests are skipped, saying so.

The Markdown pages hold committed copies of the commands' help, of the defaults they
quote and of the results-table columns, between marker comments. The tests below
need no Sphinx: they fail when a copy differs from what the code gives now, and the
fix is ``python docs/_ext/otrain_cli.py --write``.
"""

import importlib.util
import os
import re
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


REWRITE = "python docs/_ext/otrain_cli.py --write"


def test_generated_text_matches_the_code():
    """The committed help, defaults and columns are what the code gives now."""
    stale = _load_extension().stale_pages()
    listed = "; ".join(f"{page.name}: {', '.join(kinds)}" for page, kinds in stale.items())
    assert not stale, f"generated text out of date ({listed}); run {REWRITE} and commit"


def test_cli_page_holds_the_help_of_every_command():
    extension = _load_extension()
    assert extension.missing_commands() == []
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for command in _scripts():
        assert f"```text\nusage: {command} " in text, f"no help of {command} in cli.md"


def test_pages_read_as_markdown_without_placeholders():
    """No ``{{ ... }}`` or directive is left for a build to fill, outside templates."""
    extension = _load_extension()
    for page in extension.markdown_pages():
        text = page.read_text(encoding="utf-8")
        # Drop the templates (inside their marker comments), keep what a reader sees.
        shown = re.sub(r"<!-- generated by .*?-->", "", text, flags=re.DOTALL)
        assert "{{" not in shown, f"{page.name}: a {{{{ placeholder }}}} outside a template"
        assert "{otrain-cli}" not in shown, f"{page.name}: a build-time help directive"


def test_a_changed_default_makes_the_pages_stale():
    """The check can fail: a default that moves, or a help edited by hand, is caught."""
    extension = _load_extension()
    values = extension.defaults()
    # Brought up to date first: whether the committed page is current is the test above's.
    guide, _ = extension.update_text((DOCS / "guide.md").read_text(encoding="utf-8"), values)
    assert extension.update_text(guide, values)[1] == []
    moved = {**values, "train": {**values["train"], "epochs": 12345}}
    new, changed = extension.update_text(guide, moved)
    assert changed and all(kind.startswith("template at line") for kind in changed)
    assert "| 12345 |" in new
    cli, _ = extension.update_text((DOCS / "cli.md").read_text(encoding="utf-8"))
    edited = cli.replace("usage: otrain-train ", "usage: otrain-train --old-flag ", 1)
    new, changed = extension.update_text(edited)
    assert changed == ["otrain-train -h"]
    assert new == cli


def test_unknown_placeholder_is_named():
    extension = _load_extension()
    with pytest.raises(KeyError, match="train.nope"):
        extension.fill_template("{{ train.nope }}")


def test_help_does_not_depend_on_the_terminal(monkeypatch):
    extension = _load_extension()
    monkeypatch.setenv("COLUMNS", "200")
    wide, _ = extension.command_help("otrain-train")
    monkeypatch.setenv("COLUMNS", "40")
    narrow, _ = extension.command_help("otrain-train")
    assert wide == narrow
    assert max(len(line) for line in wide.splitlines() if line.startswith("  --")) <= 88
    assert os.environ["COLUMNS"] == "40"  # restored


def test_keyword_table_of_the_formats_page_names_the_real_columns():
    """Each keyword's column in the keyword table and in the results table, as the code has."""
    from otrain.cutouts import KEYWORD_COLUMNS
    from otrain.inference import _FROM_KEYWORDS, OPTIONAL_COLUMNS, RESULT_COLUMNS

    result_of = {key: column for column, key in _FROM_KEYWORDS.items()}
    result_of.update({key: column for column, (key, _) in OPTIONAL_COLUMNS.items()})
    text = (DOCS / "formats.md").read_text(encoding="utf-8")
    section = text[text.index("### Keywords") : text.index("### NaN policy")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    seen = set()
    for row in rows:
        _, keyword_cell, result_cell, _ = (c.strip() for c in row.strip("|").split("|", 3))
        keyword_column = keyword_cell.strip("`")
        assert keyword_column in KEYWORD_COLUMNS, row
        result_column = re.match(r"`([^`]+)`", result_cell)[1]
        assert result_column == result_of[keyword_column], row
        # Columns outside O'TRAIN's are in the ECSV only, and the page says so.
        assert (result_column in RESULT_COLUMNS) == (".ecsv" not in result_cell), row
        seen.add(keyword_column)
    assert seen == set(KEYWORD_COLUMNS) - {"path"}
