"""Where the default run's start-up goes: tracing and XLA compilation, per feature.

For the default job (`tf-backprop-train` with its defaults) and variants that switch one feature
off or on, each in a fresh child process, it measures from the data being loaded to the end of
the first step: building the model, optimizer and engine; tracing the training call; and the
first call (XLA compilation of the step loop, the run's first step); and that last span in CPU
time too (all threads: XLA compiles on both cores), which other processes on a shared machine
sway less than the wall time.  Each child sets XLA_FLAGS as the command does
(`xla_flags.prefer_for`: the article's net compiles with XLA's elemental emitters); the row
"default, XLA's fusion emitters" is the default run with XLA's own default, beside it.

    python benchmarks/compile_bench.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = {
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


def child(overrides: dict) -> dict:
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
    trainer.engine._fast_call.get_concrete_function(*loop.train, *validation, first, stop, total)
    traced = time.perf_counter()
    loop.run(total_steps=1)
    first_step = time.perf_counter()
    return {
        "load data": loaded - start,
        "build": built - loaded,
        "trace": traced - built,
        "compile + first step": first_step - traced,
        "data loaded → first step": first_step - loaded,
        # CPU seconds of all threads: less swayed by other processes than the wall time
        "… in CPU time": time.process_time() - loaded_cpu,
    }


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--child":
        print(json.dumps(child(json.loads(argv[1]))))
        return
    rows = {}
    for name, overrides in VARIANTS.items():
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(overrides)],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
            env={**os.environ, **ENVIRON.get(name, {})},
        )
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
    columns = list(next(iter(rows.values())))
    print("| variant | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.2f} s" for c in columns) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
