"""What the benchmark scripts share: each model measured in a child process of its own.

A child's peak RSS and compiled state are its own, so one model's figures never include
another's.  `main(argv, script, n_models, child, print_table)`:
  script --child I   measures model I (child(I) -> dict) and prints it as one JSON line;
  script [--models=0,2]  runs a child per model and prints the table of their rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable


def main(
    argv: list[str],
    script: str,
    n_models: int,
    child: Callable[[int], dict],
    print_table: Callable[[list[dict]], None],
) -> None:
    if argv and argv[0] == "--child":
        print(json.dumps(child(int(argv[1]))))
        return
    selected = range(n_models)
    for arg in argv:
        if arg.startswith("--models="):
            selected = [int(i) for i in arg.split("=", 1)[1].split(",")]
    rows = []
    for index in selected:
        done = subprocess.run(
            [sys.executable, script, "--child", str(index)], capture_output=True, text=True, timeout=1800
        )
        if done.returncode:
            sys.exit(f"model {index} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print_table(rows)
