"""Beyond one machine: otrain on a Dask cluster (``dask.distributed``).

Three kinds of work spread over the workers of a Dask cluster (a ``LocalCluster`` on
a laptop, a SLURM or PBS allocation through dask-jobqueue, Kubernetes):

- **bulk scoring**: :func:`score_files_distributed` splits a list of cutout files
  into chunks, each scored on a worker by :func:`otrain.inference.score_files`, the
  model loaded once per worker process. The client streams the file list, keeps a
  few chunks per worker in flight and gathers the result tables chunk by chunk; the
  pixels stay on the workers. The table is the one a local run writes: same rows,
  same order, same probabilities;
- **grid searches, cross-validation and learning curves**: scikit-learn runs its
  fits through joblib, and joblib runs them on the cluster inside
  ``joblib.parallel_config(backend="dask")``;
  :func:`otrain.dataset_size.dataset_size_curve` does so when given a ``client``;
- **worker set-up**: :func:`prepare_workers` sizes TensorFlow's thread pools on
  each worker to the worker's own ``nthreads``, so that the processes of a node do
  not fight over its cores. :func:`connect` does it for you. Trainings need nothing
  more to be reproducible there: a classifier draws every seed from its own
  ``random_state``, so the same seed trains the same network on a worker as locally.

One training stays on one worker: the cluster runs many fits at once, never one fit
faster. Dask is optional (``pip install "otrain[dask]"``) and imported only when a
function here is called; the workers need otrain, and the cutout and model files
under the same paths as the client (a shared file system).
"""

import itertools
import os
import sys
import threading
import uuid

from .exceptions import ClusterError

__all__ = [
    "connect",
    "prepare_workers",
    "score_files_distributed",
]

# TensorFlow's thread pools are shared by the whole process: a worker running N
# tasks at once gets N threads in each. OpenMP, MKL and OpenBLAS are left as Dask's
# nanny sets them (1 per task thread: N threads in all).
_TF_THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
# What prepare_workers reports for each worker.
THREAD_VARIABLES = (
    *_TF_THREAD_VARIABLES,
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)

# Chunks in flight per worker thread: one being scored, one waiting, so that no
# worker idles while the client hands out the next chunk.
_IN_FLIGHT_PER_THREAD = 2

_INSTALL = 'pip install "otrain[dask]"'


def _distributed():
    """``distributed``, or a :class:`ClusterError` saying how to install it."""
    try:
        import distributed
    except ImportError as err:
        raise ClusterError(
            f"running on a Dask cluster needs dask.distributed, which is not installed: {_INSTALL}"
        ) from err
    return distributed


# ------------------------------------------------------------------------ connecting


def connect(scheduler, *, timeout=60):
    """Connect to a Dask scheduler and limit TensorFlow's threads on its workers.

    Parameters
    ----------
    scheduler : str or path-like
        The scheduler's address (``tcp://host:8786``), or the JSON scheduler file
        that ``dask scheduler --scheduler-file FILE`` and dask-jobqueue write.
    timeout : float, default 60
        Seconds to wait for the scheduler to answer, and then for at least one
        worker to join it (a batch job may wait in the queue).

    Returns
    -------
    distributed.Client
        Connected, with :func:`prepare_workers` applied. Close it when
        done (``client.close()``), or use it in a ``with`` block.

    Raises
    ------
    ClusterError
        If Dask is not installed, the scheduler file does not exist, the scheduler
        does not answer within ``timeout``, or no worker joins it in that time.

    Examples
    --------
    >>> from otrain.cluster import connect
    >>> with connect("tcp://127.0.0.1:8786") as client:  # doctest: +SKIP
    ...     print(sum(client.nthreads().values()), "worker threads")
    """
    distributed = _distributed()
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout}")
    text = os.fspath(scheduler)
    is_file = "://" not in text and (text.endswith(".json") or os.path.isfile(text))
    if is_file and not os.path.isfile(text):
        # Client(scheduler_file=...) would wait for the file to appear, forever.
        raise ClusterError(
            f"{text}: no such scheduler file; give the file written by "
            "`dask scheduler --scheduler-file FILE` (or dask-jobqueue), or an address "
            "such as tcp://host:8786"
        )
    where = f"in the scheduler file {text}" if is_file else f"at {text}"
    try:
        if is_file:
            client = distributed.Client(scheduler_file=text, timeout=timeout)
        else:
            client = distributed.Client(text, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise ClusterError(
            f"cannot reach the Dask scheduler {where} within {timeout:g} s "
            f"({' '.join(str(err).split()) or type(err).__name__}); check the address "
            "and that `dask scheduler` is running"
        ) from err
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as err:
            raise ClusterError(
                f"the Dask scheduler {where} has no worker after {timeout:g} s; start "
                f"workers with `dask worker {client.scheduler.address}` (or wait for "
                "the batch jobs to start and give a longer timeout)"
            ) from err
        prepare_workers(client)
    except BaseException:
        client.close()
        raise
    return client


# ------------------------------------------------------------------- thread limits


def _worker_plugin():
    """A ``distributed.WorkerPlugin`` preparing each worker for otrain's work.

    Built here rather than at import time: its base class is Dask's, and importing
    this module must not import Dask. Registered plugins run on every worker,
    including those that join later (adaptive clusters, dask-jobqueue).
    """
    distributed = _distributed()

    class OtrainWorker(distributed.WorkerPlugin):
        idempotent = False

        def setup(self, worker):
            _limit_threads(worker.state.nthreads)

    return OtrainWorker()


def _limit_threads(threads):
    """Size this process's TensorFlow thread pools to ``threads`` (a worker's nthreads).

    TensorFlow reads ``TF_NUM_INTRAOP_THREADS`` and ``TF_NUM_INTEROP_THREADS`` when
    its runtime starts, so the variables work when set before the first TensorFlow
    call in the process; when TensorFlow is imported but not started,
    ``tf.config.threading`` is set too. Where it already runs, its pools keep their
    size (:func:`prepare_workers` reports them).
    """
    threads = max(1, int(threads))
    for var in _TF_THREAD_VARIABLES:
        os.environ[var] = str(threads)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            # TensorFlow already started in this process: nothing more can be done.
            pass


def _thread_report(dask_worker):
    """What a worker process runs with (``client.run`` passes ``dask_worker``)."""
    report = {"nthreads": dask_worker.state.nthreads}
    report.update({var: os.environ.get(var) for var in THREAD_VARIABLES})
    tf = sys.modules.get("tensorflow")
    # 0 means "not set in tf.config": the environment variables above then decide.
    report["tensorflow_threads"] = (
        None
        if tf is None
        else (
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        )
    )
    return report


def prepare_workers(client):
    """Size the thread pools of each worker process to the worker's ``nthreads``.

    A worker started with ``--nthreads N`` runs up to N tasks at once, in one
    process, and TensorFlow's pools are shared by the process: with ``N``
    intra-op threads the worker uses its N cores and no more, however many
    trainings or scoring chunks run in it. Without the limit each worker's
    TensorFlow sizes its pools to every core of the node, and the workers of a
    node oversubscribe it. OpenMP, MKL and OpenBLAS are left as Dask's nanny sets
    them: one thread per task, N in all.

    The limit is a worker plugin: it applies to the workers present and to those
    that join later. It takes effect where TensorFlow has not started yet in the
    worker process, which is the case for fresh workers; restart the others
    (``client.restart()``).

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    dict
        Worker address -> ``{"nthreads", "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS", "tensorflow_threads"}``: the settings each worker
        now holds; ``tensorflow_threads`` is None where TensorFlow is not loaded
        yet (the variables will size its pools), else its ``tf.config.threading``
        intra- and inter-op settings (0: not set there, the variables decide).

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> from otrain.cluster import prepare_workers
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> prepare_workers(client)  # doctest: +SKIP
    {'tcp://127.0.0.1:40181': {'nthreads': 1, 'TF_NUM_INTRAOP_THREADS': '1', ...}, ...}
    """
    client.register_plugin(_worker_plugin(), name="otrain-worker")
    return client.run(_thread_report)


# ------------------------------------------------------------------------- scoring

# Models loaded in this (worker) process: (path, mtime, size, channels,
# normalisation) -> classifier. A changed file has a new key, and its old model is
# dropped. The lock keeps the threads of one worker from loading the same model twice.
_MODELS = {}
_MODELS_LOCK = threading.Lock()


def _worker_model(path, channels, normalisation):
    from .model_files import load_model

    try:
        stat = os.stat(path)
    except OSError:
        # Missing here: load_model says so, naming the file and the fix.
        return load_model(path, channels=channels, normalisation=normalisation)
    key = (path, stat.st_mtime_ns, stat.st_size, channels, normalisation)
    with _MODELS_LOCK:
        classifier = _MODELS.get(key)
        if classifier is None:
            for old in [k for k in _MODELS if k[0] == path]:
                del _MODELS[old]
            classifier = load_model(path, channels=channels, normalisation=normalisation)
            _MODELS[key] = classifier
    return classifier


def _score_chunk_task(model_path, load, chunk, index, options):
    """Score one chunk of files on a worker (the task sent by the client)."""
    from .inference import score_files

    classifier = _worker_model(model_path, *load)
    return score_files(
        classifier, chunk, n_jobs=1, chunk_size=max(1, len(chunk)), first_chunk=index, **options
    )


def score_files_distributed(
    model_path,
    paths,
    client,
    *,
    chunk_size=None,
    threshold=None,
    mc_samples=None,
    random_state=None,
    channels=None,
    normalisation=None,
    progress=None,
    max_in_flight=None,
    **score_options,
):
    """Score cutout files on the workers of a Dask cluster.

    The files are cut into chunks of ``chunk_size``; each chunk is one task, scored
    on a worker by :func:`otrain.inference.score_files` with the model the worker
    loaded once (and loads again only when the file changes). The client reads
    ``paths`` lazily, keeps at most ``max_in_flight`` chunks submitted, and gathers
    the result tables as they complete: it never holds pixels, only the paths in
    flight and the results. The result equals that of ``score_files`` run locally
    with the same ``chunk_size``: same rows in the same order (the order of
    ``paths``), same probabilities, same summary. Monte-Carlo draws depend on the
    chunking (chunk ``k`` is drawn with the seed ``[random_state, k]``), so compare
    runs with the same ``chunk_size``; plain probabilities do not.

    Parameters
    ----------
    model_path : str or path-like
        The model file, readable by every worker under this path (relative paths
        are made absolute on the client).
    paths : iterable of str or path-like
        Cutout files, readable by the workers (relative paths are made absolute for
        them; the table keeps the paths as given). Consumed lazily: a generator
        such as :func:`otrain.datacube.iter_cutouts` streams millions of files.
    client : distributed.Client
        Connected to the cluster (see :func:`connect`).
    chunk_size : int, optional
        Files per task; default: that of :func:`otrain.inference.score_files`.
        Smaller chunks spread a few thousand files over many workers; larger ones
        cost less scheduling. A worker holds a chunk's pixels per thread (1024
        stamps of 64x64x3 float32: 50 MB).
    threshold, mc_samples, random_state
        As in :func:`otrain.inference.score_files`.
    channels, normalisation : optional
        As in :func:`otrain.model_files.load_model`, for legacy model files.
    progress : callable, optional
        Called on the client as ``progress(n_done)`` each time a chunk is gathered
        (chunks complete in any order).
    max_in_flight : int, optional
        Chunks submitted and not yet gathered, at most. Default: twice the worker
        threads of the cluster when the call starts (at least 2).
    **score_options
        Other keyword arguments of :func:`otrain.inference.score_files`, passed on.

    Returns
    -------
    table : astropy.table.Table
    summary : dict
        As returned by :func:`otrain.inference.score_files`.

    Raises
    ------
    ClusterError
        If Dask is not installed.
    ValueError
        If a setting is out of range.
    OTrainError
        The errors of loading the model or scoring, raised on a worker, are raised
        here (the remaining chunks are cancelled).

    Examples
    --------
    >>> from otrain.cluster import connect, score_files_distributed
    >>> from otrain.datacube import find_cutouts
    >>> with connect("scheduler.json") as client:  # doctest: +SKIP
    ...     table, summary = score_files_distributed(
    ...         "model.keras", find_cutouts("candidates"), client, chunk_size=1024
    ...     )
    """
    distributed = _distributed()
    from astropy.table import vstack

    from ._validation import check_threshold

    if chunk_size is None:
        from .inference import _CHUNK as chunk_size
    chunk_size = _positive_int("chunk_size", chunk_size)
    if max_in_flight is None:
        threads = sum(client.nthreads().values())
        max_in_flight = max(2, _IN_FLIGHT_PER_THREAD * threads)
    max_in_flight = _positive_int("max_in_flight", max_in_flight)
    managed = {"n_jobs", "chunk_size", "progress", "first_chunk"} & set(score_options)
    if managed:
        raise TypeError(
            f"score_files_distributed sets {', '.join(sorted(managed))} itself; "
            "give chunk_size, and leave the others out"
        )
    if threshold is not None:
        threshold = check_threshold(threshold)
    if mc_samples is not None and int(mc_samples) < 2:
        raise ValueError(f"mc_samples must be at least 2, got {mc_samples}")
    options = {
        "threshold": threshold,
        "mc_samples": mc_samples,
        "random_state": random_state,
        **score_options,
    }
    model_path = os.path.abspath(os.fspath(model_path))
    load = (None if channels is None else tuple(channels), normalisation)
    chunks = _chunks(paths, chunk_size)
    run = uuid.uuid4().hex[:8]

    def submit(index, given):
        # The workers' working folder is not the client's: they get absolute paths.
        absolute = [os.path.abspath(p) for p in given]
        return client.submit(
            _score_chunk_task,
            model_path,
            load,
            absolute,
            index,
            options,
            key=f"otrain-score-{run}-{index}",
            pure=False,
        )

    results = {}
    inflight = {}  # future key -> (future, chunk index, paths as given)
    pending = distributed.as_completed()

    def add(index, given):
        future = submit(index, given)
        inflight[future.key] = (future, index, given)
        pending.add(future)

    n_done = 0
    try:
        for index, given in itertools.islice(chunks, max_in_flight):
            add(index, given)
        if not inflight:
            # No file at all: one empty task gives the empty table with the
            # threshold the model would use.
            add(0, [])
        for future in pending:
            _, index, given = inflight.pop(future.key)
            table, summary = future.result()
            results[index] = _given_paths(table, summary, given)
            n_done += summary["n_files"]
            if progress is not None and summary["n_files"]:
                progress(n_done)
            for index, given in itertools.islice(chunks, 1):
                add(index, given)
    except BaseException:
        client.cancel([future for future, _, _ in inflight.values()])
        raise

    ordered = [results[i] for i in sorted(results)]
    summaries = [summary for _, summary in ordered]
    tables = [table for table, summary in ordered if len(table)]
    table = vstack(tables, metadata_conflicts="silent") if tables else ordered[0][0].copy()
    table.meta["threshold"] = summaries[0]["threshold"]
    # Keys other than the counts (the threshold, and any score_files may add) are
    # the same for every chunk.
    summary = {
        **summaries[0],
        "n_files": sum(s["n_files"] for s in summaries),
        "n_scored": sum(s["n_scored"] for s in summaries),
        "n_edge": sum(s["n_edge"] for s in summaries),
        "skipped": [item for s in summaries for item in s["skipped"]],
        "not_scored": [item for s in summaries for item in s.get("not_scored", [])],
    }
    return table, summary


def _chunks(paths, chunk_size):
    """(index, list of str) chunks of ``paths``, read lazily."""
    iterator = (os.fspath(p) for p in paths)
    for index in itertools.count():
        chunk = list(itertools.islice(iterator, chunk_size))
        if not chunk:
            return
        yield index, chunk


def _given_paths(table, summary, given):
    """Put the paths as the caller gave them back in a chunk's results."""
    to_given = {os.path.abspath(p): p for p in given}
    if to_given and any(a != g for a, g in to_given.items()):
        if len(table):
            table["filename"] = [to_given.get(p, p) for p in table["filename"]]
        summary["skipped"] = [
            (to_given.get(p, p), reason.replace(p, to_given.get(p, p)))
            for p, reason in summary["skipped"]
        ]
        summary["not_scored"] = [
            (
                to_given.get(str(p), str(p)),
                status,
                reason.replace(str(p), to_given.get(str(p), str(p))),
            )
            for p, status, reason in summary.get("not_scored", [])
        ]
    return table, summary


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value
