"""The example scripts run, print their key result and write their figures.

Each script in ``examples/`` runs in its own process, as a user would run it, with
``OTRAIN_EXAMPLES_FAST=1`` (small data, few epochs: seconds of training each) and its
figures sent to a temporary folder; two run at a time, each on half of the cores. The
numbers of such short trainings are not checked for quality, only for being the
numbers the script promises.
"""

import ast
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))

# What each example must print on its last line, and the figures it must write
# (glob patterns under OTRAIN_EXAMPLES_OUTDIR).
EXPECTED = {
    "plot_quickstart.py": (
        r"^quickstart: ROC AUC (?P<auc>[\d.]+), MCC (?P<mcc>-?[\d.]+) on \d+ test cutouts",
        ["quickstart_probabilities.png"],
    ),
    "plot_grid_search.py": (
        r"^refitted on all stamps: '(robust|l2|none)', ready to predict",
        ["grid_search.png"],
    ),
    "plot_learning_curve.py": (r"^figure in .*learning_curve\.png", ["learning_curve.png"]),
    "plot_triplets_vs_difference.py": (
        r"^triplets vs difference: MCC (?P<mcc>-?[\d.]+) vs -?[\d.]+, difference [-+][\d.]+",
        ["triplets_vs_difference.png"],
    ),
    "plot_threshold_choice.py": (
        r"^threshold choice: (?P<t>[\d.]+) \(stored: (?P<stored>[\d.]+)\) keeps recall [\d.]+",
        ["threshold_scan.png"],
    ),
    "plot_dask_cluster.py": (
        r"^dask: \d+ candidates scored on 2 workers, same table as local: True; "
        r"cross-validated MCC (?P<mcc>-?[\d.]+) ± [\d.]+",
        ["dask_cluster.png"],
    ),
    "plot_grad_cam.py": (
        r"^grad-cam: for \d+ real test stamps, the evidence for 'real' lies",
        # One gallery per group that has members: which groups do depends on the run.
        ["grad_cam/grad_cam_*.png"],
    ),
}


def test_every_example_is_listed():
    names = {path.name for path in EXAMPLES}
    assert names == set(EXPECTED), (
        "examples/ and the expectations of tests/test_examples.py differ: "
        f"not tested {sorted(names - set(EXPECTED))}, missing {sorted(set(EXPECTED) - names)}"
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_follows_the_gallery_format(path):
    """A docstring with a title, ``# %%`` cells, and the fast mode the tests use."""
    source = path.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring, f"{path.name}: no module docstring"
    title, underline = docstring.splitlines()[:2]
    assert title and set(underline) == {"="} and len(underline) >= len(title), (
        f"{path.name}: the docstring must start with a title underlined with '='"
    )
    assert source.count("\n# %%\n") >= 2, f"{path.name}: no '# %%' cells"
    assert "OTRAIN_EXAMPLES_FAST" in source and "OTRAIN_EXAMPLES_OUTDIR" in source


# Longest first, so that the two workers finish together.
_ORDER = [
    "plot_learning_curve.py",
    "plot_grid_search.py",
    "plot_triplets_vs_difference.py",
    "plot_grad_cam.py",
    "plot_threshold_choice.py",
    "plot_quickstart.py",
]


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    """Run every example once, two at a time, each with half of the cores.

    Most of a short training is Keras building and tracing the model, on one core:
    two examples side by side, each limited to its share of the threads, take far
    less time than one after the other on all cores.
    """
    cores = os.cpu_count() or 1
    workers = 2 if cores >= 2 else 1
    threads = str(max(1, cores // workers))
    folders = {path: tmp_path_factory.mktemp(path.stem) for path in EXAMPLES}

    def run(path):
        env = {
            **os.environ,
            "OTRAIN_EXAMPLES_FAST": "1",
            "OTRAIN_EXAMPLES_OUTDIR": str(folders[path] / "figures"),
            "MPLBACKEND": "Agg",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_NUM_INTRAOP_THREADS": threads,
            "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": threads,
        }
        return subprocess.run(
            [sys.executable, str(path)],
            cwd=folders[path],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )

    order = sorted(EXAMPLES, key=lambda p: _ORDER.index(p.name) if p.name in _ORDER else -1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(zip(order, pool.map(run, order), strict=True))
    return {path: (folders[path], results[path]) for path in EXAMPLES}


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, example_runs):
    tmp_path, result = example_runs[path]
    assert result.returncode == 0, f"{path.name} failed:\n{result.stderr[-4000:]}"
    lines = result.stdout.strip().splitlines()
    pattern, figures = EXPECTED[path.name]
    match = re.search(pattern, lines[-1])
    assert match, f"{path.name}: last line {lines[-1]!r} does not match {pattern!r}"
    for name in figures:
        written = sorted((tmp_path / "figures").glob(name))
        assert written, f"{path.name} did not write {name}"
        for figure in written:
            assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{figure} is not a PNG"
    # Nothing is left in the working folder: data go to a temporary folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]
    values = match.groupdict()
    if "auc" in values:
        assert 0.0 <= float(values["auc"]) <= 1.0
    if "mcc" in values:
        assert -1.0 <= float(values["mcc"]) <= 1.0
    if "stored" in values:
        assert values["stored"] == values["t"], "the stored threshold differs from the chosen one"
    if path.name == "plot_quickstart.py":
        assert "same scores after loading: True" in result.stdout
