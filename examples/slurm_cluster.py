"""Score a folder of candidates on a SLURM cluster with dask-jobqueue.

Not a gallery example (it needs a SLURM cluster): run it on a login node, where it
submits batch jobs that each start one Dask worker, scores the candidates on them
and writes ``infer_results.dat`` / ``.ecsv`` beside the candidates, as
``otrain-infer`` does::

    pip install "otrain[dask]" dask-jobqueue
    python slurm_cluster.py --cutouts /scratch/night/candidates \\
        --model /home/me/models/model.keras --jobs 8 --queue cpu --account myproject

The cutouts and the model must sit on a file system that the compute nodes see
under the same paths. Each job asks for ``--cores`` cores and runs one worker
process with that many threads: TensorFlow on the worker is limited to them
(``otrain.cluster.prepare_workers``). Adapt the resources (memory, walltime, the
``job_extra_directives`` lines) to your site; ``python slurm_cluster.py -h`` lists
the options.

The same cluster can run grid searches and learning curves: inside
``joblib.parallel_config(backend="dask", client=client)`` scikit-learn's fits go
to the workers, and ``otrain.dataset_size.dataset_size_curve(cube, client=client)``
trains its networks there.
"""

import argparse
import sys
from pathlib import Path


def build_parser():
    """The script's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutouts", required=True, help="folder of candidate cutouts")
    parser.add_argument("--model", required=True, help="model file (.keras or .h5)")
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs (one worker each)")
    parser.add_argument("--cores", type=int, default=8, help="cores per job (worker threads)")
    parser.add_argument("--memory", default="16GB", help="memory per job")
    parser.add_argument("--walltime", default="01:00:00", help="time limit of each job")
    parser.add_argument("--queue", default=None, help="SLURM partition")
    parser.add_argument("--account", default=None, help="SLURM account")
    parser.add_argument("--chunk-size", type=int, default=1024, help="files per task")
    return parser


def main(argv=None):
    """Start the SLURM jobs, score the candidates on them, write the results."""
    args = build_parser().parse_args(argv)
    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    from otrain.cluster import prepare_workers, score_files_distributed
    from otrain.datacube import find_cutouts
    from otrain.inference import write_results

    cluster = SLURMCluster(
        cores=args.cores,
        processes=1,  # one worker process per job, with --cores threads
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        # TensorFlow's own log lines would fill the job logs.
        job_script_prologue=["export TF_CPP_MIN_LOG_LEVEL=3"],
    )
    cluster.scale(jobs=args.jobs)
    print(cluster.job_script())
    with cluster, Client(cluster) as client:
        # Jobs may wait in the queue: start scoring as soon as one worker runs;
        # chunks go to the others as they join.
        client.wait_for_workers(1, timeout=3600)
        prepare_workers(client)
        paths = find_cutouts(args.cutouts)
        table, summary = score_files_distributed(
            args.model,
            paths,
            client,
            chunk_size=args.chunk_size,
            progress=lambda n: print(f"{n}/{len(paths)} scored", flush=True),
        )
    dat, ecsv = write_results(table, args.cutouts, model_name=Path(args.model).name)
    print(
        f"{summary['n_scored']} candidates scored, {summary['n_edge']} EDGE and "
        f"{len(summary['skipped'])} unreadable files skipped; results in {dat} and {ecsv}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
