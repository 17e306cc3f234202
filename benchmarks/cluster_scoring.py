"""Bulk scoring throughput on a Dask cluster: files per second, 1 and 2 workers.

Writes N synthetic 64x64 candidate cutouts (:func:`otrain.datasets.make_candidates`),
saves a model with otrain's default network (trained one epoch: the weights do not
change the cost of scoring), then scores the files

* locally, with :func:`otrain.inference.score_files` (``n_jobs=-1``, as
  ``otrain-infer`` does), the reference;
* with :func:`otrain.cluster.score_files_distributed` on a ``LocalCluster`` of
  1 worker x 2 threads, and of 2 workers x 1 thread.

Each setting is run once to warm up (TensorFlow start-up, model loading on each
worker), then ``--repeats`` times; the table gives the median files per second and
checks that every run's table equals the local one.

Usage::

    python benchmarks/cluster_scoring.py --n 4000 --repeats 3 --chunk-size 250
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def _timed(function, repeats):
    function()  # warm-up
    rates = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        rates.append(result[1]["n_files"] / (time.perf_counter() - start))
    return statistics.median(rates), rates, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="cutout files")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting")
    parser.add_argument("--chunk-size", type=int, default=250, help="files per task")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    from otrain import CutoutClassifier, load_model, save_model
    from otrain.cluster import prepare_workers, score_files_distributed
    from otrain.datacube import find_cutouts
    from otrain.datasets import make_candidates, make_stamps
    from otrain.inference import score_files

    work = Path(tempfile.mkdtemp(prefix="otrain_cluster_bench_"))
    start = time.perf_counter()
    make_candidates(work, n=args.n, size=64, random_state=0)
    paths = find_cutouts(work / "candidates")
    X, y, _ = make_stamps(64, 64, size=64, random_state=0)
    model = save_model(CutoutClassifier(epochs=1, random_state=0).fit(X, y), work / "m.keras")
    took = time.perf_counter() - start
    print(f"{len(paths)} cutouts of 64x64 and a model written in {took:.0f} s")

    classifier = load_model(model)
    rows = []
    local_rate, local_rates, (reference, _) = _timed(
        lambda: score_files(classifier, paths, n_jobs=-1, chunk_size=args.chunk_size),
        args.repeats,
    )
    rows.append(("local score_files (n_jobs=-1)", local_rate, local_rates, True))
    for workers, threads in ((1, 2), (2, 1)):
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            prepare_workers(client)
            rate, rates, (table, _) = _timed(
                lambda client=client: score_files_distributed(
                    model, paths, client, chunk_size=args.chunk_size
                ),
                args.repeats,
            )
        same = list(table["filename"]) == list(reference["filename"]) and np.allclose(
            table["label1"], reference["label1"], rtol=0, atol=1e-6
        )
        rows.append((f"LocalCluster {workers} worker x {threads} thread", rate, rates, same))

    print(f"\n{len(paths)} files, chunks of {args.chunk_size}, median of {args.repeats} runs\n")
    print("| setting | files/s (median) | runs | table equals local |")
    print("| --- | --- | --- | --- |")
    for name, rate, rates, same in rows:
        runs = ", ".join(f"{r:.0f}" for r in rates)
        print(f"| {name} | {rate:.0f} | {runs} | {'yes' if same else 'NO'} |")
    return 0 if all(row[3] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
