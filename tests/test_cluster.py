"""otrain on a Dask cluster: bulk scoring, grid searches and learning curves.

One ``LocalCluster`` of two worker processes on 127.0.0.1 serves the whole module
(starting it costs seconds); each check compares the cluster's result with a local
run of the same thing.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from conftest import tiny_network

distributed = pytest.importorskip("distributed")

from otrain import CutoutError, ModelFileError, OTrainError  # noqa: E402
from otrain.cli import infer, optimise_dataset_size  # noqa: E402
from otrain.cluster import (  # noqa: E402
    ClusterError,
    connect,
    prepare_workers,
    score_files_distributed,
)
from otrain.datacube import find_cutouts, iter_cutouts  # noqa: E402
from otrain.datasets import make_candidates, make_stamps  # noqa: E402

COLUMNS = ("filename", "RA", "Dec", "originalFile", "cand_ID", "label")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    prepare_workers(client)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny network trained one epoch on 24x24 stamps, saved as .keras."""
    from otrain import CutoutClassifier, save_model

    X, y, _ = make_stamps(30, 30, size=24, random_state=0)
    classifier = CutoutClassifier(
        network=tiny_network, epochs=1, batch_size=16, validation_fraction=0, random_state=0
    ).fit(X, y)
    return save_model(classifier, tmp_path_factory.mktemp("model") / "tiny.keras")


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """100 candidates (some EDGE), a file that is not FITS and a stamp too small."""
    from conftest import write_stamp

    root = tmp_path_factory.mktemp("cands")
    make_candidates(root, n=100, size=24, edge_fraction=0.1, random_state=3)
    folder = root / "candidates"
    (folder / "broken.fits").write_bytes(b"not a FITS file")
    write_stamp(folder / "small.fits", np.zeros((8, 8)), EDGE="False")
    return folder


def _same(table, local):
    assert len(table) == len(local) > 0
    assert table.colnames == local.colnames
    for column in COLUMNS:
        # NaN equals NaN here: unknown keywords, and the rows of inputs not scored.
        np.testing.assert_array_equal(np.asarray(table[column]), np.asarray(local[column]), column)
    floats = [c for c in ("label0", "label1", "label1_std") if c in local.colnames]
    for column in floats:
        mine = np.ma.filled(np.ma.asarray(table[column], dtype=float), np.nan)
        theirs = np.ma.filled(np.ma.asarray(local[column], dtype=float), np.nan)
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-6)
    assert table.meta["threshold"] == local.meta["threshold"]


# ------------------------------------------------------------------ bulk scoring


def test_distributed_scoring_equals_local(client, model_path, candidates, tmp_path, monkeypatch):
    from otrain import load_model
    from otrain.inference import score_files

    # Relative paths, as a user in the candidates' parent folder gives them: the
    # workers get absolute ones, the table keeps them as given.
    monkeypatch.chdir(candidates.parent)
    paths = find_cutouts("candidates")
    classifier = load_model(model_path)
    for mc in (None, 3):
        local, local_summary = score_files(
            classifier, paths, chunk_size=16, mc_samples=mc, random_state=5
        )
        table, summary = score_files_distributed(
            model_path, paths, client, chunk_size=16, mc_samples=mc, random_state=5
        )
        _same(table, local)
        assert summary == local_summary
    assert summary["n_files"] == 102 and summary["n_edge"] > 0
    assert [Path(p).name for p, _ in summary["skipped"]] == ["broken.fits", "small.fits"]
    assert summary["skipped"][0][0] == "candidates/broken.fits"
    assert "label1_std" in table.colnames and table["filename"][0].startswith("candidates/")
    # Both workers scored, each loading the model once (the cache holds one entry).
    cached = client.run(lambda: len(__import__("otrain.cluster").cluster._MODELS))
    assert sorted(cached.values()) == [1, 1]


def test_streamed_paths_keep_their_order_and_report_progress(client, model_path, candidates):
    from otrain import load_model
    from otrain.inference import score_files

    order = list(iter_cutouts(candidates))
    seen = []
    table, summary = score_files_distributed(
        model_path,
        iter_cutouts(candidates),
        client,
        chunk_size=10,
        max_in_flight=1,
        progress=seen.append,
    )
    local, _ = score_files(load_model(model_path), order, chunk_size=10)
    _same(table, local)
    assert seen == list(range(10, 110, 10)) + [102]
    assert summary["n_files"] == len(order) == 102


def test_no_file_gives_the_empty_table(client, model_path):
    table, summary = score_files_distributed(model_path, [], client)
    assert len(table) == 0 and "label1" in table.colnames
    assert summary["n_files"] == 0 and summary["threshold"] == table.meta["threshold"] == 0.5


def test_worker_errors_reach_the_client(client, candidates, tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        score_files_distributed(tmp_path / "none.keras", find_cutouts(candidates), client)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        score_files_distributed(tmp_path / "none.keras", [], client, chunk_size=0)
    with pytest.raises(TypeError, match="sets n_jobs"):
        score_files_distributed(tmp_path / "none.keras", [], client, n_jobs=2)


def test_iter_cutouts_streams_the_folder(candidates, tmp_path):
    stream = iter_cutouts(candidates)
    assert not isinstance(stream, list)
    assert sorted(stream) == find_cutouts(candidates)
    (tmp_path / "sub.fits").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert list(iter_cutouts(tmp_path)) == []
    with pytest.raises(OTrainError, match="no such folder"):
        iter_cutouts(tmp_path / "missing")


# ------------------------------------------------------------------ otrain-infer


def test_infer_command_on_the_cluster_writes_the_local_table(
    client, model_path, candidates, tmp_path, capsys
):
    argv = ["--cutouts", str(candidates), "--model", str(model_path), "--chunk-size", "25"]
    assert infer.main([*argv, "--outdir", str(tmp_path / "local")]) == 0
    assert (
        infer.main(
            [*argv, "--outdir", str(tmp_path / "dask"), "--scheduler", client.scheduler.address]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "2 workers, 2 threads: chunks of 25 files scored on the workers" in out
    assert "1 unreadable files, 1 files of another stamp size" in out
    local = Table.read(tmp_path / "local" / "infer_results.ecsv")
    table = Table.read(tmp_path / "dask" / "infer_results.ecsv")
    _same(table, local)
    assert table.meta["channels"] == local.meta["channels"]
    dat = Table.read(tmp_path / "dask" / "infer_results.dat", format="ascii.commented_header")
    # The .dat keeps O'TRAIN's columns and the scored candidates only.
    scored = local[local["status"] == "scored"]
    assert list(dat["cand_ID"]) == list(scored["cand_ID"])


def test_infer_command_reads_a_scheduler_file(client, model_path, candidates, tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"address": client.scheduler.address}))
    argv = ["--cutouts", str(candidates), "--model", str(model_path), "--outdir", str(tmp_path)]
    assert infer.main([*argv, "--scheduler", str(scheduler_file)]) == 0
    assert len(Table.read(tmp_path / "infer_results.ecsv")) > 0


# --------------------------------------------- grid searches and learning curves


def test_grid_search_on_the_cluster_equals_local(client, tmp_path):
    """GridSearchCV of a loader + classifier pipeline over files, under joblib's Dask backend."""
    from joblib import parallel_config
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline

    from otrain import CutoutClassifier, CutoutLoader
    from otrain.datasets import make_training_set

    make_training_set(tmp_path, n_real=20, n_bogus=20, size=24, random_state=0)
    paths = find_cutouts(tmp_path / "true") + find_cutouts(tmp_path / "false")
    y = np.r_[np.ones(len(find_cutouts(tmp_path / "true"))), np.zeros(20)].astype(int)
    pipeline = make_pipeline(
        CutoutLoader(),
        CutoutClassifier(
            network=tiny_network, epochs=1, batch_size=16, validation_fraction=0, random_state=0
        ),
    )
    search = GridSearchCV(
        pipeline,
        {"cutoutclassifier__normalisation": ["robust", "l2"]},
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
        scoring=["accuracy", "neg_log_loss"],
        refit=False,
    )
    local = search.fit(paths, y).cv_results_
    with parallel_config(backend="dask", client=client):
        remote = search.fit(paths, y).cv_results_
    for key in ("split0_test_accuracy", "split1_test_accuracy"):
        np.testing.assert_array_equal(remote[key], local[key])
    for key in ("split0_test_neg_log_loss", "split1_test_neg_log_loss"):
        # Worker threads (1) differ from this process's: float sums in another order.
        np.testing.assert_allclose(remote[key], local[key], rtol=1e-5)


def test_optimise_dataset_size_on_the_cluster_equals_local(client, tmp_path, capsys, monkeypatch):
    """The command's curve, local and with --scheduler, with the tiny network (plumbing)."""
    import otrain.dataset_size
    from otrain import Datacube

    curve = otrain.dataset_size.dataset_size_curve

    def tiny_curve(cube, *, estimator, **settings):
        estimator = estimator.set_params(network=tiny_network, validation_fraction=0)
        return curve(cube, estimator=estimator, **settings)

    monkeypatch.setattr(otrain.dataset_size, "dataset_size_curve", tiny_curve)
    images, labels, meta = make_stamps(20, 20, size=24, random_state=2)
    cube = Datacube(images, labels, meta).save(tmp_path / "cube.npz")
    argv = f"--cube {cube} --epochs 2 --n_sections 2 --folds 2 --batch-size 16 --seed 1".split()
    assert optimise_dataset_size.main([*argv, "--outdir", str(tmp_path / "local")]) == 0
    assert (
        optimise_dataset_size.main(
            [*argv, "--outdir", str(tmp_path / "dask"), "--scheduler", client.scheduler.address]
        )
        == 0
    )
    assert "training on 2 workers, 2 threads" in capsys.readouterr().out
    local = Table.read(tmp_path / "local" / "cube_dataset_size.ecsv")
    remote = Table.read(tmp_path / "dask" / "cube_dataset_size.ecsv")
    assert list(remote["size"]) == list(local["size"]) and len(local) == 2
    compared = [c for c in local.colnames if c.startswith(("train_", "valid_"))]
    assert len(compared) == 24
    for column in compared:
        np.testing.assert_allclose(remote[column], local[column], rtol=1e-5, atol=1e-6)
    assert remote.meta["answer"] == local.meta["answer"]


# -------------------------------------------------------------- worker settings


def test_workers_limit_tensorflow_to_their_threads(client):
    report = prepare_workers(client)
    assert len(report) == 2
    for settings in report.values():
        assert settings["nthreads"] == 1
        assert settings["TF_NUM_INTRAOP_THREADS"] == settings["TF_NUM_INTEROP_THREADS"] == "1"
        # Dask's nanny: one thread per task for OpenMP and BLAS.
        assert settings["OMP_NUM_THREADS"] == "1"

    def shared_random():
        import dask.sizeof

        # No patch of Dask's modules: a classifier draws no process-wide random state.
        return dask.sizeof.random is random

    assert all(client.run(shared_random).values())


# ------------------------------------------------------------------------- errors


def test_unreachable_scheduler_is_one_clear_error(tmp_path, capsys, model_path, candidates):
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        connect("tcp://127.0.0.1:1", timeout=1)
    with pytest.raises(ClusterError, match="no such scheduler file"):
        connect(tmp_path / "scheduler.json")
    argv = ["--cutouts", str(candidates), "--model", str(model_path)]
    code = infer.main([*argv, "--scheduler", "tcp://127.0.0.1:1", "--scheduler-timeout", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("otrain-infer: error: cannot reach the Dask")


def test_missing_dask_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ClusterError, match=r'pip install "otrain\[dask\]"'):
        connect("tcp://127.0.0.1:8786")
    cube = tmp_path / "cube.npz"
    from otrain import Datacube

    Datacube(*make_stamps(10, 10, size=24, random_state=0)).save(cube)
    argv = f"--cube {cube} --outdir {tmp_path} --scheduler tcp://127.0.0.1:8786".split()
    assert optimise_dataset_size.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "otrain-optimise-dataset-size: error: running on a Dask cluster needs "
        'dask.distributed, which is not installed: pip install "otrain[dask]"'
    ]


def test_importing_otrain_imports_no_dask():
    code = (
        "import sys, otrain, otrain.cluster, otrain.cli.infer; "
        "assert 'distributed' not in sys.modules and 'dask' not in sys.modules; "
        "assert 'tensorflow' not in sys.modules; "
        "assert otrain.score_files_distributed is otrain.cluster.score_files_distributed"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_installed_command_fails_in_one_line_without_a_scheduler(model_path, candidates):
    result = subprocess.run(
        [
            "otrain-infer",
            "--cutouts",
            str(candidates),
            "--model",
            str(model_path),
            "--scheduler",
            "tcp://127.0.0.1:1",
            "--scheduler-timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("otrain-infer: error: cannot reach")


def test_cutout_error_family():
    assert issubclass(ClusterError, OTrainError) and not issubclass(ClusterError, CutoutError)
