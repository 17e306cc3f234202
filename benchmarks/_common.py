"""What the speed benchmarks share: generated files, timed child processes, tables.

Every benchmark of issue 5 runs the baseline and otrain on the same generated files in
the same run, alternating (baseline first on even repeats, otrain first on odd ones, so
that a drift of the machine's load hits both alike), and prints the medians, their
ratio and PASS/FAIL against the target as a Markdown table. A missed target is a
result, not an error: the scripts exit 0 then, and non-zero only when something broke.

Whole-process timings are wall-clock (:func:`time.perf_counter`) around a child
process, from its start to its exit; its peak resident memory comes from the kernel
(``os.wait4``: ``ru_maxrss`` is the peak of the child itself, or of its largest
waited-for descendant). :func:`run_command` can also sample the proportional set size
(PSS) of the whole process tree, which counts worker processes once each and shared
pages once in all.
"""

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = [
    "HERE",
    "BASELINES",
    "CommandError",
    "Run",
    "add_common_arguments",
    "workdir",
    "training_files",
    "candidate_files",
    "run_command",
    "tool",
    "alternate",
    "median",
    "paired_ratio",
    "markdown_table",
    "verdict",
    "machine_text",
    "fmt_bytes",
    "say",
    "parse",
    "description",
    "formatter",
]

HERE = Path(__file__).resolve().parent
BASELINES = HERE / "baselines"

# The generated sets carry a record of how they were made, so that a --workdir given
# again reuses them instead of writing thousands of files anew.
_RECORD = "generated.json"


class CommandError(RuntimeError):
    """A benchmarked command failed (non-zero exit)."""


def say(*parts):
    """Progress line on stderr, so that stdout holds only the results."""
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Options and working folder
# --------------------------------------------------------------------------------------


def add_common_arguments(parser, *, repeats=5):
    """Add ``--workdir``, ``--repeats``, ``--quick`` and ``--keep`` to ``parser``."""
    parser.add_argument(
        "--workdir",
        default=None,
        help="folder for the generated files and outputs, reused when given again "
        "(default: a temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--repeats", type=int, default=repeats, help="timed runs of each side (median taken)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, for a smoke test of the script"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (with --workdir unset)"
    )
    return parser


@contextlib.contextmanager
def workdir(args):
    """The working folder of a run: ``--workdir``, or a temporary folder."""
    if args.workdir:
        path = Path(args.workdir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="otrain-bench-"))
    try:
        yield path
    finally:
        if args.keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _reuse(folder, record):
    """True when ``folder`` already holds the set ``record`` describes."""
    try:
        return json.loads((folder / _RECORD).read_text()) == record
    except (OSError, ValueError):
        return False


def training_files(folder, n, *, size=64, triplets=False, seed=0):
    """A labelled set of ``n`` cutout files (half real) in ``folder/true`` and ``/false``.

    Written by :func:`otrain.datasets.make_training_set`: single-HDU files holding the
    difference image and O'TRAIN's keywords, or (``triplets``) a keyword-only primary
    HDU followed by SCI, REF and DIFF image extensions. About 3% of each class is
    flagged ``EDGE='True'``, which both O'TRAIN and otrain leave out.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    folder = Path(folder)
    record = {"kind": "training", "n": n, "size": size, "triplets": triplets, "seed": seed}
    if _reuse(folder, record):
        say(f"reusing the {n} cutouts of {folder}")
        return folder
    from otrain.datasets import make_training_set

    say(f"writing {n} {'SCI/REF/DIFF ' if triplets else ''}{size}x{size} cutouts to {folder} ...")
    start = time.perf_counter()
    make_training_set(
        folder,
        n_real=n // 2,
        n_bogus=n - n // 2,
        size=size,
        triplets=triplets,
        random_state=seed,
        overwrite=True,
    )
    (folder / _RECORD).write_text(json.dumps(record))
    say(f"  written in {time.perf_counter() - start:.1f} s")
    return folder


def candidate_files(folder, n, *, size=64, seed=1):
    """``n`` unlabelled candidate files in ``folder/candidates`` (single-HDU DIFF).

    Written by :func:`otrain.datasets.make_candidates` (injected point sources, bogus
    artefacts and genuine transients, ~3% EDGE stamps).

    Returns
    -------
    pathlib.Path
        ``folder/candidates``.
    """
    folder = Path(folder)
    record = {"kind": "candidates", "n": n, "size": size, "seed": seed}
    if _reuse(folder, record):
        say(f"reusing the {n} candidates of {folder}")
        return folder / "candidates"
    from otrain.datasets import make_candidates

    say(f"writing {n} {size}x{size} candidates to {folder / 'candidates'} ...")
    start = time.perf_counter()
    make_candidates(folder, n=n, size=size, random_state=seed, overwrite=True)
    (folder / _RECORD).write_text(json.dumps(record))
    say(f"  written in {time.perf_counter() - start:.1f} s")
    return folder / "candidates"


# --------------------------------------------------------------------------------------
# Timed child processes
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed child process.

    Attributes
    ----------
    wall : float
        Seconds from start to exit.
    maxrss : int
        Peak resident set size in bytes of the child (or of its largest waited-for
        descendant), from the kernel.
    tree_pss : int or None
        Peak of the summed PSS of the child and all its descendants, sampled
        (None unless asked for).
    stdout, stderr : str
    """

    wall: float
    maxrss: int
    tree_pss: int | None
    stdout: str
    stderr: str


def tool(name):
    """Path of an installed console script (``otrain-convert``...) of this interpreter."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise CommandError(f"{name} is not installed; pip install -e . in the repository")
    return found


def _children_map():
    """ppid -> list of pids, from /proc/*/stat."""
    children = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _tree_pss(pid, *, include_root=True):
    """Summed PSS (bytes) of ``pid`` and its descendants; 0 when they are gone."""
    children = _children_map()
    todo = [pid] if include_root else list(children.get(pid, ()))
    total = 0
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, ()))
        try:
            with open(f"/proc/{current}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


# A tiny launcher between this process and the measured one: a child forked (or
# vforked) from this benchmark would inherit its ~100 MB peak RSS in ru_maxrss, which
# the kernel carries across exec. The launcher is a bare Python (-S -I, a few MB); it
# forks the command, waits for it and writes the command's wall time and rusage.
_LAUNCHER = """
import os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(out, "w") as handle:
    handle.write(f"{wall} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status) & 255)
"""


#: Columns of the tables that time a command against O'TRAIN's way of doing it.
SPEED_COLUMNS = [
    "what",
    "files",
    "O'TRAIN's way",
    "otrain",
    "speed-up",
    "paired",
    "target",
    "",
    "check",
]


def run_command(cmd, *, env=None, cwd=None, sample_memory=False, interval=0.02):
    """Run ``cmd`` (a list) as a child process; time it and measure its memory.

    The command is started by a small launcher process, which times it from fork to
    exit and reads its rusage, so that neither this process's memory nor the
    launcher's start-up enters the figures.

    Parameters
    ----------
    cmd : list of str
    env : dict, optional
        Environment variables added to this process's environment.
    cwd : path-like, optional
    sample_memory : bool, default False
        Also sample the summed PSS of the command's process tree every ``interval``
        seconds (a thread of this process does it; leave it off for timing runs).

    Returns
    -------
    Run

    Raises
    ------
    CommandError
        If the command exits with a non-zero code.
    """
    full_env = {**os.environ, **(env or {})}
    # An installed package has its bytecode compiled at install time; where this
    # variable is set (some containers and CI images set it), an editable checkout
    # would recompile otrain's modules at every start. Both sides run as installed.
    full_env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [str(c) for c in cmd]
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".rusage") as report,
    ):
        launcher = [sys.executable, "-S", "-I", "-c", _LAUNCHER, report.name, *cmd]
        proc = subprocess.Popen(launcher, stdout=out, stderr=err, env=full_env, cwd=cwd)
        peak = [0]
        stop = threading.Event()
        sampler = None
        if sample_memory:

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], _tree_pss(proc.pid, include_root=False))
                    stop.wait(interval)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        proc.wait()
        stop.set()
        if sampler is not None:
            sampler.join()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        measured = report.read().split()
    if proc.returncode != 0 or len(measured) != 2:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise CommandError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    wall, maxrss_kb = float(measured[0]), int(measured[1])
    # ru_maxrss is in kilobytes on Linux.
    return Run(wall, maxrss_kb * 1024, peak[0] if sample_memory else None, stdout, stderr)


def alternate(sides, repeats, *, warmup=1):
    """Run each side ``repeats`` times, alternating which goes first.

    Parameters
    ----------
    sides : dict of str -> callable
        Name -> a function of no argument doing one run and returning its result.
    repeats : int
    warmup : int, default 1
        Untimed runs of each side first (page cache, compiled bytecode).

    Returns
    -------
    dict of str -> list
        The results of the timed runs of each side.
    """
    names = list(sides)
    for i in range(warmup):
        for name in names if i % 2 == 0 else names[::-1]:
            say(f"  warm-up: {name}")
            sides[name]()
    results = {name: [] for name in names}
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            result = sides[name]()
            results[name].append(result)
            wall = getattr(result, "wall", None)
            note = f" {wall:.2f} s" if wall is not None else ""
            say(f"  run {i + 1}/{repeats}: {name}{note}")
    return results


def median(values):
    """Median of a non-empty sequence."""
    return statistics.median(values)


def paired_ratio(numerators, denominators):
    """Median of the ratios of runs made one after the other (i-th with i-th).

    On a shared machine the load changes within minutes; two runs made back to back
    see about the same load, so their ratio is steadier than the ratio of medians.
    """
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def markdown_table(headers, rows):
    """A Markdown table as text."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok):
    """``PASS`` or ``FAIL``."""
    return "PASS" if ok else "FAIL"


def fmt_bytes(n):
    """Bytes as MB (10^6), one decimal."""
    return f"{n / 1e6:.1f} MB"


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def machine_text():
    """One line describing the machine and the software versions."""
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 2**20:.0f} GiB"
    load = ", load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}{load}; Python {platform.python_version()}, "
        f"numpy {_version('numpy')}, astropy {_version('astropy')}, "
        f"TensorFlow {_version('tensorflow')}, Keras {_version('keras')}, "
        f"otrain {_version('otrain')}"
    )


def parse(parser, argv):
    """``parser.parse_args(argv)`` with a check of ``--repeats``."""
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def description(doc):
    """First line of a module docstring, for ``argparse``."""
    return doc.strip().splitlines()[0]


def formatter():
    """Keep the docstring's layout in ``-h``."""
    return argparse.RawDescriptionHelpFormatter
