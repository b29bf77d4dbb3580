"""What the benchmark scripts share: each model measured in a child process of its own.

A child's peak RSS and compiled state are its own, so one model's figures never include
another's.  `main(argv, script, n_models, child, print_table)`:
  script --child I   measures model I (child(I) -> dict) and prints it as one JSON line;
  script [--models=0,2]  runs a child per model and prints the table of their rows (a bad
                         --models is one line and exit 2).
`random_datasets` builds the random training data both scripts measure on; `rate` formats
their steps/s.
"""

from __future__ import annotations

import json
import os
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
    selected = parse_models(argv, script, n_models)
    rows = []
    for index in selected:
        done = subprocess.run(
            [sys.executable, script, "--child", str(index)], capture_output=True, text=True, timeout=1800
        )
        if done.returncode:
            sys.exit(f"model {index} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print_table(rows)


def parse_models(argv: list[str], script: str, n_models: int) -> list[int]:
    """[--models=I,J,...] (default: every model); anything else exits 2 with one line saying
    what was expected, before any model runs."""
    if not argv:
        return list(range(n_models))
    value = argv[0].removeprefix("--models=")
    indices = value.split(",")
    if len(argv) > 1 or value == argv[0] or not all(i.isdigit() and int(i) < n_models for i in indices):
        name = os.path.basename(script)
        sys.stderr.write(
            f"{name}: error: expected --models=I,J,... with each I in 0..{n_models - 1}; "
            f"got {' '.join(argv)!r}\n"
        )
        sys.exit(2)
    return [int(i) for i in indices]


def rate(steps_per_second: float | None) -> str:
    """A rate for a table: '-' if not measured; one decimal below 100 steps/s, where whole
    numbers would hide a difference of several percent (the 1024 net runs ~15-20 steps/s).
    Decided on the rounded rate: 99.96 prints as 100, not 100.0."""
    if steps_per_second is None:
        return "-"
    return f"{steps_per_second:,.1f}" if round(steps_per_second, 1) < 100 else f"{steps_per_second:,.0f}"


def random_datasets(layers, loss: str, rows: int, seed: int = 0):
    """A training split of N(0, 1) features and targets (class ids for a cross-entropy loss).

    Identity standardization, no validation or test split.  Imports TensorFlow (via
    tf_backprop), so call it in the child only.
    """
    import numpy as np

    from tf_backprop import data as data_lib

    rng = np.random.default_rng(seed)
    n_in, n_out = layers[0], layers[-1]
    x = rng.standard_normal((rows, n_in))
    regression = loss == "mse"
    if regression:
        y = rng.standard_normal((rows, n_out))
        target = {"task": "regression", "target_mean": [0.0] * n_out, "target_std": [1.0] * n_out}
    else:
        y = rng.integers(0, n_out, size=rows).astype(np.int32)
        target = {"task": "multiclass", "class_names": [str(i) for i in range(n_out)]}
    prep = data_lib.Preprocessing(
        feature_names=[f"x{i}" for i in range(n_in)],
        feature_mean=[0.0] * n_in,
        feature_std=[1.0] * n_in,
        target_name="y",
        **target,
    )
    return data_lib.Datasets(data_lib.Split(x, y), None, None, prep, "benchmark")
