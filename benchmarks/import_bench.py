"""What every command pays before its main runs: TensorFlow's import, and ml_dtypes' part of it.

For each Python interpreter given (default: this one), in fresh child processes taking turns so
that a slow spell of the shared machine falls on all of them alike, it times

  * `import ml_dtypes` after NumPy (ml_dtypes 0.7.0 spends ~1.1 s here registering its NumPy
    loops, 0.6.0 ~0.01 s: hence setup.cfg's `ml_dtypes<0.7`);
  * `python -c "import tensorflow"`, the whole process (TensorFlow imports ml_dtypes);
  * `python -c "import tf_backprop.cli.train"`, the whole process: TensorFlow, Keras and the
    package, all of which `tf-backprop-train` imports before its main;
  * `tf-backprop-train --epochs=abc` (the interpreter's console script), the whole process: a
    usage error, refused before TensorFlow is imported (the flags are parsed first);

and prints each one's median and its ratio to the first interpreter's.  To compare ml_dtypes
versions, give a second environment with the other one installed, e.g.

    python -m venv /tmp/v7 && /tmp/v7/bin/pip install . && /tmp/v7/bin/pip install --no-deps ml_dtypes==0.7.0
    python benchmarks/import_bench.py --turns=5 .venv/bin/python /tmp/v7/bin/python
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NoReturn

TIMEOUT = 300
ML_DTYPES = (
    "import time, numpy; t = time.perf_counter(); import ml_dtypes; "
    "print(time.perf_counter() - t, ml_dtypes.__version__)"
)
PROCESSES = {
    "python -c 'import tensorflow'": ["-c", "import tensorflow"],
    "python -c 'import tf_backprop.cli.train'": ["-c", "import tf_backprop.cli.train"],
}
USAGE_ERROR = "tf-backprop-train --epochs=abc"  # exits 2 with one line


def fail(message: str) -> NoReturn:
    """One line naming the script and what was expected; exit 2."""
    sys.stderr.write(f"import_bench.py: error: {message}\n")
    sys.exit(2)


def parse(argv: list[str]) -> tuple[int, list[str]]:
    """[--turns=N] [PYTHON ...]: N ≥ 1 (default 5); each PYTHON an executable that runs Python.
    Anything else exits 2 with one line saying what was expected, before anything runs."""
    turns, pythons = 5, []
    for arg in argv:
        if arg.startswith("--turns="):
            value = arg.removeprefix("--turns=")
            if not value.isdigit() or int(value) < 1:
                fail(f"expected --turns=N, N a positive integer; got {arg!r}")
            turns = int(value)
        elif arg.startswith("-"):
            fail(f"expected --turns=N or a Python interpreter's path; got {arg!r}")
        elif (found := shutil.which(arg)) is None or not runs_python(found):
            fail(f"{arg}: not an executable Python interpreter")
        else:
            pythons.append(os.path.abspath(found))  # the children run in another folder
    return turns, pythons or [sys.executable]


def runs_python(executable: str) -> bool:
    """Whether `executable -c CODE` runs CODE as Python (`true` and `echo` exit 0 too)."""
    try:
        done = subprocess.run(
            [executable, "-c", "print(6 * 7)"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return False
    return done.returncode == 0 and done.stdout == "42\n"


def run(python: str, args: list[str], expected_code: int = 0) -> tuple[float, str]:
    """(the child `python ARGS`'s wall time, what it printed), run in the temporary folder: the
    current one may be a checkout, whose tf_backprop/ would shadow the installed package."""
    start = time.perf_counter()
    done = subprocess.run(
        [python, *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=tempfile.gettempdir()
    )
    wall = time.perf_counter() - start
    if done.returncode != expected_code:
        sys.exit(f"{python} {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return wall, done.stdout.strip()


def measure(python: str) -> dict[str, float | str]:
    """One turn of every measurement in `python`'s fresh processes."""
    _, printed = run(python, ["-c", ML_DTYPES])
    seconds, version = printed.split()
    row: dict[str, float | str] = {"ml_dtypes": version, "import ml_dtypes (after numpy)": float(seconds)}
    for name, args in PROCESSES.items():
        row[name] = run(python, args)[0]
    script = os.path.join(os.path.dirname(python), USAGE_ERROR.split()[0])  # beside the interpreter
    row[USAGE_ERROR] = run(python, [script, *USAGE_ERROR.split()[1:]], expected_code=2)[0]
    return row


def main(argv: list[str]) -> None:
    turns, pythons = parse(argv)
    rows: dict[str, list[dict]] = {python: [] for python in pythons}
    for _ in range(turns):
        for python in pythons:  # taking turns: a slow spell falls on every interpreter alike
            rows[python].append(measure(python))
    columns = ["import ml_dtypes (after numpy)", *PROCESSES, USAGE_ERROR]
    first = {c: statistics.median(r[c] for r in rows[pythons[0]]) for c in columns}
    print(f"median of {turns} turns, seconds (ratio to the first interpreter's)")
    for python in pythons:
        print(f"{python} (ml_dtypes {rows[python][0]['ml_dtypes']})")
        for column in columns:
            median = statistics.median(r[column] for r in rows[python])
            print(f"  {column:<42} {median:7.3f}  ({median / first[column]:.2f}×)")


if __name__ == "__main__":
    main(sys.argv[1:])
