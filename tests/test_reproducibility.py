"""The same seed gives the same cube selection, the same model and the same scores."""

import numpy as np
from astropy.table import Table

from otrain.cli import convert, infer, train
from otrain.datasets import make_demo_data


def test_same_seed_same_cube_model_and_scores(tmp_path):
    made = make_demo_data(tmp_path / "data", n_train=60, n_candidates=20, size=24, random_state=3)
    results = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert (
            convert.main(
                [
                    "--path",
                    str(out),
                    "--cube",
                    "cube",
                    "--cutouts",
                    str(made["training"]),
                    "--frac_true",
                    "0.4",
                    "--seed",
                    "7",
                ]
            )
            == 0
        )
        assert (
            train.main(
                [
                    "--cube",
                    str(out / "cube.npz"),
                    "--model-path",
                    str(out),
                    "--model-name",
                    "m",
                    "--epochs",
                    "2",
                    "--network",
                    "vgg6",
                    "--seed",
                    "7",
                    "--verbose",
                    "0",
                    "--no-plots",
                ]
            )
            == 0
        )
        assert (
            infer.main(
                [
                    "--cutouts",
                    str(made["candidates"]),
                    "--model",
                    str(out / "CNN_training" / "m.h5"),
                    "--outdir",
                    str(out),
                ]
            )
            == 0
        )
        with np.load(out / "cube.npz") as npz:
            paths = npz["paths"].tolist()
        results.append((paths, Table.read(out / "infer_results.ecsv")["label1"]))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
