"""Where the default run's start-up goes: tracing and XLA compilation, per feature.

For the default job (`tf-backprop-train` with its defaults) and variants that switch one feature
off or on, each in a fresh child process, it measures from the data being loaded to the end of
the first step: building the model, optimizer and engine; tracing the training call; and the
first call (XLA compilation of the step loop, the run's first step); and that last span in CPU
time too (all threads: XLA compiles on both cores), which other processes on a shared machine
sway less than the wall time.  Each child sets XLA_FLAGS as the command does
(`xla_flags.prefer_for`: the article's net compiles with XLA's elemental emitters); the row
"default, XLA's fusion emitters" is the default run with XLA's own default, beside it.

To show where the time goes, the rows trace the call first, then make it (compiling its step
loop): one after the other.  The command's first call instead has XLA compile the step loop on a
second thread while the call is traced (`Engine.compiles_step_loop_ahead`); the first row is the
default run so, its tracing inside "compile + first step".

    python benchmarks/compile_bench.py [--turns=3]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The row run as the command runs it: the first call traced while its step loop compiles.
AS_THE_COMMAND = "default, as the command runs it (compiling while tracing)"
VARIANTS = {
    AS_THE_COMMAND: {},
    "default (Adam, monitoring, validation)": {},
    "default, XLA's fusion emitters": {},
    "no monitoring": {"monitor": False},
    "SGD instead of Adam": {"optimizer": "sgd"},
    "no validation split": {"val_split": 0.0},
    "with --verify_every=10": {"verify_every": 10},
    "manual gradients": {"grad_source": "manual"},
}
# XLA_FLAGS of a variant's child: the command's choice for the article's net (the elemental
# emitters, xla_flags.prefer_for) undone, for the side-by-side.
ENVIRON = {"default, XLA's fusion emitters": {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=true"}}


def child(overrides: dict, traces_first: bool) -> dict:
    import tensorflow as tf

    import tf_backprop
    from tf_backprop import training
    from tf_backprop.training import xla_flags

    tf_backprop.command_started()  # as tf-backprop-train's main begins (the garbage collector)
    start = time.perf_counter()
    datasets = training.load_datasets(training.TrainConfig(**overrides))
    loaded, loaded_cpu = time.perf_counter(), time.process_time()
    folder = tempfile.TemporaryDirectory(prefix="compile_bench-")  # removed when collected
    cfg = training.TrainConfig(**overrides, workdir=folder.name)
    trainer = training.build(cfg, datasets)
    loop = trainer.loop()
    xla_flags.prefer_for(
        trainer.plan, [trainer.device]
    )  # as tf-backprop-train does before its first compilation
    built = time.perf_counter()
    validation = loop.validation or (None, None)
    first, stop = tf.constant(0, tf.int64), tf.constant(1, tf.int64)
    total = tf.constant(trainer.plan.total_steps, tf.int64)
    if traces_first:
        trainer.engine._fast_call.get_concrete_function(*loop.train, *validation, first, stop, total)
    traced = time.perf_counter()
    loop.run(total_steps=1)
    first_step = time.perf_counter()
    return {
        "load data": loaded - start,
        "build": built - loaded,
        "trace": traced - built if traces_first else None,
        "compile + first step": first_step - traced,
        "data loaded → first step": first_step - loaded,
        # CPU seconds of all threads: less swayed by other processes than the wall time
        "… in CPU time": time.process_time() - loaded_cpu,
    }


def run_child(name: str) -> dict:
    """One variant's figures, from a fresh process."""
    mode = "-" if name == AS_THE_COMMAND else "traced"
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(VARIANTS[name]), mode],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env={**os.environ, **ENVIRON.get(name, {})},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_row(turns: list[dict]) -> dict:
    """Each column's median over a variant's turns (None where it was not measured)."""
    return {c: None if turns[0][c] is None else statistics.median(t[c] for t in turns) for c in turns[0]}


def parse_turns(argv: list[str]) -> int:
    """--turns=N (default 3); anything else exits 2 with one line saying what was expected."""
    if not argv:
        return 3
    value = argv[0].removeprefix("--turns=")
    if len(argv) > 1 or value == argv[0] or not value.isdigit() or int(value) < 1:
        given = " ".join(argv)
        sys.stderr.write(
            f"compile_bench.py: error: expected --turns=N, N a positive integer; got {given!r}\n"
        )
        sys.exit(2)
    return int(value)


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--child":
        print(json.dumps(child(json.loads(argv[1]), traces_first=argv[2] == "traced")))
        return
    # Fresh processes on a shared machine vary by ±20%: every variant runs `turns` times, the
    # variants interleaved, and each column is the median.
    turns = parse_turns(argv)
    measured: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(turns):
        for name in VARIANTS:
            measured[name].append(run_child(name))
    rows = {name: median_row(results) for name, results in measured.items()}
    columns = list(next(iter(rows.values())))
    print(f"(median of {turns} turns)")
    print("| variant | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in rows.items():
        cells = ("—" if row[c] is None else f"{row[c]:.2f} s" for c in columns)
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
