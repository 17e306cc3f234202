"""Row 6 of issue 5: ``otrain-convert -h`` and ``otrain-checkinfer -h`` start fast.

Times each installed command with ``-h`` as a whole process (median of 5 runs after a
warm-up; target: under 1 s), next to a bare ``python -c pass`` (the interpreter's own
floor), and checks in a separate interpreter that printing the help imports no
TensorFlow (nor Keras): ``main(["-h"])`` is run and ``sys.modules`` inspected. The
slowest imports of each help (``python -X importtime``, cumulative) show where the
remaining time goes.

Usage::

    python benchmarks/cli_startup.py            # ~15 s
    python benchmarks/cli_startup.py --quick    # 2 runs each, ~5 s
"""

import json
import subprocess
import sys
from argparse import ArgumentParser

from _common import (
    CommandError,
    description,
    formatter,
    machine_text,
    markdown_table,
    median,
    run_command,
    say,
    tool,
    verdict,
)

TARGET_S = 1.0
COMMANDS = {"otrain-convert": "otrain.cli.convert", "otrain-checkinfer": "otrain.cli.checkinfer"}
# Imports worth knowing about in a help: the heavy ones.
HEAVY = ("tensorflow", "keras", "scikeras", "sklearn", "scipy", "matplotlib", "astropy", "numpy")

_PROBE = """
import json, sys
from importlib import import_module
main = import_module(sys.argv[1]).main
try:
    main(["-h"])
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:]))
print("\\n" + json.dumps(heavy))
"""


def imported_packages(module):
    """The packages of :data:`HEAVY` that ``module``'s ``main(["-h"])`` imports."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *HEAVY], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise CommandError(f"{module} -h failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def slowest_imports(module, count=4):
    """The ``count`` slowest top-level imports of ``python -X importtime -m module -h``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, "-h"],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in done.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package"
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3:
            continue
        name = parts[2].rstrip()
        if not parts[1].strip().isdigit() or name.startswith("  "):
            continue  # header line, or a nested import (counted in its parent)
        rows.append((int(parts[1]), name.strip()))
    rows.sort(reverse=True)
    return ", ".join(f"{name} {us / 1e3:.0f} ms" for us, name in rows[:count])


def main(argv=None):
    parser = ArgumentParser(description=description(__doc__), formatter_class=formatter())
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each command")
    parser.add_argument("--quick", action="store_true", help="2 runs of each")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

    def timed(cmd):
        run_command(cmd)  # warm-up: bytecode caches, page cache
        return median([run_command(cmd).wall for _ in range(args.repeats)])

    say("python -c pass")
    floor = timed([sys.executable, "-c", "pass"])
    rows, notes = [], []
    for command, module in COMMANDS.items():
        say(f"{command} -h")
        wall = timed([tool(command), "-h"])
        heavy = imported_packages(module)
        no_tf = not ({"tensorflow", "keras"} & set(heavy))
        rows.append(
            [
                f"`{command} -h`",
                f"{wall:.3f} s",
                f"< {TARGET_S:g} s",
                verdict(wall < TARGET_S),
                "no" if no_tf else "**yes**",
                verdict(no_tf),
                ", ".join(heavy) or "none of them",
            ]
        )
        notes.append(f"- `{command} -h`, slowest imports (cumulative): {slowest_imports(module)}")

    print(f"\nMachine: {machine_text()}\n")
    print(
        markdown_table(
            ["command", "wall (median)", "target", "", "TensorFlow imported", "", "heavy imports"],
            rows,
        )
    )
    print(f"\nMedians of {args.repeats} runs after a warm-up; `python -c pass`: {floor:.3f} s.")
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CommandError as err:
        print(f"cli_startup.py: error: {err}", file=sys.stderr)
        sys.exit(1)
