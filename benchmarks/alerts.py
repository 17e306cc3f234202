"""Alert packets: reading speed, scoring from packets, memory over a long stream.

Three measurements on ZTF's real alert packets (``../shared/data/ztf-alerts``, the 16
whose stamps are FITS), replicated:

1. reading N packets (default 20,000 one-alert Avro files, ZTF's archive layout) into
   SCI/REF/DIFF arrays with their keywords, on one core: otrain (``find_cutouts`` +
   ``load_cutouts``) against the straightforward way (``fastavro.reader``, then
   ``gzip.decompress`` and ``astropy.io.fits.open`` of each stamp). Targets: >= 3x
   and >= 2,000 alerts/s.
2. scoring with braai (``legacy-models/braai_d6_m9.h5``, float32): the same stamps
   from packets (``otrain.inference.score_files``, reading overlapped with scoring)
   and from a datacube (``load_datacube`` + ``predict_proba``). Target: within 10%.
   ``--network-threads 1`` gives the network one core and leaves the others to
   reading.
3. memory of ``otrain.alerts.score_alerts`` over a stream of alert dicts (as a Kafka
   consumer yields them): resident memory sampled along the stream, its growth per
   alert fitted and extrapolated to 1,000,000 alerts. Target: flat (< 50 MB).

The two sides of (1) and (2) alternate, baseline first on even repeats; medians,
their ratio and PASS/FAIL are printed as a Markdown table. A missed target is a
result: the script exits 0 unless something broke.
"""

import argparse
import gc
import gzip
import io
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# Quiet TensorFlow's C++ start-up logging; must be set before TensorFlow loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_common_arguments,
    description,
    formatter,
    machine_text,
    markdown_table,
    median,
    paired_ratio,
    parse,
    say,
    verdict,
    workdir,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PACKETS = DATA / "ztf-alerts"
BRAAI = DATA / "legacy-models" / "braai_d6_m9.h5"
CHANNELS = ("SCI", "REF", "DIFF")
FIELDS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")


def _readable_packets():
    import fastavro

    keep = []
    for path in sorted(PACKETS.glob("*.avro")):
        with open(path, "rb") as handle:
            record = next(fastavro.reader(handle))
        if record["cutoutScience"]["stampData"][:2] == b"\x1f\x8b":
            keep.append((path, record))
    return keep


def _replicate(folder, sources, n):
    """``n`` one-alert files, copies of ``sources`` in turn (reused when present)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.iterdir())) == n:
        return folder
    shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i in range(n):
        shutil.copyfile(sources[i % len(sources)], folder / f"{i:07d}.avro")
    return folder


def _drop_caches_of_otrain():
    from otrain import alerts

    alerts._clear_cache()
    gc.collect()


def straightforward(folder):
    """fastavro, then gzip + astropy.io.fits.open of each stamp: what a user writes."""
    import fastavro
    from astropy.io import fits

    images, keywords = [], []
    for name in sorted(os.listdir(folder)):
        with open(folder / name, "rb") as handle:
            for record in fastavro.reader(handle):
                planes = []
                for field in FIELDS:
                    data = gzip.decompress(record[field]["stampData"])
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
                        with fits.open(io.BytesIO(data)) as hdul:
                            planes.append(np.asarray(hdul[0].data, dtype=np.float32))
                candidate = record["candidate"]
                keywords.append(
                    {
                        "candid": str(record["candid"]),
                        "ra": candidate["ra"],
                        "dec": candidate["dec"],
                        "mag": candidate["magpsf"],
                        "magerr": candidate["sigmapsf"],
                        "rb": candidate.get("rb"),
                    }
                )
                images.append(planes)
    return len(images)


def with_otrain(folder):
    from otrain.cutouts import load_cutouts
    from otrain.datacube import find_cutouts

    cube, keywords, _ = load_cutouts(find_cutouts(folder), channels=CHANNELS, on_error="skip")
    return len(cube)


def _timed(function, *args):
    """(wall seconds, CPU seconds of this process and its children, what ``function``
    returns)."""
    _drop_caches_of_otrain()
    start, children, cpu = time.perf_counter(), _children_cpu(), time.process_time()
    count = function(*args)
    used = time.process_time() - cpu
    # Children (otrain's reader processes) that lived through the call: os.times()
    # counts a child's time only once it has ended.
    after = _children_cpu()
    used += sum(seconds - children.get(pid, 0.0) for pid, seconds in after.items())
    return time.perf_counter() - start, used, count


def _children_cpu():
    """{pid: CPU seconds} of this process's living children."""
    tick = os.sysconf("SC_CLK_TCK")
    me = str(os.getpid())
    seconds = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # the parent's pid; utime and stime follow
            seconds[entry.name] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def reading(args, root, sources):
    say(f"reading: {args.n} one-alert files ...")
    folder = _replicate(root / f"packets_{args.n}", [p for p, _ in sources], args.n)
    for name in os.listdir(folder):  # warm the page cache: both sides read from memory
        (folder / name).read_bytes()
    times = {"baseline": [], "otrain": []}
    cpu = {"baseline": [], "otrain": []}
    for repeat in range(args.repeats):
        order = ("baseline", "otrain") if repeat % 2 == 0 else ("otrain", "baseline")
        for side in order:
            function = straightforward if side == "baseline" else with_otrain
            elapsed, used, count = _timed(function, folder)
            times[side].append(elapsed)
            cpu[side].append(used)
            say(
                f"  {side}: {elapsed:.2f} s ({used:.2f} s of CPU), {count} alerts, "
                f"{count / elapsed:.0f} alerts/s"
            )
    base, ours = median(times["baseline"]), median(times["otrain"])
    base_cpu, ours_cpu = median(cpu["baseline"]), median(cpu["otrain"])
    speedup = base / ours
    # Both sides run on one thread: CPU seconds are the time on a core of their own,
    # whatever else the machine runs; wall seconds include waiting for a core.
    rate = args.n / ours_cpu
    return [
        [
            f"read {args.n:,} ZTF packets (SCI/REF/DIFF + keywords), one core",
            "fastavro + gzip + fits.open per stamp",
            ">= 3x",
            f"**{speedup:.2f}x** ({ours:.2f} s vs {base:.2f} s; paired "
            f"{paired_ratio(times['baseline'], times['otrain']):.2f}x; CPU time "
            f"{base_cpu / ours_cpu:.2f}x)",
            verdict(speedup >= 3),
        ],
        [
            "the same, alerts per second of one core",
            "-",
            ">= 2,000/s",
            f"**{rate:,.0f}/s** per CPU second ({args.n / ours:,.0f}/s of wall time; "
            f"baseline {args.n / base_cpu:,.0f}/s per CPU second)",
            verdict(rate >= 2000),
        ],
    ]


def scoring(args, root, sources):
    if not BRAAI.is_file():
        say(f"scoring: skipped, {BRAAI} not found")
        return []
    from otrain import inference
    from otrain.cutouts import load_cutouts
    from otrain.datacube import Datacube, find_cutouts, load_datacube
    from otrain.inference import score_files
    from otrain.model_files import load_model

    say(f"scoring: {args.n_score} alerts with braai (float32) ...")
    # Edge packets are skipped when scoring: the comparison uses full stamps only.
    full = [p for p, record in sources if _full(record)]
    folder = _replicate(root / f"score_{args.n_score}", full, args.n_score)
    references = find_cutouts(folder)
    cube, keywords, _ = load_cutouts(references, channels=CHANNELS)
    cube_path = Datacube(cube, np.ones(len(cube), np.int64), keywords, CHANNELS).save(
        root / "score_cube.npz"
    )
    del cube
    classifier = load_model(BRAAI, channels=CHANNELS, normalisation="l2")
    classifier.predict_proba(np.zeros((8, 63, 63, 3), np.float32))  # trace once

    def from_packets(scorer, n_jobs):
        table, _ = score_files(scorer, references, n_jobs=n_jobs, precision="float32")
        return len(table)

    def from_cube():
        stamps = load_datacube(cube_path).cube
        classifier.predict_proba(stamps)
        return len(stamps)

    def as_if_cores_were_free(function):
        # What score_files does where the network leaves the cores free (on a GPU).
        def run():
            kept = inference._cores_for_reading
            inference._cores_for_reading = os.cpu_count
            try:
                return function()
            finally:
                inference._cores_for_reading = kept

        return run

    # Packets as otrain-infer reads them (n_jobs=-1: reader processes only where the
    # network leaves cores free) and with reader processes on every core regardless.
    readers = "reader processes" if inference._cores_for_reading() > 1 else "one reader thread"
    sides = {
        "cube": from_cube,
        f"packets, n_jobs=-1 ({readers})": lambda: from_packets(classifier, -1),
        "packets, reader processes forced": as_if_cores_were_free(
            lambda: from_packets(classifier, -1)
        ),
    }
    # The readers start once a process (a second or so, hidden by the first chunks
    # read in the thread): the first run, timed apart, starts them.
    elapsed, _, count = _timed(sides["packets, reader processes forced"])
    say(f"  first run, reader processes starting: {elapsed:.2f} s, {count / elapsed:.0f} alerts/s")
    times, cpu = _alternate(args.repeats, sides)
    network = f"{args.network_threads} thread(s)" if args.network_threads else "every core"
    rows = []
    for side in list(sides)[1:]:
        ratio = median(times["cube"]) / median(times[side])
        cube_cpu, packet_cpu = median(cpu["cube"]), median(cpu[side])
        # Reading overlaps the network only where a core is free for it: with every
        # core busy (the network's threads, other work on the machine), the reading's
        # CPU time adds to the network's and the ratio of CPU times is what can be
        # reached.
        rows.append(
            [
                f"score {args.n_score:,} ZTF packets with braai (float32), network on "
                f"{network}, {side.split(', ', 1)[1]}",
                "the same stamps from a datacube",
                "within 10%",
                f"**{ratio:.2f}** of the datacube's rate "
                f"({args.n_score / median(times[side]):,.0f} vs "
                f"{args.n_score / median(times['cube']):,.0f}/s); CPU "
                f"{1e3 * packet_cpu / args.n_score:.2f} vs {1e3 * cube_cpu / args.n_score:.2f} "
                f"ms/alert; CPU-time ratio {cube_cpu / packet_cpu:.2f} (the most reachable "
                "where no core is idle)",
                verdict(ratio >= 0.9),
            ]
        )
    # A network that costs nothing (a GPU's, seen from the CPU): the rate is the
    # reading's, one thread against reader processes on every core.
    null = _NullScorer()
    free = {
        "one reader thread": lambda: from_packets(null, 1),
        "reader processes": as_if_cores_were_free(lambda: from_packets(null, -1)),
    }
    say("  the same with a network that costs nothing (a stand-in for a GPU's):")
    times, cpu = _alternate(args.repeats, free)
    thread, processes = median(times["one reader thread"]), median(times["reader processes"])
    rows.append(
        [
            f"score {args.n_score:,} ZTF packets, a network that costs nothing (a GPU's "
            f"stand-in), reader processes on {os.cpu_count()} cores",
            "one reader thread",
            "-",
            f"**{thread / processes:.2f}x** ({args.n_score / processes:,.0f} vs "
            f"{args.n_score / thread:,.0f} alerts/s)",
            "",
        ]
    )
    return rows


def _alternate(repeats, sides):
    """Run each of ``sides`` (name -> function) ``repeats`` times, in turn, the order
    rotated each repeat; (wall times, CPU times), lists by name."""
    times = {name: [] for name in sides}
    cpu = {name: [] for name in sides}
    names = list(sides)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed, used, count = _timed(sides[name])
            times[name].append(elapsed)
            cpu[name].append(used)
            say(
                f"  {name}: {elapsed:.2f} s ({used:.2f} s of CPU, {used / elapsed:.2f} cores), "
                f"{count} alerts, {count / elapsed:.0f} alerts/s"
            )
    return times, cpu


def _full(record):
    data = gzip.decompress(record["cutoutScience"]["stampData"])
    return b"NAXIS1  =                   63" in data[:2880] and (
        b"NAXIS2  =                   63" in data[:2880]
    )


def _rss():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _NullScorer:
    """A stand-in for the network: P(real) = 0 for every stamp, no TensorFlow."""

    channels_ = CHANNELS

    class model_:  # noqa: N801 - the attribute score_alerts reads
        input_shape = (None, 63, 63, 3)

    n_networks_ = 1

    def predict_proba(self, X):
        return np.zeros((len(X), 2))


def _stream_memory(classifier, records, n):
    """Stream ``n`` alert dicts through score_alerts; (samples, seconds)."""
    from otrain.alerts import score_alerts

    def stream():
        # New dicts each time, as a consumer decodes each message anew.
        for i in range(n):
            record = dict(records[i % len(records)])
            record["candid"] = i
            yield record

    samples = []
    seen = 0
    start = time.perf_counter()
    for batch in score_alerts(classifier, stream(), batch_size=256, precision="float32"):
        seen += len(batch.ids) + len(batch.skipped)
        samples.append((seen, _rss()))
    return samples, time.perf_counter() - start


def _memory_row(what, samples, elapsed, n):
    # Allocators warm up over the first batches: the slope is fitted on the second half.
    steady = [s for s in samples if s[0] >= n // 2]
    counts = np.array([s[0] for s in steady], float)
    rss = np.array([s[1] for s in steady], float)
    slope = np.polyfit(counts, rss, 1)[0] if len(steady) > 2 else float("nan")
    growth = slope * 1_000_000
    marks = [samples[min(len(samples) - 1, round(f * (len(samples) - 1)))] for f in (0.1, 0.5, 1)]
    trace = ", ".join(f"{count:,}: {value / 1e6:.0f} MB" for count, value in marks)
    say(f"  {what}: {n} alerts in {elapsed:.1f} s; RSS {trace}; slope {slope:.1f} B/alert")
    return [
        f"memory of {what} over {n:,} alerts, extrapolated to 1,000,000",
        "-",
        "flat (< 50 MB)",
        f"**{growth / 1e6:+.1f} MB** per 1,000,000 alerts ({slope:.1f} B/alert over the "
        f"second half; RSS {trace}; {n / elapsed:,.0f} alerts/s)",
        verdict(abs(growth) < 50e6),
    ]


def memory(args, sources):
    records = [record for _, record in sources]
    say(f"memory: a stream of {args.n_stream} alert dicts through score_alerts ...")
    rows = [
        _memory_row(
            "score_alerts with a stand-in network (otrain's own part)",
            *_stream_memory(_NullScorer(), records, args.n_stream),
            args.n_stream,
        )
    ]
    if not BRAAI.is_file():
        say(f"memory: braai skipped, {BRAAI} not found")
        return rows
    from otrain.model_files import load_model

    classifier = load_model(BRAAI, channels=CHANNELS, normalisation="l2")
    samples, elapsed = _stream_memory(classifier, records, args.n_stream)
    rows.append(_memory_row("score_alerts with braai", samples, elapsed, args.n_stream))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=description(__doc__), formatter_class=formatter())
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--n", type=int, default=20000, help="packets read (default 20,000)")
    parser.add_argument("--n-score", type=int, default=4000, help="packets scored")
    parser.add_argument("--n-stream", type=int, default=20000, help="alerts streamed")
    parser.add_argument(
        "--only", choices=("reading", "scoring", "memory"), default=None, help="one part only"
    )
    parser.add_argument(
        "--network-threads",
        type=int,
        default=None,
        help="TensorFlow threads of the network when scoring (default: every core); 1 "
        "leaves the other cores free for reading",
    )
    args = parse(parser, argv)
    if args.network_threads:
        # Read by TensorFlow when it starts, which is after this (scoring loads it).
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.network_threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    if args.quick:
        args.n, args.n_score, args.n_stream = 1000, 500, 2000
    if not PACKETS.is_dir():
        say(f"{PACKETS} not found: the benchmark needs ../shared/data")
        return 1
    sources = _readable_packets()
    rows = []
    with workdir(args) as root:
        root = Path(root)
        if args.only in (None, "reading"):
            rows += reading(args, root, sources)
        if args.only in (None, "scoring"):
            rows += scoring(args, root, sources)
        if args.only in (None, "memory"):
            rows += memory(args, sources)
    print(machine_text())
    print()
    print(markdown_table(["what", "baseline in the same run", "target", "measured", ""], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
